"""Step events: which answer positions one forward committed, for clients that draw the
answer appearing out of masks. Computed only for sequences that asked (`stream_steps`), by
comparing the block as the previous step left it with the block after this one."""

from __future__ import annotations

from fastdllm_ray.engine.outputs import StepEvent
from fastdllm_ray.engine.sequence import Sequence


def step_event(seq: Sequence, block_tokens: list[int], remaining: int, mask_id: int) -> StepEvent:
    """The commits of the step that just ran on `seq` (call before `seq.step` moves on).

    A block starts fully masked, so its first step compares against masks. Positions past
    the requested answer length (a padded last block) are decoded but never shown, so they
    are left out.
    """
    before = seq.step_block if seq.step > 0 else None
    start = seq.block * seq.block_length
    visible = max(0, seq.params.gen_length - start)
    positions: list[int] = []
    token_ids: list[int] = []
    for i, token in enumerate(block_tokens[:visible]):
        if token != mask_id and (before is None or before[i] == mask_id):
            positions.append(start + i)
            token_ids.append(token)
    seq.step_block = block_tokens
    return StepEvent(seq.block, seq.step + 1, positions, token_ids, remaining)
