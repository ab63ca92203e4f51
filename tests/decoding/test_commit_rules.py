"""Which masked positions one decoding step commits: fixed schedule, threshold, factor
(with the reference's quirk), per-row rules in one batch, random remasking and sampling."""

from __future__ import annotations

import pytest
import torch

from fastdllm_ray.decoding import (RULE_FACTOR, RULE_FIXED, RULE_THRESHOLD, StepRules, fixed_commit_counts,
                                   num_to_commit, predict, select_transfer)


def rules(rule, fixed_count=1, threshold=0.9, factor=1.0, temperature=0.0, random=False, rows=1) -> StepRules:
    def column(value, dtype):
        values = value if isinstance(value, list) else [value] * rows
        return torch.tensor(values, dtype=dtype)

    temps = column(temperature, torch.float64)
    randoms = column(random, torch.bool)
    return StepRules(rule=column(rule, torch.long), fixed_count=column(fixed_count, torch.long),
                     threshold=column(threshold, torch.float64), factor=column(factor, torch.float64),
                     temperature=temps, random_remasking=randoms,
                     any_sampling=bool((temps > 0).any()), any_random=bool(randoms.any()))


def committed(confidence, masked, step_rules) -> list[list[int]]:
    chosen = select_transfer(torch.tensor(confidence, dtype=torch.float64), torch.tensor(masked), step_rules)
    return [torch.nonzero(row).flatten().tolist() for row in chosen]


@pytest.mark.parametrize("block_length, steps, expected", [
    (8, 3, [3, 3, 2]), (8, 8, [1] * 8), (8, 1, [8]), (32, 5, [7, 7, 6, 6, 6]), (4, 6, [1, 1, 1, 1, 0, 0])])
def test_fixed_schedule_splits_the_block_evenly_first_steps_one_more(block_length, steps, expected):
    assert fixed_commit_counts(block_length, steps) == expected
    per_step = [num_to_commit(s, block_length, steps) for s in range(steps)]
    assert per_step == expected


def test_fixed_count_commits_the_most_confident_masked_positions():
    conf = [[0.99, 0.2, 0.7, 0.5, 0.6]]
    masked = [[False, True, True, True, True]]  # position 0 is already decided
    assert committed(conf, masked, rules(RULE_FIXED, fixed_count=2)) == [[2, 4]]
    assert committed(conf, masked, rules(RULE_FIXED, fixed_count=9)) == [[1, 2, 3, 4]]


def test_threshold_commits_all_at_or_above_it():
    conf = [[0.95, 0.9, 0.3, 0.91, 0.2]]
    masked = [[True] * 5]
    assert committed(conf, masked, rules(RULE_THRESHOLD, threshold=0.9)) == [[0, 1, 3]]


def test_threshold_commits_at_least_the_most_confident_one():
    conf = [[0.3, 0.5, 0.99, 0.4]]
    masked = [[True, True, False, True]]
    assert committed(conf, masked, rules(RULE_THRESHOLD, threshold=0.9)) == [[1]]


def reference_factor_count(sorted_conf: list[float], factor: float) -> int:
    """The rule as the reference's loop computes it, position by position."""
    bars = [-1.0] + [1 - factor / (n + 1) for n in range(2, len(sorted_conf) + 1)]
    top = 0
    for top in range(len(bars)):
        if sorted_conf[top] < bars[top]:
            break
    return top + 1 if top in (0, len(bars) - 1) else top


@pytest.mark.parametrize("conf, expected", [
    ([0.9, 0.8, 0.7, 0.1, 0.05], 2),  # bars 0.667, 0.75: the third fails
    ([0.3, 0.2, 0.1], 1),  # at least one
    ([0.99, 0.98, 0.97, 0.96], 4),  # all pass
    ([0.95, 0.9, 0.85, 0.1], 4),  # only the last fails: the reference commits all (its quirk)
])
def test_factor_commits_the_leading_run_above_one_minus_factor_over_n_plus_one(conf, expected):
    assert reference_factor_count(conf, 1.0) == expected
    assert len(committed([conf], [[True] * len(conf)], rules(RULE_FACTOR, factor=1.0))[0]) == expected


def test_factor_count_equals_reference_loop_on_random_rows():
    gen = torch.Generator().manual_seed(0)
    conf = torch.rand(200, 12, generator=gen, dtype=torch.float64) ** 0.3
    masked = torch.rand(200, 12, generator=gen) < 0.7
    masked[:, 0] = True
    factors = torch.rand(200, generator=gen, dtype=torch.float64) * 2 + 0.05
    step_rules = rules([RULE_FACTOR] * 200, factor=factors.tolist(), rows=200)
    counts = select_transfer(conf, masked, step_rules).sum(dim=1).tolist()
    expected = [reference_factor_count(sorted(conf[i][masked[i]].tolist(), reverse=True), factors[i].item())
                for i in range(200)]
    assert counts == expected


def test_each_row_follows_its_own_rule_in_one_batch():
    conf = [[0.95, 0.6, 0.92, 0.1], [0.95, 0.6, 0.92, 0.1], [0.95, 0.9, 0.85, 0.1], [0.5, 0.4, 0.3, 0.2]]
    masked = [[True] * 4] * 4
    batch = rules([RULE_FIXED, RULE_THRESHOLD, RULE_FACTOR, RULE_FIXED], fixed_count=[1, 1, 1, 3],
                  threshold=[1.0, 0.9, 1.0, 1.0], factor=[1.0, 1.0, 1.0, 1.0], rows=4)
    assert committed(conf, masked, batch) == [[0], [0, 2], [0, 1, 2, 3], [0, 1, 2]]


def test_predict_gives_argmax_and_its_float64_probability():
    logits = torch.tensor([[[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]]])
    x0, conf = predict(logits, rules(RULE_FIXED))
    assert x0.tolist() == [[1, 0]]
    assert conf.dtype == torch.float64
    assert torch.allclose(conf, torch.softmax(logits.double(), -1).amax(-1))


@pytest.mark.parametrize("temperature, random", [(0.0, True), (1.0, False), (0.7, True)])
def test_sampling_and_random_remasking_commit_only_masked_positions(temperature, random):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 16, 50, generator=gen)
    masked = torch.rand(3, 16, generator=gen) < 0.5
    step_rules = rules(RULE_FIXED, fixed_count=4, temperature=temperature, random=random, rows=3)
    x0, conf = predict(logits, step_rules, torch.Generator().manual_seed(7))
    again, _ = predict(logits, step_rules, torch.Generator().manual_seed(7))
    chosen = select_transfer(conf, masked, step_rules)
    assert torch.equal(x0, again)  # seeded: reproducible
    assert not (chosen & ~masked).any()
    assert chosen.sum(dim=1).tolist() == masked.sum(dim=1).clamp(max=4).tolist()
    assert ((x0 >= 0) & (x0 < 50)).all()
    if temperature > 0:  # Gumbel-max at temperature 1 over random logits departs from argmax
        assert not torch.equal(x0, logits.argmax(-1))
    if random:  # ranks, not probabilities
        assert not torch.allclose(conf, torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0])


def test_temperature_applies_only_to_rows_that_ask_for_it():
    logits = torch.randn(2, 16, 50, generator=torch.Generator().manual_seed(2))
    step_rules = rules(RULE_FIXED, temperature=[0.0, 1.0], rows=2)
    x0, _ = predict(logits, step_rules, torch.Generator().manual_seed(3))
    assert torch.equal(x0[0], logits[0].argmax(-1))
    assert not torch.equal(x0[1], logits[1].argmax(-1))
