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
    schedule: str  # fixed (one token per step, or `steps` spread over the blocks) | threshold | factor
    block_length: int
    gen_length: int = GEN_LENGTH
    threshold: float = THRESHOLD  # used by schedule "threshold"
    factor: float = FACTOR  # used by schedule "factor"
    steps: int | None = None  # None: one step per answer token

    @property
    def name(self) -> str:
        fixed = "fixed 1/step" if self.steps is None else f"fixed {self.steps} steps"
        rule = {"fixed": fixed, "threshold": f"threshold {self.threshold}", "factor": f"factor {self.factor}"}
        return f"{self.cache} cache, {rule[self.schedule]}, block {self.block_length}"

    def params(self) -> GenerationParams:
        padded = -(-self.gen_length // self.block_length) * self.block_length
        # fixed without steps: as many steps as answer tokens, so exactly one is committed per step;
        # more steps than that would only run forwards that commit nothing
        return GenerationParams(
            steps=padded if self.steps is None else min(self.steps, padded),
            gen_length=self.gen_length,
            block_length=self.block_length,
            threshold=self.threshold if self.schedule == "threshold" else None,
            factor=self.factor if self.schedule == "factor" else None,
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
