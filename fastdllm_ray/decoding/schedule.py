"""The fixed block schedule: how many masked positions each step of a block commits."""

from __future__ import annotations


def num_to_commit(step: int, block_length: int, steps_per_block: int) -> int:
    """Positions committed at `step` of a block whose `block_length` positions start all
    masked: an even split, the first `block_length % steps_per_block` steps one more
    (a zero never runs: the block is complete before it)."""
    base, extra = divmod(block_length, steps_per_block)
    return base + (1 if step < extra else 0)


def fixed_commit_counts(block_length: int, steps_per_block: int) -> list[int]:
    """The whole block's schedule, step by step."""
    return [num_to_commit(step, block_length, steps_per_block) for step in range(steps_per_block)]
