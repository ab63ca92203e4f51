"""LLaDA2.0's rules (inclusionAI/LLaDA2.0-mini, its model's `generate`), a block-diffusion
model: causal between blocks, bidirectional inside one.

With a prompt of P tokens, gen_length G and block length B (`block_length`):
- The canvas is ceil((P + G) / B) blocks: the prompt, then masks. Blocks are decoded from
  block P // B (the one holding the first answer position, with the prompt's tail if P is not
  a multiple of B) to the last, which is decoded in full even past P + G.
- Each block gets the same quota list: B split over `steps_per_block` steps, the larger shares
  first (decoding/schedule.py). A step predicts every position of the block (candidate: the
  argmax, never the mask id; confidence: its float32 softmax probability) and, among the still
  masked ones, commits those strictly above `threshold` if they are at least the step's quota,
  else the quota's most confident (RULE_QUOTA_THRESHOLD). A block is done when it has no mask.
- The answer is positions P .. P + G - 1, cut after the first end id.

The reference recomputes the whole canvas up to the current block at every step. Here the
prompt-only blocks and finished blocks are computed once and kept in the paged cache (exact:
their K/V depend only on the tokens up to their own block's end):
- The first step of the first block is one block-causal row over [0, end of the block): it
  fills the prompt-only blocks' K/V and decides the block, as the reference's forward does.
- Later steps run the block alone over the kept K/V.
- A finished block's kept K/V were computed while it still held masks, so the first step of
  the next block is one block-causal row over [start of the finished block, end of the new
  one): it recomputes the finished block with its final tokens and decides the new block, in
  one forward (so the forwards are the reference's).

Where we differ, on purpose (the README lists them): at temperature 0 the candidate is the
argmax (the reference samples there; LLaDA2.1 fixed it); the mask id is never predicted; the
answer is final, and no further forward runs, once its first end id has no mask before it or
once every returned position is decided (the reference completes the block, and the last
block past P + G); the answer never includes the prompt (the reference's eos_early_stop path
returns it). Sampling (temperature > 0: top_k, then top_p over the tempered distribution, as
the reference) draws with our seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastdllm_ray.decoding.fast_dllm_v2 import strictly_above, v2_confidences
from fastdllm_ray.decoding.policy import Advance, DecodingPolicy, RowPlan, StepColumns, StepOutcome
from fastdllm_ray.decoding.schedule import num_to_commit
from fastdllm_ray.decoding.select import RULE_QUOTA_THRESHOLD, StepRules
from fastdllm_ray.params import GenerationParams

DEFAULT_STEPS = 32  # the reference generate's steps (per block)
DEFAULT_THRESHOLD = 0.95  # the reference generate's threshold


@dataclass
class LLaDA2State:
    block: int = 0  # the block being decoded, counted from the first decoded one
    step: int = 0  # forwards run for it
    start: int = 0  # its first position in the canvas
    returned: int = 0  # answer positions already handed back
    answer: list[int] = field(default_factory=list)  # the canvas from position P on, as decided so far


def llada2_predict(logits: torch.Tensor, rules: StepRules, generator: torch.Generator | None = None,
                   confidence_fn=v2_confidences, mask_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 [B, n] and float32 confidence [B, n]: the argmax that is not the mask id and its
    softmax probability; rows with a temperature draw from softmax(logits / temperature) cut
    to the row's top_k (0: all), then to its top_p nucleus, the confidence being the drawn
    id's probability in that cut distribution (the reference's _sample_with_temperature_topk_topp)."""
    x0, confidence = confidence_fn(logits, mask_id)
    if not rules.any_sampling:
        return x0, confidence
    # only the sampling rows sort their vocabulary (a sampling step runs outside CUDA graphs, so
    # the host read of which rows they are costs nothing a graph would keep)
    rows = torch.nonzero(rules.temperature > 0).flatten()
    scaled = logits[rows].float() / rules.temperature[rows].float()[:, None, None]
    if mask_id is not None:
        scaled[..., mask_id] = float("-inf")
    ordered, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(scaled.shape[-1], device=scaled.device)
    top_k = (rules.top_k if rules.top_k is not None else torch.zeros_like(rules.rule))[rows][:, None, None]
    top_p = (rules.top_p if rules.top_p is not None else torch.ones_like(rules.temperature))[rows]
    ordered = ordered.masked_fill((top_k > 0) & (rank >= top_k), float("-inf"))
    probs = torch.softmax(ordered, dim=-1)
    outside_nucleus = (probs.cumsum(dim=-1) - probs) > top_p.float()[:, None, None]
    probs = torch.softmax(ordered.masked_fill(outside_nucleus, float("-inf")), dim=-1)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    drawn = (probs / noise).argmax(dim=-1, keepdim=True)
    x0, confidence = x0.clone(), confidence.clone()
    x0[rows] = order.gather(-1, drawn).squeeze(-1)
    confidence[rows] = probs.gather(-1, drawn).squeeze(-1)
    return x0, confidence


