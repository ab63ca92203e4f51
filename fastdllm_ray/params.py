"""GenerationParams: the one description of a decoding request that crosses every layer.

Validated once, where it is built: every value on its own (types, ranges, a sub-block that
divides its block). Which fields apply to a model family, and what an unset field means for it,
is decided where the model is known (its decoding policy: `decoding/`), as is the prompt's
length against the model's context (`Engine.validate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal, Optional

CacheMode = Literal["none", "prefix", "dual"]
CACHE_MODES = ("none", "prefix", "dual")
REMASKING_MODES = ("low_confidence", "random")
# Dream's choice rules (its generation_utils' `alg`); LLaDA models choose by `remasking`
DREAM_ALGS = ("entropy", "maskgit_plus", "topk_margin", "confidence_threshold")
# the settings only some families have: None means "not set" (the family's own default); a
# family refuses, by name, any of these set that it does not use (decoding/policy.py)
FAMILY_FIELDS = ("steps", "cache", "factor", "remasking", "alg", "top_p", "top_k", "sub_block_length",
                 "block_cache", "steps_per_block")


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings for one request.

    Every family: gen_length (answer tokens asked for; how a family counts them is its own:
    see the README), block_length, threshold, temperature, stop_at_eos.
    LLaDA and Dream decode a canvas of gen_length rounded up to whole blocks
    (`padded_gen_length`): `steps` (default 128) spread evenly over the blocks
    (`block_steps`), `cache` (default "dual"). LLaDA: `factor`, `remasking`. Dream: `alg`
    (None: "confidence_threshold" with a threshold, else "entropy"), `top_p`, `top_k`.
    Fast-dLLM v2: `sub_block_length` (its small_block_size, default 8), `block_cache` (its
    use_block_cache, default False). LLaDA2.0: `steps_per_block` (its steps after the
    minimal_topk cap).
    """

    gen_length: int = 128
    block_length: int = 32
    threshold: Optional[float] = None
    temperature: float = 0.0
    stop_at_eos: bool = True
    steps: Optional[int] = None
    cache: Optional[CacheMode] = None
    factor: Optional[float] = None
    remasking: Optional[str] = None
    alg: Optional[str] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    sub_block_length: Optional[int] = None
    block_cache: Optional[bool] = None
    steps_per_block: Optional[int] = None

    def __post_init__(self) -> None:
        _check_int("gen_length", self.gen_length, minimum=1)
        _check_int("block_length", self.block_length, minimum=1)
        if self.steps is not None:
            _check_int("steps", self.steps, minimum=1)
            if self.steps < self.num_blocks:
                raise ValueError(
                    f"steps: {self.steps} is fewer than the {self.num_blocks} blocks of "
                    f"gen_length {self.padded_gen_length} / block_length {self.block_length}"
                )
        if self.threshold is not None and self.factor is not None:
            raise ValueError("threshold and factor: set at most one of them")
        if self.threshold is not None:
            _check_fraction("threshold", self.threshold)
        if self.factor is not None:
            _check_float("factor", self.factor)
            if not self.factor > 0.0:
                raise ValueError(f"factor: {self.factor} must be > 0")
        _check_float("temperature", self.temperature)
        if self.temperature < 0.0:
            raise ValueError(f"temperature: {self.temperature} must be >= 0")
        _check_choice("remasking", self.remasking, REMASKING_MODES)
        _check_choice("cache", self.cache, CACHE_MODES)
        _check_choice("alg", self.alg, DREAM_ALGS)
        if self.top_p is not None:
            _check_fraction("top_p", self.top_p)
        if self.top_k is not None:
            _check_int("top_k", self.top_k, minimum=1)
        if self.sub_block_length is not None:
            _check_int("sub_block_length", self.sub_block_length, minimum=1)
            if self.block_length % self.sub_block_length:
                raise ValueError(f"sub_block_length: {self.sub_block_length} does not divide block_length "
                                 f"{self.block_length}")
        _check_bool("block_cache", self.block_cache, optional=True)
        if self.steps_per_block is not None:
            _check_int("steps_per_block", self.steps_per_block, minimum=1)
        _check_bool("stop_at_eos", self.stop_at_eos)

    @property
    def num_blocks(self) -> int:
        return -(-self.gen_length // self.block_length)

    @property
    def padded_gen_length(self) -> int:
        return self.num_blocks * self.block_length

    @property
    def block_steps(self) -> int:
        """LLaDA and Dream: the steps each block gets (`steps` // blocks)."""
        return self.steps // self.num_blocks

    def set_fields(self) -> dict[str, object]:
        """The family-specific fields this request sets (not None)."""
        return {name: getattr(self, name) for name in FAMILY_FIELDS if getattr(self, name) is not None}

    def with_changes(self, **changes) -> "GenerationParams":
        return replace(self, **changes)

    def with_defaults(self, **defaults) -> "GenerationParams":
        """The same request with each unset (None) field among `defaults` given its default."""
        unset = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        return replace(self, **unset) if unset else self


FIELD_NAMES = tuple(f.name for f in fields(GenerationParams))


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {value!r} is not an integer")
    if value < minimum:
        raise ValueError(f"{name}: {value} must be >= {minimum}")


def _check_fraction(name: str, value) -> None:
    """A finite number in (0, 1]."""
    _check_float(name, value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name}: {value} is outside (0, 1]")


def _check_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} is not finite")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {choices}")


def _check_bool(name: str, value, optional: bool = False) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ValueError(f"{name}: {value!r} is not a bool")
