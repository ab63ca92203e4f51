"""GenerationParams: the one description of a decoding request that crosses every layer.

Validated once, where it is built; model-dependent checks (prompt length against the
model's context) happen where the model is known (`engine.validate_prompt`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Optional

CacheMode = Literal["none", "prefix", "dual"]
CACHE_MODES = ("none", "prefix", "dual")
REMASKING_MODES = ("low_confidence", "random")
# Dream's choice rules (its generation_utils' `alg`); LLaDA models choose by `remasking`
DREAM_ALGS = ("entropy", "maskgit_plus", "topk_margin", "confidence_threshold")


@dataclass(frozen=True)
class GenerationParams:
    """Fast-dLLM decoding settings for one request.

    gen_length is the number of answer tokens asked for; the canvas is rounded up to a
    multiple of block_length (`padded_gen_length`) and the answer cut back to gen_length.
    `steps` are spread evenly over the blocks (`steps_per_block`). With `threshold` or
    `factor` set, the number committed per step is decided by confidence instead.
    `alg` is Dream's choice rule (None: "confidence_threshold" when `threshold` is set,
    else "entropy"); `top_p` (nucleus) and `top_k` narrow the distribution Dream's
    confidences and draws are taken over (None: Dream's reference defaults, top_k 50 and no
    nucleus); which fields apply to the loaded model's family is checked where the model is
    known (decoding/policy.py).
    """

    steps: int = 128
    gen_length: int = 128
    block_length: int = 32
    threshold: Optional[float] = None
    factor: Optional[float] = None
    temperature: float = 0.0
    remasking: str = "low_confidence"
    cache: CacheMode = "dual"
    stop_at_eos: bool = True
    alg: Optional[str] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None

    def __post_init__(self) -> None:
        _check_int("gen_length", self.gen_length, minimum=1)
        _check_int("block_length", self.block_length, minimum=1)
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
        if self.remasking not in REMASKING_MODES:
            raise ValueError(f"remasking: {self.remasking!r} is not one of {REMASKING_MODES}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache: {self.cache!r} is not one of {CACHE_MODES}")
        if self.alg is not None and self.alg not in DREAM_ALGS:
            raise ValueError(f"alg: {self.alg!r} is not one of {DREAM_ALGS}")
        if self.top_p is not None:
            _check_fraction("top_p", self.top_p)
        if self.top_k is not None:
            _check_int("top_k", self.top_k, minimum=1)
        if not isinstance(self.stop_at_eos, bool):
            raise ValueError(f"stop_at_eos: {self.stop_at_eos!r} is not a bool")

    @property
    def num_blocks(self) -> int:
        return -(-self.gen_length // self.block_length)

    @property
    def padded_gen_length(self) -> int:
        return self.num_blocks * self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    def with_changes(self, **changes) -> "GenerationParams":
        return replace(self, **changes)


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
