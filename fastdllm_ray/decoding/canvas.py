"""What LLaDA and Dream decode alike: a fixed canvas of the prompt followed by the answer
rounded up to whole blocks, attended bidirectionally as a whole; blocks decoded left to right,
each step one forward (the whole sequence without a cache or at a block's start, the block and
everything after it with the prefix cache, the block alone with the dual cache) and a decision
over the block. A block is final once it holds no mask; the answer is cut back to gen_length
and, with stop_at_eos, at the first end token of a final block (no later block is computed).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastdllm_ray.decoding.policy import Advance, DecodingPolicy, RowPlan, StepColumns, StepOutcome
from fastdllm_ray.params import GenerationParams

DEFAULT_STEPS = 128
DEFAULT_CACHE = "dual"


@dataclass
class CanvasState:
    block: int = 0  # the block being decoded
    step: int = 0  # forwards already run inside it
    masked: int = 0  # its masked positions left
    carried: int = 0  # positions a step chose not to commit, owed by the next (Dream)


class CanvasPolicy(DecodingPolicy):
    algorithms = {
        "basic": ({"cache": "none"}, "no K/V cache: every step runs the whole sequence"),
        "prefix_cache": ({"cache": "prefix"}, "prefix cache: each step runs the block and everything after it"),
        "dual_cache": ({"cache": "dual"}, "dual cache: each step runs the block alone over the cached prefix and "
                       "suffix"),
    }

    def effective(self, params: GenerationParams) -> GenerationParams:
        return params.with_defaults(steps=DEFAULT_STEPS, cache=DEFAULT_CACHE)

    def total_len(self, prompt_len: int, params: GenerationParams) -> int:
        return prompt_len + params.padded_gen_length

    def warm_up_rounds(self, block_length: int) -> list[list[GenerationParams]]:
        def request(cache: str, temperature: float = 0.0) -> GenerationParams:
            return GenerationParams(gen_length=2 * block_length, block_length=block_length, steps=4, cache=cache,
                                    temperature=temperature, stop_at_eos=False)

        return [[request("dual")], [request("dual"), request("dual", 0.5), request("prefix"), request("none")]]

    def new_state(self, seq) -> CanvasState:
        return CanvasState(masked=seq.params.block_length)

    def columns(self, seq) -> StepColumns:
        raise NotImplementedError

    def after_step(self, seq, committed: int) -> None:
        """Host-side bookkeeping once a step's outcome is known (before the step count moves)."""

    def plan(self, seq) -> RowPlan:
        state, p = seq.state, seq.params
        block_start = seq.prompt_len + state.block * p.block_length
        if p.cache == "none" or state.step == 0:
            start, end, kind = 0, seq.total_len, "full"
        elif p.cache == "prefix":
            start, end, kind = block_start, seq.total_len, "prefix"
        else:
            start, end, kind = block_start, block_start + p.block_length, "dual"
        return RowPlan(start, end - start, seq.total_len, 0, block_start, p.block_length, self.columns(seq), kind)

    def step_row(self, seq) -> tuple[int, int]:
        """The block, cut back to gen_length: answer position p is in row p // block_length."""
        p = seq.params
        start = seq.state.block * p.block_length
        return start, min(p.block_length, p.gen_length - start)

    def advance(self, seq, outcome: StepOutcome, end_ids: frozenset[int]) -> Advance:
        state, p = seq.state, seq.params
        self.after_step(seq, outcome.committed)
        state.step += 1
        state.masked = outcome.remaining
        if outcome.remaining:
            return Advance([])
        tokens = outcome.tokens[: max(0, p.gen_length - state.block * p.block_length)]
        if p.stop_at_eos:
            for i, token in enumerate(tokens):
                if token in end_ids:
                    return Advance(tokens[: i + 1], "stop", True)
        if state.block == p.num_blocks - 1:
            return Advance(tokens, "length", True)
        state.block, state.step, state.masked, state.carried = state.block + 1, 0, p.block_length, 0
        return Advance(tokens, None, True)
