"""Dream's decoding rules, as Fast-dLLM's Dream code decodes (dream/model/generation_utils.py
without a cache, generation_utils_block.py with the prefix or dual cache).

- Shifted logits: position i is decided from the hidden state at i - 1.
- No cache: one block as long as the answer, `steps` steps over timesteps
  linspace(1, 1e-3, steps + 1); step i commits int(masked * (1 - t[i+1] / t[i])) positions
  (float32, as the reference computes it), all that are left on the last step.
- With a cache: each block starts with a full forward that commits only the block's first
  position (from the hidden state just before the block), then cached steps over the block
  on the same schedule (steps_per_block) from step 1.
- alg: the confidence that orders the candidates: max probability (maskgit_plus), top-1
  minus top-2 probability (topk_margin) or negative entropy (entropy), all float32 and
  over the 50 most likely tokens renormalised (TOP_K below).
  confidence_threshold commits the most confident, then every other candidate whose
  probability reaches `threshold`, up to a count: without a cache steps-many on average,
  carrying the shortfall to the next step and adding steps at the end while it lasts; with
  a cache up to the whole block, until it has no mask.

Where we differ, on purpose: the mask token is never predicted (the reference can commit
it and then never finish a block); `alg` is honoured in cached steps too (the reference's
block code uses the entropy confidence for every alg but confidence_threshold); a block of
one step per block with a cache finishes (the reference stops with masks left); temperature
> 0 draws with our seeded generator, so samples differ from the reference's draws.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from fastdllm_ray.decoding.canvas import CanvasPolicy
from fastdllm_ray.decoding.policy import StepColumns
from fastdllm_ray.decoding.schedule import num_to_commit
from fastdllm_ray.decoding.select import RULE_CAPPED_THRESHOLD, RULE_FIXED, StepRules
from fastdllm_ray.params import GenerationParams

ALG_MAXPROB, ALG_MARGIN, ALG_ENTROPY = 0, 1, 2
_ALG_CODES = {"maskgit_plus": ALG_MAXPROB, "confidence_threshold": ALG_MAXPROB, "topk_margin": ALG_MARGIN,
              "entropy": ALG_ENTROPY}
DEFAULT_THRESHOLD = 0.9  # the reference's default for confidence_threshold
EPS = 1e-3  # the reference's final timestep
# The reference keeps the 50 most likely tokens before its softmax: its generation config is
# built from the model config, which under transformers 4.46 (the version Fast-dLLM's Dream
# code runs with) carries the library-wide default top_k = 50. The confidences (entropy,
# margin, max probability) and temperature draws are therefore over those 50.
TOP_K = 50


def alg_of(params: GenerationParams) -> str:
    if params.alg is not None:
        return params.alg
    return "confidence_threshold" if params.threshold is not None else "entropy"


@lru_cache(maxsize=64)
def _schedule(steps: int) -> tuple[np.float32, ...]:
    """(1 - t[i+1] / t[i]) per step i, in float32 as the reference computes it."""
    t = torch.linspace(1, EPS, steps + 1)
    return tuple(np.float32(v) for v in (1 - t[1:] / t[:-1]).tolist())


def scheduled_count(masked: int, step: int, steps: int) -> int:
    """Positions step `step` of `steps` commits when `masked` are left."""
    if step >= steps - 1:
        return masked
    return int(np.float32(masked) * _schedule(steps)[step])


def dream_confidences(logits: torch.Tensor, alg: torch.Tensor, mask_id: int,
                      temperature: torch.Tensor | None = None, top_p: torch.Tensor | None = None,
                      top_k: torch.Tensor | None = None, keep_k: int = 0):
    """Each position's distribution over its best candidates, as the reference sees it.

    The candidates are the TOP_K most likely tokens; with `keep_k` > 0 the `keep_k` most
    likely, cut per row to its `top_k` [B] and to its nucleus `top_p` [B] (the reference's
    order: the nucleus over the whole tempered distribution, then the top k).
    Returns probs [B, n, k] (float32, renormalised over the candidates, the mask token
    included, tempered when `temperature` [B] is given), allowed (the order x0 and draws
    choose in: probs, below them the candidates cut, the mask token last), index [B, n, k]
    (their token ids, best first), x0 [B, n] (the most probable token that is not the mask)
    and the confidence [B, n] of each row's alg. The reference keeps every logit at least as
    large as the k-th (ties can keep more); ours keeps exactly k. The top k are taken in the
    logits' own dtype (a temperature keeps their order), so without `keep_k` the whole
    [B, n, vocab] tensor is read once and never copied (a nucleus needs its logsumexp too).
    """
    width = max(keep_k, 2) if keep_k else TOP_K  # two at least: the margin, and an answer besides the mask
    values, index = logits.topk(min(width, logits.shape[-1]), dim=-1)
    values = values.float()
    rank = torch.arange(values.shape[-1], device=values.device)
    scale = None
    if temperature is not None:  # the reference divides the logits by the temperature first
        scale = torch.where(temperature > 0, temperature, 1.0).float()[:, None, None]
        values = values / scale
    if keep_k:
        kept = rank < top_k[:, None, None]
        whole = logits.float() if scale is None else logits.float() / scale
        mass = (values - whole.logsumexp(dim=-1, keepdim=True)).exp().cumsum(dim=-1)
        before = F.pad(mass[..., :-1], (1, 0))  # the mass of the more likely candidates
        # compared in float32, as the reference compares its float32 sums with a Python float;
        # top_p 1.0 keeps all (the reference skips it: a sum may round above 1)
        top_p = top_p.float()[:, None, None]
        kept = kept & ((rank == 0) | (before <= top_p) | (top_p >= 1.0))
        values = values.masked_fill(~kept, float("-inf"))
    probs = torch.softmax(values, dim=-1)
    neg_entropy = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    # The mask token is never the answer: it ranks below every other candidate, and one cut
    # by top_p / top_k (probability 0) still ranks above it, best first, for when the cut
    # leaves only the mask.
    fallback = -1.0 - rank / values.shape[-1]
    allowed = torch.where(index == mask_id, -3.0, torch.where(probs > 0, probs, fallback))
    best, pick = allowed.max(dim=-1)
    x0 = index.gather(-1, pick[..., None]).squeeze(-1)
    alg = alg[:, None]
    confidence = torch.where(alg == ALG_MARGIN, probs[..., 0] - probs[..., 1],
                             torch.where(alg == ALG_ENTROPY, neg_entropy, best.clamp(min=0)))
    return probs, allowed, index, x0, confidence


def dream_predict(logits: torch.Tensor, rules: StepRules, generator: torch.Generator | None = None,
                  confidence_fn=dream_confidences, mask_id: int | None = None):
    """x0 [B, n] and float32 confidence [B, n] from logits [B, n, V] (already shifted)."""
    temperature = rules.temperature if rules.any_sampling else None
    probs, allowed, index, x0, confidence = confidence_fn(logits, rules.alg, mask_id, temperature, rules.top_p,
                                                          rules.top_k, rules.keep_k)
    if rules.any_sampling:  # a draw from the tempered top-k probabilities, the mask token excluded
        noise = torch.empty(probs.shape, dtype=torch.float32, device=probs.device).exponential_(generator=generator)
        pick = torch.where(allowed > 0, allowed / noise, allowed).argmax(dim=-1, keepdim=True)
        sampled = (rules.temperature > 0)[:, None]
        x0 = torch.where(sampled, index.gather(-1, pick).squeeze(-1), x0)
        drawn_prob = probs.gather(-1, pick).squeeze(-1)
        confidence = torch.where(sampled & (rules.alg[:, None] == ALG_MAXPROB), drawn_prob, confidence)
    return x0, confidence


class DreamPolicy(CanvasPolicy):
    model_types = ("Dream",)
    family = "Dream"
    accepts = frozenset({"steps", "cache", "alg", "top_p", "top_k"})
    shift = 1
    default_top_k = TOP_K
    confidence_fn = staticmethod(dream_confidences)
    predict = staticmethod(dream_predict)

    def validate(self, params: GenerationParams) -> None:
        super().validate(params)
        if params.threshold is not None and alg_of(params) != "confidence_threshold":
            raise ValueError(f"threshold: applies with alg 'confidence_threshold', not {params.alg!r}")

    def effective(self, params: GenerationParams) -> GenerationParams:
        """Without a cache Dream decodes one block as long as the answer (generation_utils)."""
        params = super().effective(params)
        if params.cache == "none" and params.block_length != params.gen_length:
            return params.with_changes(block_length=params.gen_length)
        return params

    def columns(self, seq) -> StepColumns:
        p = seq.params
        return self._rule_columns(seq)._replace(top_p=p.top_p or 1.0, top_k=p.top_k or TOP_K)

    def _rule_columns(self, seq) -> StepColumns:
        p, state = seq.params, seq.state
        cached = p.cache != "none"
        if cached and state.step == 0:  # the block's full forward commits its first position only
            return StepColumns(RULE_FIXED, 1, False, 1.0, 1.0, p.temperature, ALG_MAXPROB, 1, True)
        alg = alg_of(p)
        if alg == "confidence_threshold":
            if cached:
                count = state.masked
            else:  # steps-many a step on average, plus what earlier steps left (none after `steps`)
                base = num_to_commit(state.step, p.block_length, p.steps) if state.step < p.steps else 0
                count = base + state.carried
            return StepColumns(RULE_CAPPED_THRESHOLD, count, False, p.threshold or DEFAULT_THRESHOLD, 1.0,
                               p.temperature, ALG_MAXPROB, 1)
        count = scheduled_count(state.masked, state.step, p.block_steps)
        return StepColumns(RULE_FIXED, count, False, 1.0, 1.0, p.temperature, _ALG_CODES[alg], 1)

    def after_step(self, seq, committed: int) -> None:
        p = seq.params
        if p.cache == "none" and alg_of(p) == "confidence_threshold":
            seq.state.carried = self.columns(seq).count - committed
