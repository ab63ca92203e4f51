"""Decoding layer: the block schedule and per-step token selection (pure tensor functions)."""

from fastdllm_ray.decoding.schedule import fixed_commit_counts, num_to_commit
from fastdllm_ray.decoding.select import (
    RULE_CAPPED_THRESHOLD,
    RULE_FACTOR,
    RULE_FIXED,
    RULE_THRESHOLD,
    StepRules,
    predict,
    select_transfer,
)

__all__ = ["RULE_CAPPED_THRESHOLD", "RULE_FACTOR", "RULE_FIXED", "RULE_THRESHOLD", "StepRules", "fixed_commit_counts",
           "num_to_commit", "predict", "select_transfer"]
