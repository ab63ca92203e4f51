"""The decoding configurations an evaluation compares: cache mode x commit rule x block length."""

from __future__ import annotations

from dataclasses import dataclass

from fastdllm_ray.params import CACHE_MODES, GenerationParams

SCHEDULES = ("fixed", "threshold", "factor")
THRESHOLD = 0.9
FACTOR = 1.0
GEN_LENGTH = 64  # every worked answer of the shipped tasks fits, with its end token
BLOCK_LENGTHS = (16, 32, 64)


@dataclass(frozen=True)
class DecodingConfig:
    cache: str  # none | prefix | dual
    schedule: str  # fixed (one token per step) | threshold | factor
    block_length: int
    gen_length: int = GEN_LENGTH

    @property
    def name(self) -> str:
        rule = {"fixed": "fixed 1/step", "threshold": f"threshold {THRESHOLD}", "factor": f"factor {FACTOR}"}
        return f"{self.cache} cache, {rule[self.schedule]}, block {self.block_length}"

    def params(self) -> GenerationParams:
        # fixed: as many steps as answer tokens, so exactly one token is committed per step
        return GenerationParams(
            steps=-(-self.gen_length // self.block_length) * self.block_length,
            gen_length=self.gen_length,
            block_length=self.block_length,
            threshold=THRESHOLD if self.schedule == "threshold" else None,
            factor=FACTOR if self.schedule == "factor" else None,
            cache=self.cache,
        )


def grid(caches=CACHE_MODES, schedules=SCHEDULES, block_lengths=BLOCK_LENGTHS,
         gen_length: int = GEN_LENGTH) -> list[DecodingConfig]:
    """Every combination, ordered by cache mode, then commit rule, then block length."""
    for name, values, allowed in (("cache", caches, CACHE_MODES), ("schedule", schedules, SCHEDULES)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValueError(f"{name}: {unknown[0]!r} is not one of {allowed}")
    for block_length in block_lengths:
        if block_length < 1:
            raise ValueError(f"block_length: {block_length} must be >= 1")
    return [DecodingConfig(c, s, b, gen_length) for c in caches for s in schedules for b in block_lengths]
