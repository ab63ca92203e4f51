"""The shipped checkpoint's tokenizer: exact round trips, LLaDA's chat shape, its ids in config.json."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from fastdllm_ray.model import DEFAULT_MODEL_NAME, default_model_path, load_model
from fastdllm_ray.train.tokenizer import EOS, EOT, MASK, user_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(default_model_path()))


@pytest.mark.parametrize("text", ["What is 23+58?", "  two  spaces\nand ~`{}|\\ \"quotes\"", "0 + 0 = 0."])
def test_text_round_trips_exactly(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids_and_skippable(tokenizer):
    ids = tokenizer.encode(f"ab{EOT}c{EOS}", add_special_tokens=False)
    assert len(ids) == 5
    assert tokenizer.decode(ids, skip_special_tokens=True) == "abc"


def test_chat_template_has_llada_turn_shape(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}],
                                         add_generation_prompt=True, tokenize=False)
    assert text == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert text == user_prompt("What is 2+2?")
    config = json.loads((default_model_path() / "tokenizer_config.json").read_text())
    assert "chat_template" in config


def test_config_ids_are_the_tokenizers_mask_and_end_tokens(tokenizer):
    config = json.loads((default_model_path() / "config.json").read_text())
    assert config["model_type"] == "llada"
    assert config["mask_token_id"] == tokenizer.convert_tokens_to_ids(MASK)
    assert config["eos_token_id"] == tokenizer.convert_tokens_to_ids(EOS)
    assert tokenizer.convert_tokens_to_ids(EOT) in config["end_token_ids"]
    assert tokenizer.convert_tokens_to_ids(EOT) in load_model(default_model_path()).end_token_ids


def test_shipped_directory_is_small_and_named():
    directory = default_model_path()
    assert directory.name == DEFAULT_MODEL_NAME
    files = {p.name: p.stat().st_size for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert sum(files.values()) < 8 * 1024 * 1024
