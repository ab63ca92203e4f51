"""Fast-dLLM v2's rules (Efficient-Large-Model/Fast_dLLM_v2_7B, its model's `generate`), a
block-diffusion model: causal between blocks, bidirectional inside one.

With prompt length L and block size bs (`block_length`):
- Prefill (only when L >= bs): the prompt's whole blocks, [0, bs * (L // bs)), in one
  block-causal forward whose K/V are kept; when L is a multiple of bs the argmax after the
  prompt opens the first block (as an autoregressive model's next token).
- gen_length // bs blocks follow; the first holds the prompt's tail (or the id carried from
  the prefill), then masks; every later block opens with the id carried from the one before.
- A block is decoded in sub-blocks of `sub_block_length`, left to right: each forward runs the
  whole block over the kept K/V (no mask inside it), position i decided from the logits at
  i - 1 (float32 softmax over the whole vocabulary); it commits every masked position of the
  sub-block whose probability is strictly above `threshold`, and always the most probable one.
  With `block_cache`, the block's own K/V are kept between forwards too: a forward whose
  sub-block starts with a committed token runs the sub-block alone over them.
- A full block gets one more forward over it that keeps its K/V; the argmax at its last
  position is carried into the next block (and is the answer's last id after the last block).
- Stop: after every forward, a block holding an end id (among the ids it generated) with no
  mask before it ends the answer there, with no further forward; so does a carried end id.

Where we differ, on purpose (the README lists them): a prompt exactly one block long is
prefilled like any other (the reference ignores it); the mask id is never predicted (the
reference can commit it and loop); a request is decoded as if alone whatever its batch (the
reference's batched paths are not batch-invariant); gen_length below one block is refused
(the reference returns no answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fastdllm_ray.decoding.policy import Advance, DecodingPolicy, RowPlan, StepColumns, StepOutcome
from fastdllm_ray.decoding.select import RULE_FIXED, RULE_THRESHOLD, StepRules
from fastdllm_ray.params import GenerationParams

DEFAULT_SUB_BLOCK = 8  # the reference generate's small_block_size
DEFAULT_THRESHOLD = 1.0  # the reference generate's threshold: one position a forward
PREFILL, BLOCK, STORE = "prefill", "block", "store"


def strictly_above(threshold: float) -> float:
    """The smallest float32 above `threshold`: `p >= it` is the reference's float32 `p > threshold`."""
    return float(np.nextafter(np.float32(threshold), np.float32(np.inf)))


@dataclass
class V2State:
    block: int = 0  # answer block being decoded (0 .. gen_length // bs - 1)
    step: int = 0  # forwards run for it
    phase: str = BLOCK
    start: int = 0  # its first position in the sequence
    sub: int = 0  # the sub-block being decoded
    first_new: int = 0  # its first position holding a generated (not prompt, not carried) id
    view: list[int] = field(default_factory=list)  # its tokens as the last forward left them


def v2_confidences(logits: torch.Tensor, mask_id: int | None):
    """x0 [B, n], the argmax that is not the mask id, and its float32 softmax probability over
    the whole vocabulary (the mask id included, as the reference computes it)."""
    ranked = logits
    if mask_id is not None:
        vocab = torch.arange(logits.shape[-1], device=logits.device)
        ranked = torch.where(vocab == mask_id, float("-inf"), logits)
    x0 = ranked.argmax(dim=-1)
    confidence = torch.softmax(logits.float(), dim=-1).gather(-1, x0[..., None]).squeeze(-1)
    return x0, confidence


