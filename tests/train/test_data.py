"""The synthetic single-question tasks: deterministic per seed, a held-out split that training
never sees (a sum or difference held out in every wording), and answers that fit the trained
answer length with their end token."""

from __future__ import annotations

import random

import pytest

from fastdllm_ray.eval import extract_answer
from fastdllm_ray.model import default_model_path, load_tokenizer
from fastdllm_ray.train import data
from fastdllm_ray.train.batches import encode
from fastdllm_ray.train.chats import Chat
from fastdllm_ray.train.recipes import ANSWER_LENGTH


def test_same_seed_same_problems_other_seed_other_problems():
    assert data.problems(300, 7, "train") == data.problems(300, 7, "train")
    assert data.problems(300, 7, "train") != data.problems(300, 8, "train")
    assert data.problems(100, 1234, "eval") == data.problems(100, 1234, "eval")


def test_train_and_eval_sets_are_disjoint():
    train = data.problems(30_000, 0, "train")
    held_out = data.problems(500, 1234, "eval")
    assert len({p.question for p in held_out}) == 500  # distinct held-out questions
    assert not {p.split_key for p in train} & {p.split_key for p in held_out}
    assert all(data.split_of(p.split_key) == "train" for p in train)


def test_a_sum_is_one_problem_in_any_order_or_wording():
    rng = random.Random(3)
    for _ in range(50):
        for maker in (data.add, data.word_add, data.subtract, data.word_subtract):
            problem = maker(rng)
            a, sign, b = problem.answer.split(" = ")[0].split(" ")
            expected = data.sum_key(int(a), int(b)) if sign == "+" else data.difference_key(int(a), int(b))
            assert problem.split_key == expected
    assert data.sum_key(12, 7) == data.sum_key(7, 12) == "7+12"
    assert data.multiply(rng).split_key.startswith("What is")  # other tasks: the question itself


def test_every_task_is_generated_and_its_answer_states_the_value():
    problems = data.problems(2000, 3, "train")
    assert {p.task for p in problems} == set(data.TASKS)
    for p in problems:
        assert p.answer.endswith(f"The answer is {p.value}.")
        assert extract_answer(p.answer) == p.value


def test_answers_fit_the_answer_length_with_their_end_token():
    tokenizer = load_tokenizer(default_model_path())
    problems = data.problems(3000, 5, "train")
    rows, prompt_lens = encode(tokenizer, [Chat((p,)) for p in problems], ANSWER_LENGTH, "<|eot_id|>",
                               "<|endoftext|>")
    assert max(len(p.answer) for p in problems) < ANSWER_LENGTH
    assert all(len(row) - n == ANSWER_LENGTH for row, n in zip(rows, prompt_lens))


def test_unknown_split_is_refused_by_name():
    with pytest.raises(ValueError, match="split"):
        data.problems(1, 0, "test")
