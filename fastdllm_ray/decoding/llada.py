"""LLaDA's rules, as Fast-dLLM's LLaDA generate decodes: the fixed even schedule, threshold or
factor, low-confidence or random remasking, the float64 softmax probability as confidence.

Beyond the reference: a sampled request (temperature > 0) may narrow its draw with top_p and
top_k, applied as Dream applies them (the nucleus of the tempered distribution, then the k most
likely; select.predict). The reference samples from the whole distribution; at temperature 0
neither changes anything, and the confidence stays the model's probability of the chosen token.
"""

from __future__ import annotations

from fastdllm_ray.decoding.canvas import CanvasPolicy
from fastdllm_ray.decoding.policy import StepColumns
from fastdllm_ray.decoding.schedule import num_to_commit
from fastdllm_ray.decoding.select import RULE_FACTOR, RULE_FIXED, RULE_THRESHOLD
from fastdllm_ray.params import GenerationParams


class LLaDAPolicy(CanvasPolicy):
    model_types = ("llada",)
    family = "LLaDA"
    accepts = frozenset({"steps", "cache", "factor", "remasking", "top_p", "top_k"})

    def effective(self, params: GenerationParams) -> GenerationParams:
        return super().effective(params).with_defaults(remasking="low_confidence")

    def columns(self, seq) -> StepColumns:
        p = seq.params
        rule = RULE_THRESHOLD if p.threshold is not None else RULE_FACTOR if p.factor is not None else RULE_FIXED
        return StepColumns(rule, num_to_commit(seq.state.step, p.block_length, p.block_steps),
                           p.remasking == "random", p.threshold or 1.0, p.factor or 1.0, p.temperature,
                           top_p=p.top_p or 1.0, top_k=p.top_k or 0)
