"""The shipped model and the recipes: a shipped name loads from the package (`serve --model
tiny-llada-arith` serves the asset) and stays small; every recipe writes its family's real
checkpoint format (the tiny Dream's tokenizer declared as DreamTokenizer with vocab.json +
merges.txt, read without running code, ChatML template, <|im_end|> and <|endoftext|> as end
tokens; the tiny v2's as Fast_dLLM_v2_7B declares it, mask |<MASK>|, the same ids as the
tiny Dream's so it can start from its weights)."""

from __future__ import annotations

import json
import sys

import pytest

from fastdllm_ray.cli import build_parser
from fastdllm_ray.commands.serve import config_from_args
from fastdllm_ray.model import DreamModel, LLaDAModel, load_model, load_tokenizer
from fastdllm_ray.model.fast_dllm_v2 import FastDLLMV2Model
from fastdllm_ray.model.shipped import SHIPPED_MODELS, resolve_shipped, shipped_model_path
from fastdllm_ray.serve.replica import resolve_model, served_model_name
from fastdllm_ray.train.config import TrainConfig
from fastdllm_ray.train.recipes import RECIPES
from fastdllm_ray.train.train import train


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_a_shipped_name_serves_its_asset_directory(name):
    config = config_from_args(build_parser().parse_args(["serve", "--model", name]))
    assert resolve_model(config) == str(shipped_model_path(name)) == resolve_shipped(name)
    assert served_model_name(config) == name
    assert resolve_shipped("some/hub-id") == "some/hub-id"
    with pytest.raises(ValueError, match="model"):
        shipped_model_path("tiny-nothing")


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_models_load_small_with_their_recipes_network(name):
    directory = shipped_model_path(name)
    assert name in RECIPES and isinstance(load_model(directory), LLaDAModel)
    size = sum(p.stat().st_size for p in directory.iterdir())
    assert size < 8 * 1024 * 1024
    assert json.loads((directory / "generation_config.json").read_text())["max_new_tokens"] == 64


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """Each recipe's checkpoint as `fastdllm-ray train --steps 0` writes it (the seed's weights)."""
    out = {}
    for name in ("tiny-dream-arith", "tiny-v2-arith"):
        out[name] = tmp_path_factory.mktemp(name)
        train(TrainConfig(model=name, steps=0), out[name])
    return out


def test_tiny_dream_keeps_dreams_checkpoint_format(untrained):
    directory = untrained["tiny-dream-arith"]
    declared = json.loads((directory / "tokenizer_config.json").read_text())
    assert declared["tokenizer_class"] == "DreamTokenizer" and "auto_map" in declared
    assert {"vocab.json", "merges.txt"} <= {p.name for p in directory.iterdir()}
    assert not (directory / "tokenizer.json").exists()
    tokenizer = load_tokenizer(directory)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and "tokenization_dream" not in sys.modules
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    model = load_model(directory)
    assert isinstance(model, DreamModel) and not isinstance(model, FastDLLMV2Model)
    assert {tokenizer.convert_ids_to_tokens(i) for i in model.end_token_ids} == {"<|endoftext|>", "<|im_end|>"}
    assert tokenizer.convert_ids_to_tokens(model.config.mask_token_id) == "<|mask|>"
    digits = tokenizer("12345", add_special_tokens=False)["input_ids"]
    assert len(digits) == 5  # numbers digit by digit, as Qwen2's pre-tokenizer splits them


def test_tiny_v2_is_a_v2_checkpoint_with_the_tiny_dreams_ids(untrained):
    directory, dream = untrained["tiny-v2-arith"], untrained["tiny-dream-arith"]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "Fast_dLLM_Qwen" and config["bd_size"] == 32
    declared = json.loads((directory / "tokenizer_config.json").read_text())
    assert declared["tokenizer_class"] == "Qwen2Tokenizer" and "auto_map" not in declared
    tokenizer, dream_tokenizer = load_tokenizer(directory), load_tokenizer(dream)
    model = load_model(directory)
    assert isinstance(model, FastDLLMV2Model)
    assert tokenizer.convert_ids_to_tokens(model.config.mask_token_id) == "|<MASK>|"
    assert model.config.mask_token_id == load_model(dream).config.mask_token_id
    assert "<|im_end|>" in {tokenizer.convert_ids_to_tokens(i) for i in model.end_token_ids}
    question = "What is 37+45? And what is 90-13?"
    assert tokenizer(question)["input_ids"] == dream_tokenizer(question)["input_ids"]
