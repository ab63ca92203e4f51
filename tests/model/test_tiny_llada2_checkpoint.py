"""The tiny LLaDA2.0 checkpoint (tests/fixtures/tiny-llada2, make_tiny_llada2.py) loads like the
real one: the MoE network from config.json, the mask and end ids from the tokenizer files (its
config.json names neither, as LLaDA2.0-mini's), the tokenizer through transformers' own fast
class with the role-markup chat template; a chat prompt decodes through the engine, and some
answers end at the end token."""

from __future__ import annotations

import json

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.model import load_model, load_tokenizer
from fastdllm_ray.model.llada2 import LLaDA2Model
from tests.conftest import TINY_LLADA2


def test_tiny_llada2_loads_with_its_chat_template_mask_and_end_token():
    raw = json.loads((TINY_LLADA2 / "config.json").read_text())
    assert raw["model_type"] == "llada2_moe" and "mask_token_id" not in raw and "eos_token_id" not in raw
    declared = json.loads((TINY_LLADA2 / "tokenizer_config.json").read_text())
    assert declared["tokenizer_class"] == "PreTrainedTokenizerFast"
    model, tokenizer = load_model(TINY_LLADA2), load_tokenizer(TINY_LLADA2)
    assert isinstance(model, LLaDA2Model)
    assert tokenizer.convert_ids_to_tokens(model.config.mask_token_id) == "<|mask|>"
    assert [tokenizer.convert_ids_to_tokens(i) for i in model.end_token_ids] == ["<|endoftext|>"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<role>SYSTEM</role>Be brief.<|role_end|><role>HUMAN</role>2+2?<|role_end|><role>ASSISTANT</role>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # the role markup is special tokens, the rest byte-level BPE
    result = generate(model, [ids], GenerationParams(gen_length=16, block_length=8, stop_at_eos=False))[0]
    assert len(result.token_ids) == 16 and model.config.mask_token_id not in result.token_ids


def test_some_answers_end_at_the_end_token_and_others_run_to_their_length():
    model, tokenizer = load_model(TINY_LLADA2), load_tokenizer(TINY_LLADA2)
    prompts = [tokenizer(f"{i}*{i + 3}=")["input_ids"] for i in range(4)] + [tokenizer("What is 0+0?")["input_ids"]]
    results = generate(model, prompts, GenerationParams(gen_length=32, block_length=16))
    reasons = [r.finish_reason for r in results]
    assert "stop" in reasons and "length" in reasons, reasons
    assert all(r.token_ids[-1] in model.end_token_ids for r in results if r.finish_reason == "stop")
