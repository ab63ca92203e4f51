"""The fixed block schedule: how many masked positions each step of a block commits."""

from __future__ import annotations

import torch


def fixed_commit_counts(block_length: int, steps_per_block: int) -> list[int]:
    """Per-step counts for a block whose `block_length` positions start all masked: an even
    split, the first `block_length % steps_per_block` steps one more (zeros never run:
    the block is complete before them)."""
    base, extra = divmod(block_length, steps_per_block)
    return [base + (1 if i < extra else 0) for i in range(steps_per_block)]


def num_to_commit(step: torch.Tensor, block_length: torch.Tensor, steps_per_block: torch.Tensor) -> torch.Tensor:
    """The same counts for a batch: row i commits this many at step `step[i]` of its block."""
    base = torch.div(block_length, steps_per_block, rounding_mode="floor")
    extra = block_length - base * steps_per_block
    return base + (step < extra).long()
