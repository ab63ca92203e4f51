"""The decoding configurations an evaluation compares: cache mode x commit rule x block length
(LLaDA), cache mode x alg (Dream), threshold x block cache (Fast-dLLM v2: cache "block", its
K/V kept by block as the family always does)."""

from __future__ import annotations

from dataclasses import dataclass

from fastdllm_ray.params import CACHE_MODES, GenerationParams

SCHEDULES = ("fixed", "threshold", "factor")
ALGS = ("entropy", "maskgit_plus", "topk_margin", "confidence_threshold")  # Dream's
THRESHOLD = 0.9
FACTOR = 1.0
GEN_LENGTH = 64  # every worked answer of the shipped tasks fits, with its end token
BLOCK_LENGTHS = (16, 32, 64)
V2_THRESHOLDS = (1.0, 0.9, 0.7)  # 1.0: the reference's default, one position a forward
V2_SUB_BLOCK = 8


@dataclass(frozen=True)
class DecodingConfig:
    cache: str  # none | prefix | dual
    schedule: str  # fixed (one token per step, or `steps` spread over the blocks) | threshold | factor
    block_length: int
    gen_length: int = GEN_LENGTH
    threshold: float = THRESHOLD  # used by schedule "threshold"
    factor: float = FACTOR  # used by schedule "factor"
    steps: int | None = None  # None: one step per answer token
    alg: str | None = None  # Dream's rule (schedule "threshold" with confidence_threshold, else "fixed")
    block_cache: bool | None = None  # Fast-dLLM v2 (cache "block"): its use_block_cache

    @property
    def v2(self) -> bool:
        return self.cache == "block"

    @property
    def rule(self) -> str:
        if self.v2:
            return f"threshold {self.threshold:g}, sub-block {V2_SUB_BLOCK}" + (", block cache" if self.block_cache else "")
        fixed = "fixed 1/step" if self.steps is None else f"fixed {self.steps} steps"
        rule = {"fixed": fixed, "threshold": f"threshold {self.threshold}", "factor": f"factor {self.factor}"}
        if self.alg is None:
            return rule[self.schedule]
        return f"{self.alg} {self.threshold}" if self.schedule == "threshold" else f"{self.alg}, {fixed}"

    @property
    def name(self) -> str:
        if self.v2:
            return f"Fast-dLLM v2, {self.rule}, block {self.block_length}"
        return f"{self.cache} cache, {self.rule}, block {self.block_length}"

    def params(self) -> GenerationParams:
        if self.v2:
            return GenerationParams(gen_length=self.gen_length, block_length=self.block_length, threshold=self.threshold,
                                    sub_block_length=V2_SUB_BLOCK, block_cache=bool(self.block_cache))
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
            alg=self.alg,
        )

    def request_fields(self) -> dict:
        """The same settings as a chat request's extra body fields (max_tokens aside)."""
        params = self.params()
        if self.v2:
            return {"threshold": params.threshold, "block_length": params.block_length,
                    "sub_block_length": params.sub_block_length, "block_cache": params.block_cache}
        extra = {"use_cache": self.cache != "none", "use_dual_cache": self.cache == "dual",
                 "steps": params.steps, "block_length": params.block_length}
        for name in ("threshold", "factor", "alg"):
            if getattr(params, name) is not None:
                extra[name] = getattr(params, name)
        return extra


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


def dream_grid(caches=CACHE_MODES, algs=ALGS, block_lengths=(32,), gen_length: int = GEN_LENGTH) -> list[DecodingConfig]:
    """Dream's configurations: every cache mode x alg (confidence_threshold at THRESHOLD, the
    others one token per step); the block length only matters with a cache."""
    for name, values, allowed in (("cache", caches, CACHE_MODES), ("alg", algs, ALGS)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValueError(f"{name}: {unknown[0]!r} is not one of {allowed}")
    return [DecodingConfig(c, "threshold" if a == "confidence_threshold" else "fixed", b, gen_length, alg=a)
            for c in caches for a in algs for b in block_lengths]


def v2_grid(thresholds=V2_THRESHOLDS, block_caches=(False, True), block_length: int = 32,
            gen_length: int = GEN_LENGTH) -> list[DecodingConfig]:
    """Fast-dLLM v2's configurations: every threshold, without and with the block cache."""
    for t in thresholds:
        if not 0 < t <= 1:
            raise ValueError(f"threshold: {t} is outside (0, 1]")
    return [DecodingConfig("block", "threshold", block_length, gen_length, threshold=t, block_cache=c)
            for c in block_caches for t in thresholds]
