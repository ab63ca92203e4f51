"""The synthetic tasks: deterministic per seed, a held-out split that training never sees,
and answers that fit the trained answer length with their end token."""

from __future__ import annotations

import pytest

from fastdllm_ray.eval import extract_answer
from fastdllm_ray.train import data
from fastdllm_ray.train.train import ANSWER_LENGTH, encode


def test_same_seed_same_problems_other_seed_other_problems():
    assert data.problems(300, 7, "train") == data.problems(300, 7, "train")
    assert data.problems(300, 7, "train") != data.problems(300, 8, "train")
    assert data.problems(100, 1234, "eval") == data.problems(100, 1234, "eval")


def test_train_and_eval_sets_are_disjoint():
    train = {p.question for p in data.problems(30_000, 0, "train")}
    held_out = data.problems(500, 1234, "eval")
    assert len({p.question for p in held_out}) == 500  # distinct held-out questions
    assert not train & {p.question for p in held_out}
    assert all(data.split_of(q) == "train" for q in train)


def test_every_task_is_generated_and_its_answer_states_the_value():
    problems = data.problems(2000, 3, "train")
    assert {p.task for p in problems} == set(data.TASKS)
    for p in problems:
        assert p.answer.endswith(f"The answer is {p.value}.")
        assert extract_answer(p.answer) == p.value


def test_answers_fit_the_answer_length_with_their_end_token():
    problems = data.problems(3000, 5, "train")
    tokens, prompt_lens = encode(problems)
    assert max(len(p.answer) for p in problems) < ANSWER_LENGTH
    assert (tokens.shape[1] - prompt_lens >= ANSWER_LENGTH).all()


def test_unknown_split_is_refused_by_name():
    with pytest.raises(ValueError, match="split"):
        data.problems(1, 0, "test")