class LLaDA2Policy(DecodingPolicy):
    model_types = ("llada2_moe",)
    family = "LLaDA2.0"
    accepts = frozenset({"steps_per_block", "top_p", "top_k"})
    confidence_fn = staticmethod(v2_confidences)
    predict = staticmethod(llada2_predict)
    shares_prefix = True

    def effective(self, params: GenerationParams) -> GenerationParams:
        # the reference's steps=32 after its cap min(steps, gen_length // minimal_topk), minimal_topk 1;
        # no threshold next to a factor, which validate() refuses by name
        return params.with_defaults(steps_per_block=min(DEFAULT_STEPS, params.gen_length), top_p=1.0,
                                    threshold=DEFAULT_THRESHOLD if params.factor is None else None)

    def total_len(self, prompt_len: int, params: GenerationParams) -> int:
        return -(-(prompt_len + params.gen_length) // params.block_length) * params.block_length

    def warm_up_rounds(self, block_length: int) -> list[list[GenerationParams]]:
        def request(temperature: float = 0.0, threshold: float | None = None) -> GenerationParams:
            return GenerationParams(gen_length=2 * block_length, block_length=block_length, steps_per_block=4,
                                    threshold=threshold, temperature=temperature, stop_at_eos=False)

        return [[request()], [request(), request(0.5), request(threshold=1.0)]]

    def new_state(self, seq) -> LLaDA2State:
        prompt_len, bs = seq.prompt_len, seq.params.block_length
        return LLaDA2State(start=prompt_len // bs * bs, answer=[self.mask_id] * (seq.total_len - prompt_len))

    # ---- a step ------------------------------------------------------------------------------
    def plan(self, seq) -> RowPlan:
        state, p = seq.state, seq.params
        bs, end = p.block_length, seq.state.start + p.block_length
        decide_start = max(seq.prompt_len, state.start)
        columns = StepColumns(RULE_QUOTA_THRESHOLD, num_to_commit(state.step, bs, p.steps_per_block), False,
                              strictly_above(p.threshold), 1.0, p.temperature, top_p=p.top_p, top_k=p.top_k or 0)
        if state.step > 0:  # the block alone over the kept K/V
            return RowPlan(state.start, bs, end, 0, decide_start, end - decide_start, columns, "block")
        # a block's first step: block-causal from the first position whose K/V are not final yet
        first = seq.cached_len if state.block == 0 else state.start - bs
        kind = "prefill" if state.block == 0 else "block_start"
        return RowPlan(first, end - first, end, bs, decide_start, end - decide_start, columns, kind)

    def advance(self, seq, outcome: StepOutcome, end_ids: frozenset[int]) -> Advance:
        state, p, mask = seq.state, seq.params, self.mask_id
        state.step += 1
        offset = max(seq.prompt_len, state.start) - seq.prompt_len
        state.answer[offset:offset + len(outcome.tokens)] = outcome.tokens
        stops = end_ids if p.stop_at_eos else frozenset()
        visible = p.gen_length
        final = state.returned
        while final < visible and state.answer[final] != mask:
            if state.answer[final] in stops:  # an end id with no mask before it: nothing can change the answer
                return self._hand_back(state, final + 1, "stop")
            final += 1
        if final == visible:  # every returned position is decided
            return self._hand_back(state, visible, "length")
        if outcome.remaining:
            return Advance([])
        block_end = state.start + p.block_length - seq.prompt_len
        state.block, state.step, state.start = state.block + 1, 0, state.start + p.block_length
        return self._hand_back(state, block_end, None)

    def step_row(self, seq) -> tuple[int, int]:
        """The block's answer positions: the first block's after the prompt's tail, the last
        one's up to gen_length."""
        start, end = seq.state.start - seq.prompt_len, seq.state.start + seq.params.block_length - seq.prompt_len
        first = max(start, 0)
        return first, min(end, seq.params.gen_length) - first

    # ---- prefix sharing --------------------------------------------------------------------
    def shareable_prefix(self, seq) -> int:
        """The prompt-only blocks (the first decoded block holds the prompt's tail)."""
        return seq.prompt_len // seq.params.block_length * seq.params.block_length

    def final_prefix(self, seq) -> int:
        state = seq.state
        if state.step > 0:  # everything before the current block was computed with its final tokens
            return state.start
        return state.start - seq.params.block_length if state.block > 0 else seq.cached_len

    @staticmethod
    def _hand_back(state: LLaDA2State, upto: int, finish: str | None) -> Advance:
        tokens = state.answer[state.returned:upto]
        state.returned = upto
        return Advance(tokens, finish, True)
