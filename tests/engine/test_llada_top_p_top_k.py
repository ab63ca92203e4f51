"""top_p and top_k on LLaDA, beyond Fast-dLLM's LLaDA code: a sampled row (temperature > 0)
draws from the nucleus of its tempered distribution, then from its k most likely tokens (as
Dream applies them); at temperature 0 they change nothing, and a narrowed row batched beside
default rows leaves those rows exactly as the reference decodes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.decoding.select import RULE_FIXED, StepRules, predict

CASES = json.loads((Path(__file__).parents[1] / "fixtures/refdata/reference.json").read_text())["cases"]
MASK = 500


def params_of(case: dict, **changes) -> GenerationParams:
    settings = dict(steps=case["steps"], gen_length=case["gen_length"], block_length=case["block_length"],
                    threshold=case.get("threshold"), factor=case.get("factor"), cache=case["cache"],
                    stop_at_eos=False)
    return GenerationParams(**{**settings, **changes})


def rules_of(temperature: list[float], top_p: list[float], top_k: list[int]) -> StepRules:
    rows = len(temperature)
    return StepRules(rule=torch.full((rows,), RULE_FIXED), fixed_count=torch.ones(rows, dtype=torch.long),
                     threshold=torch.ones(rows, dtype=torch.float64), factor=torch.ones(rows, dtype=torch.float64),
                     temperature=torch.tensor(temperature, dtype=torch.float64),
                     random_remasking=torch.zeros(rows, dtype=torch.bool), any_sampling=max(temperature) > 0,
                     any_random=False, top_p=torch.tensor(top_p, dtype=torch.float64), top_k=torch.tensor(top_k))


def nucleus_of(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """The tokens a draw may land on, written out the reference's way: divide by the
    temperature; drop every token after the one whose cumulative probability first exceeds
    top_p; keep the top_k left. Bool [n, V]; the mask token is never among them."""
    logits = logits.double().masked_fill(torch.arange(logits.shape[-1]) == MASK, -torch.inf) / temperature
    ordered, order = logits.sort(dim=-1, descending=True)
    drop = torch.softmax(ordered, dim=-1).cumsum(dim=-1) > top_p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    if top_k > 0:
        drop[..., top_k:] = True
    return torch.zeros_like(drop).scatter(-1, order, ~drop)


def test_a_sampled_row_draws_only_inside_its_nucleus_and_top_k():
    logits = torch.randn(3, 24, 512, generator=torch.Generator().manual_seed(0)) * 4.0
    rules = rules_of([0.8, 0.8, 0.8], [0.7, 1.0, 0.95], [0, 0, 3])
    allowed = [nucleus_of(logits[0], 0.8, 0.7, 0), None, nucleus_of(logits[2], 0.8, 0.95, 3)]
    assert 1 < allowed[0].sum(-1).float().mean() < 512  # the cut binds, and leaves a choice
    drawn = {0: set(), 2: set()}
    for seed in range(40):
        x0, _ = predict(logits.clone(), rules, torch.Generator().manual_seed(seed), mask_id=MASK)
        for row in (0, 2):
            assert allowed[row].gather(-1, x0[row][:, None]).all(), (seed, row)
            drawn[row] |= {(i, t) for i, t in enumerate(x0[row].tolist())}
    assert len(drawn[0]) > 24 and len(drawn[2]) > 24  # still a draw, not the argmax


def test_narrowing_one_row_leaves_the_other_rows_draws_unchanged():
    logits = torch.randn(3, 24, 512, generator=torch.Generator().manual_seed(1)) * 4.0
    wide = predict(logits.clone(), rules_of([0.8, 0.8, 0.0], [1.0, 1.0, 1.0], [0, 0, 0]),
                   torch.Generator().manual_seed(7), mask_id=MASK)
    narrowed = predict(logits.clone(), rules_of([0.8, 0.8, 0.0], [0.5, 1.0, 0.5], [2, 0, 2]),
                       torch.Generator().manual_seed(7), mask_id=MASK)
    assert torch.equal(wide[0][1:], narrowed[0][1:]) and torch.equal(wide[1][1:], narrowed[1][1:])
    assert not torch.equal(wide[0][0], narrowed[0][0])


def test_at_temperature_zero_top_p_and_top_k_change_nothing(ref_model):
    narrowed = [params_of(c, top_p=0.5, top_k=3) for c in CASES]
    results = generate(ref_model, [c["prompt"] for c in CASES], narrowed)
    assert [r.token_ids for r in results] == [c["output"] for c in CASES]
    assert [r.nfe for r in results] == [c["useful_nfe"] for c in CASES]


def test_a_narrowed_sampled_row_beside_default_rows_leaves_them_as_the_reference(ref_model):
    cases = CASES[:15]
    # top_k 1 leaves one token to draw: the sampled row decodes exactly as greedy decoding
    sampled = params_of(cases[2], temperature=1.0, top_k=1)
    nucleus = params_of(cases[8], temperature=1.0, top_p=1e-9)
    results = generate(ref_model, [c["prompt"] for c in cases] + [cases[2]["prompt"], cases[8]["prompt"]],
                       [params_of(c) for c in cases] + [sampled, nucleus], seed=5)
    assert [r.token_ids for r in results[: len(cases)]] == [c["output"] for c in cases]
    assert [r.nfe for r in results[: len(cases)]] == [c["useful_nfe"] for c in cases]
    assert results[-2].token_ids == cases[2]["output"] and results[-1].token_ids == cases[8]["output"]
    unnarrowed = generate(ref_model, [cases[2]["prompt"]], [params_of(cases[2], temperature=1.0)], seed=5)[0]
    assert unnarrowed.token_ids != cases[2]["output"]  # without the cut the same draw is another answer


@pytest.mark.parametrize("changes, field", [(dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p")])
def test_out_of_range_top_p_or_top_k_on_llada_is_refused_by_name(ref_model, changes, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        generate(ref_model, [[1, 2, 3]], GenerationParams(gen_length=16, block_length=8, steps=4, **changes))
