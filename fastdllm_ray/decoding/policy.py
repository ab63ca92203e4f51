"""A model family's decoding rules behind one interface, so the engine never asks which
family it runs: what a request may set (`validate`), how its canvas is laid out
(`effective`), the numbers each step of a block decides with (`columns`, packed into the
step's per-row input), how a step's outcome moves the block on (`after_step`), and how
tokens and confidences come out of the logits (`predict`, `confidence_fn`, `shift`).

`policy_for(model_type)` picks one by the checkpoint's config.json model_type.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from fastdllm_ray.decoding.schedule import num_to_commit
from fastdllm_ray.decoding.select import (RULE_FACTOR, RULE_FIXED, RULE_THRESHOLD, confidence_of, predict)
from fastdllm_ray.params import GenerationParams


class BlockProgress(Protocol):
    """What a policy reads of a sequence (engine/sequence.py's Sequence)."""

    params: GenerationParams
    step: int  # forwards already run inside the current block
    masked: int  # masked positions left in the current block
    carried: int  # positions a previous step chose not to commit, owed by the next one

    @property
    def block_length(self) -> int: ...


class StepColumns(NamedTuple):
    """One row's decoding numbers for one step (see engine/step_inputs.py)."""

    rule: int
    count: int  # positions to commit (RULE_FIXED), or the most to commit (capped threshold)
    random: bool  # remasking="random"
    threshold: float
    factor: float
    temperature: float
    alg: int = 0  # the family's confidence kind
    shift: int = 0  # position i is decided from the hidden state at i - shift
    first_only: bool = False  # only the block's first position may be committed
    top_p: float = 1.0  # nucleus over the candidates' distribution (1.0: none)
    top_k: int = 0  # candidates kept per position (the family's default_top_k: the usual step)


class DecodingPolicy:
    """LLaDA's rules (Fast-dLLM's LLaDA generate): the fixed even schedule, threshold or
    factor, low-confidence or random remasking, the softmax probability as confidence."""

    model_type = "llada"
    shift = 0
    default_top_k = 0  # LLaDA's confidence is over the whole vocabulary
    confidence_fn = staticmethod(confidence_of)
    predict = staticmethod(predict)

    def validate(self, params: GenerationParams) -> None:
        """Raises ValueError naming a field that does not apply to this family."""
        if params.alg is not None:
            raise ValueError(f"alg: {params.alg!r} applies to Dream models; LLaDA chooses positions by "
                             "`remasking` and commits by `threshold` / `factor`")
        if params.top_p is not None and params.top_p != 1.0:
            raise ValueError(f"top_p: {params.top_p} applies to Dream models; LLaDA (as Fast-dLLM's LLaDA "
                             "code) samples from the whole distribution")
        if params.top_k is not None:
            raise ValueError(f"top_k: {params.top_k} applies to Dream models; LLaDA (as Fast-dLLM's LLaDA "
                             "code) samples from the whole distribution")

    def effective(self, params: GenerationParams) -> GenerationParams:
        return params

    def columns(self, seq: BlockProgress) -> StepColumns:
        p = seq.params
        rule = RULE_THRESHOLD if p.threshold is not None else RULE_FACTOR if p.factor is not None else RULE_FIXED
        return StepColumns(rule, num_to_commit(seq.step, seq.block_length, p.steps_per_block),
                           p.remasking == "random", p.threshold or 1.0, p.factor or 1.0, p.temperature)

    def after_step(self, seq: BlockProgress, committed: int) -> None:
        """Host-side bookkeeping once a step's outcome is known (before seq.step advances)."""


def policy_for(model_type: str) -> DecodingPolicy:
    from fastdllm_ray.decoding.dream import DreamPolicy

    policies = {DecodingPolicy.model_type: DecodingPolicy, DreamPolicy.model_type: DreamPolicy}
    if model_type not in policies:
        raise ValueError(f"model_type: no decoding rules for {model_type!r} (known: {sorted(policies)})")
    return policies[model_type]()
