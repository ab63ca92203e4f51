"""A model family's decoding rules behind one interface, so the engine never asks which
family it runs.

A policy says what a request may set (`validate`) and what its unset fields mean
(`effective`), how many positions its sequence takes (`total_len`), and then, step by step,
what the sequence's next forward is (`plan`: which positions it computes, which keys they
see, which positions it decides and by which numbers) and what the outcome means (`advance`:
the tokens that became final, whether the request is done). Tokens and confidences come out
of the logits through `predict` / `confidence_fn`.

Families register themselves by subclassing (`model_types` names the config.json model_type
they decode); this module never imports one. `policy_for(model_type)` looks them up, so a
new family is a new module that subclasses DecodingPolicy (imported by the package).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from fastdllm_ray.decoding.select import confidence_of, predict
from fastdllm_ray.params import GenerationParams


class StepColumns(NamedTuple):
    """One row's decoding numbers for one step (see engine/step_inputs.py)."""

    rule: int
    count: int  # positions to commit (RULE_FIXED), the most (capped threshold) or the least (quota)
    random: bool  # remasking="random"
    threshold: float
    factor: float
    temperature: float
    alg: int = 0  # the family's confidence kind
    shift: int = 0  # position i is decided from the hidden state at i - shift
    first_only: bool = False  # only the decided span's first position may be committed
    top_p: float = 1.0  # nucleus over the candidates' distribution (1.0: none)
    top_k: int = 0  # candidates kept per position (the family's default_top_k: the usual step)


class RowPlan(NamedTuple):
    """One sequence's part of an engine step: it computes the tokens at positions
    [q_start, q_start + q_len), whose queries see the keys [0, kv_len) (with `causal_block`
    > 0, a query at p sees only keys before the end of p's block of that size), and it
    decides the positions [decide_start, decide_start + decide_len) of its canvas."""

    q_start: int
    q_len: int
    kv_len: int
    causal_block: int
    decide_start: int
    decide_len: int
    columns: StepColumns
    kind: str  # what the forward is, for the engine's counters (full, dual, prefill, ...)


class StepOutcome(NamedTuple):
    """What a step did to a row's decided span."""

    tokens: list[int]  # the span after the step
    before: list[int]  # the span before it
    remaining: int  # masked positions left in the span
    committed: int  # positions this step committed


class Advance(NamedTuple):
    tokens: list[int]  # answer tokens that became final with this step, in order
    finish: str | None = None  # "stop" | "length" once the request is done
    block_done: bool = False  # an answer block was completed (its time is recorded)


class DecodingPolicy:
    """The interface, and what every family shares: the field check."""

    model_types: ClassVar[tuple[str, ...]] = ()  # config.json model_type values this family decodes
    # a finished block's K/V depend only on the tokens up to its end (block-causal attention), so
    # identical prefixes may share their pages; never for a family attending to the whole canvas
    shares_prefix: ClassVar[bool] = False
    family: ClassVar[str] = ""  # its name in messages
    accepts: ClassVar[frozenset[str]] = frozenset()  # the FAMILY_FIELDS it uses
    # its generation_algorithm names (serve/algorithms.py): name -> (the GenerationParams fields
    # the name sets, what it is); a family with no choice lists one that sets nothing
    algorithms: ClassVar[dict[str, tuple[dict[str, Any], str]]] = {"default": ({}, "the family's one decoding")}
    shift = 0
    default_top_k = 0  # 0: confidences over the whole vocabulary
    confidence_fn = staticmethod(confidence_of)
    predict = staticmethod(predict)
    _registry: ClassVar[dict[str, type["DecodingPolicy"]]] = {}

    def __init__(self, mask_id: int | None = None) -> None:
        self.mask_id = mask_id  # the model's mask token: what a position not yet decided holds

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for model_type in cls.__dict__.get("model_types", ()):
            DecodingPolicy._registry[model_type] = cls

    # ---- a request --------------------------------------------------------------------------
    def validate(self, params: GenerationParams) -> None:
        """Raises ValueError naming a field this family does not use."""
        for name in params.set_fields():
            if name not in self.accepts:
                users = sorted({p.family for p in self._registry.values() if name in p.accepts})
                raise ValueError(f"{name}: applies to {' and '.join(users)} models, not to {self.family} "
                                 f"({self.family} settings: {', '.join(sorted(self.accepts)) or 'none'})")

    def effective(self, params: GenerationParams) -> GenerationParams:
        """The request with this family's defaults in its unset fields."""
        return params

    def total_len(self, prompt_len: int, params: GenerationParams) -> int:
        """Positions (prompt included) whose K/V the sequence may hold."""
        raise NotImplementedError

    def warm_up_rounds(self, block_length: int) -> list[list[GenerationParams]]:
        """Requests the engine decodes before traffic, round after round (engine.warm_up): at
        batch 1 and above, every kind of step this family runs, one sampling."""
        raise NotImplementedError

    def new_state(self, seq) -> Any:
        """The family's per-sequence decoding state (kept on the engine's Sequence)."""
        raise NotImplementedError

    # ---- a step ------------------------------------------------------------------------------
    def plan(self, seq) -> RowPlan:
        raise NotImplementedError

    def advance(self, seq, outcome: StepOutcome, end_ids: frozenset[int]) -> Advance:
        """Moves the sequence on after a step (its state's `block` and `step` included)."""
        raise NotImplementedError

    # ---- prefix sharing (families with shares_prefix) --------------------------------------
    def shareable_prefix(self, seq) -> int:
        """Leading positions whose K/V the sequence may take from the cache at admission."""
        return 0

    def prefix_block(self, seq) -> int:
        """Block size of the sequence's block-causal attention (what its K/V depend on)."""
        return seq.params.block_length

    def admitted(self, seq) -> None:
        """Called once the sequence holds its pages, `seq.cached_len` of them found in the cache."""

    def final_prefix(self, seq) -> int:
        """Leading positions whose K/V are final (never computed again by this sequence)."""
        return 0

    def answer_offset(self, seq, plan: RowPlan) -> int:
        """The answer position (0: the first answer token) of the decided span's first position."""
        return plan.decide_start - seq.prompt_len

    def visible_answer(self, seq) -> int:
        """Answer positions at or past this are decoded but never returned."""
        return seq.params.gen_length

    def step_row(self, seq) -> tuple[int, int]:
        """The answer row of the step about to advance (call before `advance`): its first answer
        position and its number of positions. Rows tile the answer from position 0 (a client
        draws one per row: the playground's grid); a step commits only inside its row."""
        raise NotImplementedError

    def block_remaining(self, seq, outcome: StepOutcome) -> int:
        """Masked positions left in the current answer block after the step."""
        return outcome.remaining


def policy_for(model_type: str, mask_id: int | None = None) -> DecodingPolicy:
    """The decoding rules of a checkpoint's config.json model_type, for a model with this mask id."""
    policy = DecodingPolicy._registry.get(model_type)
    if policy is None:
        known = sorted(DecodingPolicy._registry)
        raise ValueError(f"model_type: no decoding rules for {model_type!r} (known: {known})")
    return policy(mask_id)


def registered_policies() -> dict[str, type[DecodingPolicy]]:
    return dict(DecodingPolicy._registry)

