"""The embedded tiny Dream checkpoint loads like a real one: the network from config.json, the
tokenizer from vocab.json + merges.txt under a tokenizer_config.json that names Dream's own
class (as Dream-v0-Instruct-7B ships it: no tokenizer.json) without running the checkpoint's
code, the ChatML chat template, <|im_end|> and <|endoftext|> as end tokens; a chat prompt
decodes to the end through the engine."""

from __future__ import annotations

import json
import sys
import unicodedata

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.model import DreamModel, load_model, load_tokenizer
from tests.conftest import TINY_DREAM


def test_tiny_dream_loads_with_its_chat_template_and_end_tokens():
    model = load_model(TINY_DREAM)
    tokenizer = load_tokenizer(TINY_DREAM)
    assert isinstance(model, DreamModel)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    ends = {tokenizer.convert_ids_to_tokens(i) for i in model.end_token_ids}
    assert ends == {"<|endoftext|>", "<|im_end|>"}
    assert tokenizer.convert_ids_to_tokens(model.config.mask_token_id) == "<|mask|>"
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    result = generate(model, [prompt], GenerationParams(gen_length=16, block_length=8, steps=8, stop_at_eos=False))[0]
    assert len(result.token_ids) == 16 and model.config.mask_token_id not in result.token_ids


def test_dreams_own_tokenizer_class_is_read_as_qwen2s_bpe_without_running_its_code():
    declared = json.loads((TINY_DREAM / "tokenizer_config.json").read_text())
    assert declared["tokenizer_class"] == "DreamTokenizer" and "auto_map" in declared
    assert not (TINY_DREAM / "tokenizer.json").exists()
    tokenizer = load_tokenizer(TINY_DREAM)  # tokenization_dream.py would raise if it ran
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and "tokenization_dream" not in sys.modules
    text = "Tom has 12 apples and buys 7 more. How many apples does Tom have?"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) < len(text.encode()) and tokenizer.decode(ids) == text  # merges apply; bytes round-trip
    turn = "19.<|im_end|>\n<|endoftext|>"
    turn_ids = tokenizer(turn)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in turn_ids and tokenizer.decode(turn_ids) == turn
    composed = "caf\u00e9"  # NFC, as Dream's tokenizer normalises before its BPE
    assert tokenizer(unicodedata.normalize("NFD", composed))["input_ids"] == tokenizer(composed)["input_ids"]