def v2_predict(logits: torch.Tensor, rules: StepRules, generator: torch.Generator | None = None,
               confidence_fn=v2_confidences, mask_id: int | None = None):
    """x0 [B, n] and float32 confidence [B, n] (v2_confidences); rows with a temperature draw
    from their tempered distribution cut to its `top_p` nucleus (the reference's
    sample_with_top_p), the confidence being the drawn id's probability there."""
    x0, confidence = confidence_fn(logits, mask_id)
    if rules.any_sampling:
        temperature = torch.where(rules.temperature > 0, rules.temperature, 1.0).float()[:, None, None]
        tempered = torch.softmax(logits.float() / temperature, dim=-1)
        ordered, order = tempered.sort(dim=-1, descending=True)
        cut = (ordered.cumsum(dim=-1) - ordered) > rules.top_p.float()[:, None, None]
        kept = torch.zeros_like(tempered).scatter_(-1, order, (~cut).float()) * tempered
        if mask_id is not None:
            kept[..., mask_id] = 0.0
        kept = kept / kept.sum(dim=-1, keepdim=True)
        noise = torch.empty_like(kept).exponential_(generator=generator)
        drawn = (kept / noise).argmax(dim=-1)
        sampled = (rules.temperature > 0)[:, None]
        x0 = torch.where(sampled, drawn, x0)
        confidence = torch.where(sampled, kept.gather(-1, drawn[..., None]).squeeze(-1), confidence)
    return x0, confidence


