"""Log-likelihood of a continuation under a masked-diffusion model, as LLaDA evaluates it.

A diffusion LM has no left-to-right factorisation, so log p(target | prefix) is estimated by
Monte Carlo on its ELBO: draw a masking ratio t, mask that share of the target's positions at
random (the prefix stays visible), run one plain full forward, and sum the cross-entropy of
the masked positions weighted by 1/t. The average over `mc_num` draws is a lower bound on the
log-likelihood whose noise falls as 1/sqrt(mc_num). Within a forward the ratios are
stratified over (0, 1] (one per row) rather than drawn independently, which lowers the
variance for the same cost.

Randomness comes from a generator seeded by the prefix tokens (and the run's seed): the
choices of one multiple-choice question are scored under the same maskings (when of equal
length), so their difference is much less noisy than each estimate, and a request scores the
same whichever process or batch it lands in.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F


def request_generator(prefix: list[int], seed: int) -> torch.Generator:
    """A CPU generator seeded by the prefix's tokens and the run's seed."""
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prefix))}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def masked_counts(target_len: int, rows: int, generator: torch.Generator) -> torch.Tensor:
    """How many of the target's positions each row masks: ratios (u + i) / rows for one
    uniform u, i.e. one draw per equal slice of (0, 1], as counts in [1, target_len]."""
    ratios = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(rows)) / rows
    return torch.ceil(ratios * target_len).long().clamp_(1, target_len)


def random_masks(counts: torch.Tensor, target_len: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, target_len] booleans, row i masking counts[i] positions chosen uniformly."""
    ranks = torch.rand(len(counts), target_len, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def mc_loglikelihood(model, prefix: list[int], target: list[int], mask_token_id: int, mc_num: int,
                     batch_size: int, generator: torch.Generator) -> float:
    """LLaDA's Monte Carlo estimate of log p(target | prefix) over mc_num maskings, batch_size
    maskings per forward (mc_num a multiple of it)."""
    if not prefix or not target:
        raise ValueError("prefix and target: both must hold at least one token")
    device = model.device
    n, start = len(target), len(prefix)
    sequence = torch.tensor(prefix + target, device=device)
    total = 0.0
    batch_size = min(batch_size, mc_num)
    for _ in range(mc_num // batch_size):
        counts = masked_counts(n, batch_size, generator)
        masks = random_masks(counts, n, generator).to(device)
        noisy = sequence.repeat(batch_size, 1)
        noisy[:, start:][masks] = mask_token_id
        logits = model(noisy)[:, start:]
        nll = F.cross_entropy(logits[masks].float(), sequence[start:].expand(batch_size, n)[masks], reduction="none")
        weights = (n / counts.to(device, torch.float64))[:, None].expand(batch_size, n)[masks]
        total += float((nll.double() * weights).sum()) / batch_size
    return -total / (mc_num // batch_size)
