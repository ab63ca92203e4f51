"""Decoding layer: each model family's decoding rules (a DecodingPolicy), the block schedule and
per-step token selection (pure tensor functions).

Every module of this package is imported here, so each family's policy registers itself
(policy.py never imports a family): a new family is a new module, nothing else changes.
"""

import importlib
import pkgutil

from fastdllm_ray.decoding.policy import Advance, DecodingPolicy, RowPlan, StepColumns, StepOutcome, policy_for
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

__all__ = ["Advance", "DecodingPolicy", "RULE_CAPPED_THRESHOLD", "RULE_FACTOR", "RULE_FIXED", "RULE_THRESHOLD",
           "RowPlan", "StepColumns", "StepOutcome", "StepRules", "fixed_commit_counts", "num_to_commit", "policy_for",
           "predict", "select_transfer"]

for _module in pkgutil.iter_modules(__path__):  # the families register as they are imported
    importlib.import_module(f"{__name__}.{_module.name}")