class FastDLLMV2Policy(DecodingPolicy):
    model_types = ("Fast_dLLM_Qwen",)
    family = "Fast-dLLM v2"
    accepts = frozenset({"sub_block_length", "block_cache", "top_p"})
    shares_prefix = True
    algorithms = {
        "basic": ({"block_cache": False}, "each forward runs the whole block over the kept K/V of the blocks before"),
        "block_cache": ({"block_cache": True}, "the block's own K/V kept between forwards too: a sub-block after "
                        "a decided one runs alone (the reference's use_block_cache)"),
    }
    shift = 1
    confidence_fn = staticmethod(v2_confidences)
    predict = staticmethod(v2_predict)

    def validate(self, params: GenerationParams) -> None:
        super().validate(params)
        if params.gen_length < params.block_length:
            raise ValueError(f"gen_length: {params.gen_length} is less than block_length {params.block_length}; "
                             "Fast-dLLM v2 decodes gen_length // block_length whole blocks")

    def effective(self, params: GenerationParams) -> GenerationParams:
        return params.with_defaults(sub_block_length=DEFAULT_SUB_BLOCK if params.block_length % DEFAULT_SUB_BLOCK == 0
                                    else params.block_length, block_cache=False, top_p=1.0)

    def warm_up_rounds(self, block_length: int) -> list[list[GenerationParams]]:
        def request(block_cache: bool, temperature: float = 0.0) -> GenerationParams:
            return GenerationParams(gen_length=2 * block_length, block_length=block_length, block_cache=block_cache,
                                    temperature=temperature, stop_at_eos=False)

        return [[request(False)], [request(False), request(False, 0.5), request(True), request(True, 0.5)]]

    @staticmethod
    def _prefilled(prompt_len: int, bs: int) -> int:
        return prompt_len // bs * bs

    def total_len(self, prompt_len: int, params: GenerationParams) -> int:
        return self._prefilled(prompt_len, params.block_length) + params.gen_length // params.block_length * params.block_length

    def shareable_prefix(self, seq) -> int:
        """The prompt's whole blocks; all but the last when the prefill must also predict the
        first block's opening id (its logits are not cached)."""
        bs = seq.params.block_length
        whole = self._prefilled(seq.prompt_len, bs)
        return whole - bs if whole and whole == seq.prompt_len else whole

    def admitted(self, seq) -> None:
        if seq.state.phase == PREFILL and seq.cached_len >= seq.state.start:  # the cache holds the prefill
            seq.state.phase = BLOCK
            seq.forwards_saved += 1

    def final_prefix(self, seq) -> int:
        state = seq.state
        return seq.cached_len if state.phase == PREFILL else state.start

    def new_state(self, seq) -> V2State:
        bs = seq.params.block_length
        start = self._prefilled(seq.prompt_len, bs)
        state = V2State(phase=PREFILL if start else BLOCK, start=start)
        self._open_block(seq, state, list(seq.prompt_ids[start:]), carried=False)
        return state

    def _open_block(self, seq, state: V2State, opening: list[int], carried: bool) -> None:
        bs, mask = seq.params.block_length, self.mask_id
        state.view = opening + [mask] * (bs - len(opening))
        state.first_new = state.start + len(opening) if carried else max(seq.prompt_len, state.start)
        state.sub, state.step = 0, 0
        self._next_sub_block(seq, state)

    def _next_sub_block(self, seq, state: V2State) -> None:
        sbs, mask = seq.params.sub_block_length, self.mask_id
        while state.sub * sbs < len(state.view) and mask not in state.view[state.sub * sbs:(state.sub + 1) * sbs]:
            state.sub += 1

    # ---- a step ------------------------------------------------------------------------------
    def plan(self, seq) -> RowPlan:
        state, p = seq.state, seq.params
        bs, end = p.block_length, state.start + p.block_length
        if state.phase == PREFILL:  # its last position predicts the first block's opening id
            carries, start = seq.prompt_len == state.start, seq.cached_len
            return RowPlan(start, state.start - start, state.start, bs, state.start, int(carries),
                           self._carry_columns(p), PREFILL)
        if state.phase == STORE:
            return RowPlan(state.start, bs, end, 0, end, 1, self._carry_columns(p), STORE)
        sbs = p.sub_block_length
        sub_start = state.start + state.sub * sbs
        columns = StepColumns(RULE_THRESHOLD, 1, False, strictly_above(p.threshold or DEFAULT_THRESHOLD), 1.0,
                              p.temperature, shift=1, top_p=p.top_p)
        if p.block_cache and state.step > 0 and state.view[state.sub * sbs] != self.mask_id:
            return RowPlan(sub_start, sbs, end, 0, sub_start, sbs, columns, "sub_block")
        return RowPlan(state.start, bs, end, 0, sub_start, sbs, columns, "block")

    @staticmethod
    def _carry_columns(p: GenerationParams) -> StepColumns:
        return StepColumns(RULE_FIXED, 1, False, 1.0, 1.0, p.temperature, shift=1, top_p=p.top_p)

    def advance(self, seq, outcome: StepOutcome, end_ids: frozenset[int]) -> Advance:
        state, p = seq.state, seq.params
        state.step += 1
        stops = end_ids if p.stop_at_eos else frozenset()
        if state.phase == BLOCK:
            offset = state.sub * p.sub_block_length
            state.view[offset:offset + len(outcome.tokens)] = outcome.tokens
            new = state.view[state.first_new - state.start:]
            for i, token in enumerate(new):
                if token == self.mask_id:
                    break
                if token in stops:  # an end id with no mask before it: the answer ends here
                    return Advance(new[: i + 1], "stop", True)
            if self.mask_id in state.view:
                self._next_sub_block(seq, state)
                return Advance([])
            state.phase = STORE
            return Advance(new, None, True)
        carried = outcome.tokens[0] if outcome.tokens else None
        if state.phase == STORE:
            state.block += 1
            state.start += p.block_length
        state.phase, state.step = BLOCK, 0
        if carried is None:  # a prefill that carries nothing: the first block starts with the prompt's tail
            return Advance([])
        if carried in stops:
            return Advance([carried], "stop")
        if state.block == p.gen_length // p.block_length:
            return Advance([carried], "length")
        self._open_block(seq, state, [carried], carried=True)
        return Advance([carried])

    # ---- step events ------------------------------------------------------------------------
    def visible_answer(self, seq) -> int:
        return seq.total_len - seq.prompt_len + 1  # every generated id, the last block's carried one included

    def step_row(self, seq) -> tuple[int, int]:
        """A block's row holds its generated positions: the first block's after the prompt's
        tail, a later block's from the id carried into it. The store forward commits the id
        that opens the next block, so its row is that block's; after the last block, the final
        carried id is a row of its own."""
        state, bs = seq.state, seq.params.block_length
        block = state.block + (state.phase == STORE)
        start = self._prefilled(seq.prompt_len, bs) + block * bs
        if block == seq.params.gen_length // bs:
            return start - seq.prompt_len, 1
        first = max(start, seq.prompt_len) - seq.prompt_len
        return first, start + bs - seq.prompt_len - first

    def block_remaining(self, seq, outcome: StepOutcome) -> int:
        state = seq.state
        if state.phase != BLOCK:
            return 0
        offset = state.sub * seq.params.sub_block_length
        rest = state.view[:offset] + outcome.tokens + state.view[offset + len(outcome.tokens):]
        return rest.count(self.mask_id)
