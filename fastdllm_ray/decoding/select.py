"""Token selection for one decoding step, for a batch of rows with their own parameters.

Per position: the predicted token x0 (argmax, after float64 Gumbel noise when the row's
temperature is > 0, within the row's top_p nucleus and top_k when it sets them) and its
confidence (float64 softmax probability of x0, or a uniform random rank under
remasking='random'). Per row, the number of masked positions to commit:
fixed count, threshold (all >= threshold, at least one), capped threshold (the same, at most
the fixed count: Dream's confidence_threshold), factor (largest n whose n-th confidence
>= 1 - factor/(n+1), at least one; all when only the last fails, as the reference does) or
quota threshold (all >= threshold when they are at least the fixed count, else the fixed count:
LLaDA2.0's rule).
The committed ones are the most confident masked positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

RULE_FIXED, RULE_THRESHOLD, RULE_FACTOR, RULE_CAPPED_THRESHOLD = 0, 1, 2, 3
RULE_QUOTA_THRESHOLD = 4


@dataclass
class StepRules:
    """Per-row decoding parameters of a batch, as tensors on the logits' device."""

    rule: torch.Tensor  # [B] long: RULE_FIXED | RULE_THRESHOLD | RULE_FACTOR | RULE_CAPPED_THRESHOLD
    fixed_count: torch.Tensor  # [B] long: positions to commit under RULE_FIXED (at most, capped)
    threshold: torch.Tensor  # [B] float64
    factor: torch.Tensor  # [B] float64
    temperature: torch.Tensor  # [B] float64
    random_remasking: torch.Tensor  # [B] bool
    any_sampling: bool  # some row has temperature > 0 (known on the host: no sync)
    any_random: bool  # some row remasks at random
    alg: torch.Tensor | None = None  # [B] long: a family's own confidence kind (decoding/dream.py)
    top_p: torch.Tensor | None = None  # [B] float64: nucleus (1.0: none)
    top_k: torch.Tensor | None = None  # [B] long: candidates kept
    keep_k: int = 0  # > 0: some row sets its own top_p / top_k (known on the host); the widest top_k


def confidence_of(logits: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """float64 softmax probability of x0 under logits (the reference's confidence)."""
    return torch.softmax(logits.double(), dim=-1).gather(-1, x0[..., None]).squeeze(-1)


def predict(logits: torch.Tensor, rules: StepRules, generator: torch.Generator | None = None,
            confidence_fn=confidence_of, mask_id: int | None = None):
    """x0 [B, n] and float64 confidence [B, n] from logits [B, n, V].

    With `mask_id`, the mask token is never predicted: a committed mask would stay masked
    and its block would never complete (the reference loops or fails there). Its logit is
    left out of the argmax only; the confidence is the softmax over all logits, as before.
    """
    saved = None
    if mask_id is not None:
        saved = logits[..., mask_id].clone()
        logits[..., mask_id] = float("-inf")
    x0 = logits.argmax(dim=-1)
    if rules.any_sampling:
        temp = rules.temperature[:, None, None]
        noise = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
        noisy = logits.double().exp() / (-torch.log(noise)) ** temp
        _draw_from_nucleus(noisy, logits, rules)
        x0 = torch.where(rules.temperature[:, None] > 0, noisy.argmax(dim=-1), x0)
    if saved is not None:
        logits[..., mask_id] = saved
    confidence = confidence_fn(logits, x0)
    if rules.any_random:
        ranks = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
        confidence = torch.where(rules.random_remasking[:, None], ranks, confidence)
    return x0, confidence


def _draw_from_nucleus(noisy: torch.Tensor, logits: torch.Tensor, rules: StepRules) -> None:
    """Zeroes, in a sampled row that sets top_p or top_k, the Gumbel scores of every token
    outside the nucleus of its tempered distribution (the most likely tokens until the mass
    before one exceeds top_p), then outside its top_k; the most likely token always stays.
    Dream's order (decoding/dream.py), in float64 over the whole vocabulary. The mask token,
    already at -inf in `logits`, is outside every distribution taken here."""
    if rules.top_p is None or rules.top_k is None:
        return
    narrowed = (rules.temperature > 0) & ((rules.top_p < 1.0) | (rules.top_k > 0))
    rows = narrowed.nonzero().squeeze(1)  # a host sync, on sampling steps only (they run outside graphs)
    if rows.numel() == 0:
        return
    tempered = logits[rows].double() / rules.temperature[rows, None, None]
    ordered, order = tempered.sort(dim=-1, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    before = F.pad(probs.cumsum(dim=-1)[..., :-1], (1, 0))  # the mass of the more likely tokens
    rank = torch.arange(ordered.shape[-1], device=ordered.device)
    top_p, top_k = rules.top_p[rows, None, None], rules.top_k[rows, None, None]
    keep = (rank == 0) | (before <= top_p) | (top_p >= 1.0)  # 1.0 keeps all: a sum may round above it
    keep &= (top_k <= 0) | (rank < top_k)
    kept = torch.zeros_like(keep).scatter_(-1, order, keep)
    noisy[rows] = noisy[rows].masked_fill(~kept, 0.0)


def commit_counts(sorted_conf: torch.Tensor, masked_count: torch.Tensor, rules: StepRules) -> torch.Tensor:
    """[B] number of positions to commit, from confidences sorted descending (-inf = not masked)."""
    n = sorted_conf.shape[1]
    index = torch.arange(n, device=sorted_conf.device)
    valid = index[None, :] < masked_count[:, None]

    # compared in the confidence's dtype, as the references compare a float32 confidence
    # with a Python float
    above = (sorted_conf >= rules.threshold[:, None].to(sorted_conf.dtype)) & valid
    by_threshold = above.sum(dim=1).clamp(min=1)
    # LLaDA2.0: every one above the threshold if they make the step's quota, else the quota
    above_or_quota = torch.maximum(above.sum(dim=1), rules.fixed_count)

    bar = 1.0 - rules.factor[:, None] / (index[None, :] + 2).double()
    passes = ((sorted_conf >= bar) | (index[None, :] == 0)) & valid
    leading = passes.long().cumprod(dim=1).sum(dim=1)
    by_factor = torch.where(leading >= masked_count - 1, masked_count, leading).clamp(min=1)

    count = torch.where(rules.rule == RULE_THRESHOLD, by_threshold, rules.fixed_count)
    count = torch.where(rules.rule == RULE_FACTOR, by_factor, count)
    count = torch.where(rules.rule == RULE_CAPPED_THRESHOLD, torch.minimum(by_threshold, rules.fixed_count), count)
    count = torch.where(rules.rule == RULE_QUOTA_THRESHOLD, above_or_quota, count)
    return torch.minimum(count, masked_count)


def select_transfer(confidence: torch.Tensor, masked: torch.Tensor, rules: StepRules) -> torch.Tensor:
    """Bool [B, n]: the masked positions to commit this step."""
    conf = torch.where(masked, confidence, torch.full_like(confidence, float("-inf")))
    sorted_conf, order = conf.sort(dim=1, descending=True)
    count = commit_counts(sorted_conf, masked.sum(dim=1), rules)
    chosen_sorted = torch.arange(conf.shape[1], device=conf.device)[None, :] < count[:, None]
    chosen = torch.zeros_like(masked)
    chosen.scatter_(1, order, chosen_sorted)
    return chosen & masked
