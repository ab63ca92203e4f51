"""Blocks of token ids become text deltas; stop strings cut the answer and never leak into a stream."""

from __future__ import annotations

import pytest

from fastdllm_ray import load_tokenizer
from fastdllm_ray.model.shipped import default_model_path
from fastdllm_ray.serve.text import TextAssembler


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_model_path())


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_deltas_add_up_to_the_decoded_answer_without_special_tokens(tokenizer):
    text = TextAssembler(tokenizer)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    deltas = [text.add(ids(tokenizer, "2+3 = ")), text.add(ids(tokenizer, "5") + [eot], final=True)]
    assert deltas == ["2+3 = ", "5"] and not text.stopped


def test_stop_string_cuts_the_text_even_across_blocks(tokenizer):
    text = TextAssembler(tokenizer, stop=("END",))
    first = text.add(ids(tokenizer, "answer 5 E"))
    assert first == "answer 5 "  # "E" may begin "END": held back
    second = text.add(ids(tokenizer, "ND and more"))
    assert (second, text.stopped, text.text) == ("", True, "answer 5 ")
    assert text.add(ids(tokenizer, "ignored"), final=True) == ""


def test_held_back_text_is_released_when_no_stop_follows(tokenizer):
    text = TextAssembler(tokenizer, stop=("END",))
    assert text.add(ids(tokenizer, "x E")) == "x "
    assert text.add(ids(tokenizer, "Z"), final=True) == "EZ"
    assert text.text == "x EZ" and not text.stopped


def test_earliest_of_several_stop_strings_wins(tokenizer):
    text = TextAssembler(tokenizer, stop=("b", "a"))
    text.add(ids(tokenizer, "xxabxx"), final=True)
    assert text.text == "xx" and text.stopped
