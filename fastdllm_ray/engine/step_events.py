"""Step events: which answer positions one forward committed, for clients that draw the
answer appearing out of masks. Computed only for sequences that asked (`stream_steps`), from
the decided span as it was before the step and after it."""

from __future__ import annotations

from fastdllm_ray.decoding.policy import DecodingPolicy, StepOutcome
from fastdllm_ray.engine.outputs import StepEvent
from fastdllm_ray.engine.sequence import Sequence


def step_event(policy: DecodingPolicy, seq: Sequence, outcome: StepOutcome, mask_id: int) -> StepEvent:
    """The commits of the step that just ran on `seq` (call before the policy advances it).
    Positions never returned (the padded end of a last block) are left out."""
    offset, visible = policy.answer_offset(seq, seq.plan), policy.visible_answer(seq)
    positions: list[int] = []
    token_ids: list[int] = []
    for i, (old, new) in enumerate(zip(outcome.before, outcome.tokens)):
        if old == mask_id and new != mask_id and 0 <= offset + i < visible:
            positions.append(offset + i)
            token_ids.append(new)
    row_start, row_cells = policy.step_row(seq)
    return StepEvent(seq.state.block, seq.state.step + 1, positions, token_ids, policy.block_remaining(seq, outcome),
                     row_start, row_cells, visible)
