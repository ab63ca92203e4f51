"""Our Fast-dLLM v2 network reads the real checkpoint format (model_type Fast_dLLM_Qwen, Qwen2
names, no custom code run) and reproduces the reference modeling code's logits: a block-causal
prefill, and a block computed over the prefill's kept K/V, plain and through the paged cache."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from fastdllm_ray.model import PagedForward, PagedKVCache, load_model, save_checkpoint
from fastdllm_ray.model.checkpoint import load_config
from fastdllm_ray.model.fast_dllm_v2 import FastDLLMV2Model
from fastdllm_ray.model.paged_attention import PagedBatch
from tests.conftest import V2_CHECKPOINT

TOLERANCE = 1e-5


def test_config_is_recognised_with_its_block_size_mask_and_stop_id(v2_model, v2_reference):
    assert isinstance(v2_model, FastDLLMV2Model)
    cfg = v2_model.config
    assert (cfg.bd_size, cfg.causal_block, cfg.mask_token_id) == (32, 32, v2_reference["mask_id"])
    assert cfg.n_kv_heads < cfg.n_heads
    assert v2_model.end_token_ids == (v2_reference["stop_id"],)


def test_block_causal_prefill_matches_reference_logits(v2_model, v2_reference):
    check = v2_reference["logits_check"]
    logits = v2_model(torch.tensor([check["prefill_input_ids"]]), causal_block=check["prefill_block_size"])
    assert torch.allclose(logits[0], torch.tensor(check["prefill_logits"]), atol=TOLERANCE, rtol=0)


def test_a_block_over_the_prefill_matches_reference_step_logits(v2_model, v2_reference):
    # the step's block is the sequence's last block: block-causal attention gives it the whole prefix
    check = v2_reference["logits_check"]
    ids = torch.tensor([check["prefill_input_ids"] + check["step_input_ids"]])
    logits = v2_model(ids)[0, check["step_first_position"]:]
    assert torch.allclose(logits, torch.tensor(check["step_logits"]), atol=TOLERANCE, rtol=0)


def _paged(cache: PagedKVCache, start: int, end: int, keys: int, causal: int, pages: list[int]):
    table = torch.tensor([pages], dtype=torch.int32)
    positions = torch.arange(start, end)
    rows = table[0, positions // cache.page_size].long() * cache.page_size + positions % cache.page_size
    cu = [0, end - start]
    batch = PagedBatch(torch.tensor(cu), torch.tensor([keys]), table, cache.page_size,
                       host=(cu, [keys], [start], [causal]))
    return positions, PagedForward(cache, rows, batch)


def test_paged_prefill_then_cached_block_step_match_reference(v2_model, v2_reference):
    check, cfg = v2_reference["logits_check"], v2_model.config
    cache = PagedKVCache(cfg.n_layers, 8, 16, cfg.n_kv_heads, cfg.head_dim, torch.float32, "cpu")
    pages = [6, 1, 3, 0, 7, 2]  # out of order: the page table decides
    positions, paged = _paged(cache, 0, 64, 64, 32, pages)
    prefill = v2_model.logits(v2_model.hidden_states(torch.tensor(check["prefill_input_ids"]), positions, paged))
    assert torch.allclose(prefill, torch.tensor(check["prefill_logits"]), atol=TOLERANCE, rtol=0)
    positions, paged = _paged(cache, 64, 96, 96, 0, pages)
    step = v2_model.logits(v2_model.hidden_states(torch.tensor(check["step_input_ids"]), positions, paged))
    assert torch.allclose(step, torch.tensor(check["step_logits"]), atol=TOLERANCE, rtol=0)


def test_saved_checkpoint_keeps_the_real_names_and_format_and_loads_sharded(v2_model, v2_reference, tmp_path):
    save_checkpoint(v2_model, tmp_path, max_shard_bytes=100_000)
    names = set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"])
    with safe_open(str(V2_CHECKPOINT / "model.safetensors"), framework="pt") as f:
        assert names == set(f.keys())  # model.layers.0.self_attn.q_proj.bias, lm_head.weight, ...
    raw = json.loads((tmp_path / "config.json").read_text())
    assert (raw["model_type"], raw["architectures"], raw["bd_size"]) == ("Fast_dLLM_Qwen",
                                                                         ["Fast_dLLM_QwenForCausalLM"], 32)
    ids = torch.tensor([v2_reference["logits_check"]["prefill_input_ids"]])
    assert torch.equal(load_model(tmp_path)(ids), v2_model(ids))


def test_mask_id_comes_from_the_tokenizer_when_config_has_none(v2_model, tmp_path):
    save_checkpoint(v2_model, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["mask_token_id"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="mask_token_id"):
        load_config(tmp_path)
    decoder = {"500": {"content": "|<MASK>|", "special": True}, "201": {"content": "<|im_end|>", "special": True}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
    assert load_config(tmp_path).mask_token_id == 500
    assert 201 in load_model(tmp_path).end_token_ids  # <|im_end|> ends a turn


@pytest.mark.parametrize("bd_size", [0, "32", True])
def test_a_bad_block_size_is_refused_by_name(v2_model, tmp_path, bd_size):
    save_checkpoint(v2_model, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["bd_size"] = bd_size
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="bd_size"):
        load_model(tmp_path)
