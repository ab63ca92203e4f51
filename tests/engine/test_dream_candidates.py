"""Which tokens Dream's confidences and draws are over: the 50 most likely by default (the
reference's generation config inherits transformers 4.46's top_k = 50), narrowed per request
by `top_p` (the nucleus of the whole tempered distribution, taken first, as the reference
does) and `top_k`; never the mask token. (On LLaDA they narrow only sampled draws:
test_llada_top_p_top_k.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.decoding.dream import ALG_ENTROPY, ALG_MARGIN, ALG_MAXPROB, TOP_K, dream_confidences
from tests.conftest import DREAM_REFDATA

CASES = json.loads((DREAM_REFDATA / "reference.json").read_text())["cases"]
MASK = 500
ALGS = [ALG_MAXPROB, ALG_MARGIN, ALG_ENTROPY]


def reference_style(logits: torch.Tensor, top_p: float | None = None, top_k: int = TOP_K, temperature: float = 0.0):
    """The reference's way, written out: divide by the temperature; drop every token after
    the one whose cumulative probability first exceeds top_p; drop every logit below the
    k-th largest left; set dropped logits to the dtype's minimum, softmax over the whole
    vocabulary, then max / margin / negative entropy."""
    low = torch.finfo(logits.dtype).min
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        drop = torch.softmax(ordered, dim=-1).cumsum(dim=-1) > top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), low)
    kth = logits.topk(top_k, dim=-1).values[..., -1:]
    probs = torch.softmax(logits.masked_fill(logits < kth, low), dim=-1)
    top2 = probs.topk(2, dim=-1).values
    return {ALG_MAXPROB: top2[..., 0], ALG_MARGIN: top2[..., 0] - top2[..., 1],
            ALG_ENTROPY: (probs * torch.log(probs + 1e-10)).sum(dim=-1)}


def random_logits(seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(3, 40, 512, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("alg", ALGS)
def test_default_confidences_are_over_the_50_most_likely_tokens(alg):
    logits = random_logits()
    _, _, _, x0, confidence = dream_confidences(logits, torch.full((3,), alg), MASK)
    want = reference_style(logits)[alg]
    assert torch.allclose(confidence, want, atol=1e-6, rtol=0)
    whole = torch.softmax(logits, -1)
    untruncated = {ALG_MAXPROB: whole.amax(-1), ALG_ENTROPY: (whole * whole.log()).sum(-1)}.get(alg)
    if untruncated is not None:  # truncation matters: over the whole vocabulary it is another number
        assert (untruncated - want).abs().max() > 1e-3
    assert torch.equal(x0, logits.masked_fill(torch.arange(512) == MASK, -torch.inf).argmax(-1))


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("top_p,top_k,temperature", [(0.9, 50, 0.0), (0.5, 50, 0.7), (1.0, 5, 0.0),
                                                     (0.95, 200, 1.3), (0.3, 3, 0.0)])
def test_nucleus_and_top_k_per_row_as_the_reference_applies_them(alg, top_p, top_k, temperature):
    logits = random_logits(1, scale=5.0)  # peaked: the nucleus binds before the 50th token
    rows = torch.tensor([top_p, 1.0, top_p], dtype=torch.float64), torch.tensor([top_k, TOP_K, top_k])
    temp = torch.tensor([temperature, temperature, 0.0], dtype=torch.float64) if temperature else None
    _, _, _, _, confidence = dream_confidences(logits, torch.full((3,), alg), MASK, temp, *rows, keep_k=max(top_k, TOP_K))
    for row, (p, k, t) in enumerate([(top_p, top_k, temperature), (None, TOP_K, temperature), (top_p, top_k, 0.0)]):
        want = reference_style(logits[row], p, k, t)[alg]
        assert torch.allclose(confidence[row], want, atol=1e-5, rtol=1e-4), row  # float32 sums of other lengths
    plain = dream_confidences(logits, torch.full((3,), alg), MASK, temp)[4]
    assert torch.allclose(confidence[1], plain[1], atol=1e-6, rtol=0)  # a row at the defaults: as without them
    assert not torch.allclose(confidence[0], plain[0])  # and a narrowed row is narrowed


def test_the_mask_token_among_the_candidates_is_never_the_answer():
    logits = torch.zeros(1, 1, 512)
    logits[0, 0, MASK], logits[0, 0, 7] = 9.0, 8.0
    probs, _, _, x0, confidence = dream_confidences(logits, torch.tensor([ALG_MAXPROB]), MASK)
    assert x0.item() == 7 and confidence.item() == pytest.approx(probs[0, 0, 1].item())
    # top_k 1 keeps the mask alone: the best token cut is the answer, with probability 0
    one = torch.tensor([1.0], dtype=torch.float64), torch.tensor([1])
    probs, _, _, x0, confidence = dream_confidences(logits, torch.tensor([ALG_MAXPROB]), MASK, None, *one, keep_k=50)
    assert x0.item() == 7 and confidence.item() == 0.0 and probs[0, 0, 0].item() == 1.0


def params_of(case: dict, **changes) -> GenerationParams:
    return GenerationParams(steps=case["steps"], gen_length=case["gen_length"],
                            block_length=case.get("block_length", case["gen_length"]), threshold=case.get("threshold"),
                            alg=case["alg"], cache=case["cache"], stop_at_eos=False, **changes)


def test_narrowed_requests_batched_with_default_ones_decode_as_alone(dream_model):
    narrowed = [params_of(c, top_p=0.8, top_k=20 if i % 2 else None) for i, c in enumerate(CASES)]
    plain = [params_of(c) for c in CASES]
    alone = [generate(dream_model, [c["prompt"]], p)[0] for c, p in zip(CASES, narrowed)]
    mixed = generate(dream_model, [c["prompt"] for c in CASES] * 2, narrowed + plain)
    assert [r.token_ids for r in mixed[: len(CASES)]] == [r.token_ids for r in alone]
    assert [r.token_ids for r in mixed[len(CASES):]] == [c["output"] for c in CASES]
    assert all(MASK not in r.token_ids and len(r.token_ids) == c["gen_length"] for r, c in zip(alone, CASES))
    assert sum(r.token_ids != c["output"] for r, c in zip(alone, CASES)) >= len(CASES) // 4


def test_an_explicit_top_k_of_50_is_the_default(dream_model):
    explicit = [params_of(c, top_k=TOP_K, top_p=1.0) for c in CASES]
    results = generate(dream_model, [c["prompt"] for c in CASES], explicit)
    assert [r.token_ids for r in results] == [c["output"] for c in CASES]


@pytest.mark.parametrize("changes,field", [(dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                                           (dict(top_k=0), "top_k"), (dict(top_k=2.5), "top_k")])
def test_out_of_range_top_p_or_top_k_is_refused_by_name(changes, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        GenerationParams(**changes)


def test_top_p_of_one_on_llada_is_accepted(ref_model):
    params = GenerationParams(gen_length=16, block_length=8, steps=4)
    one = generate(ref_model, [[1, 2, 3]], params.with_changes(top_p=1.0))[0]
    assert one.token_ids == generate(ref_model, [[1, 2, 3]], params)[0].token_ids
