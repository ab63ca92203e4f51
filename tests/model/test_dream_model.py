"""Our Dream network reproduces the reference modeling code's logits from the real
checkpoint format, and its cached forward (grouped K/V heads, q/k/v biases) computes what
the plain forward does."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from fastdllm_ray.model import DreamModel, PagedKVCache, load_model, save_checkpoint
from tests.conftest import DREAM_CHECKPOINT
from tests.model.test_forward_logits import paged_forward


def test_dream_config_is_recognised_and_logits_match_reference(dream_model, dream_reference):
    assert isinstance(dream_model, DreamModel)
    assert dream_model.config.n_kv_heads < dream_model.config.n_heads
    check = dream_reference["logits_check"]
    logits = dream_model(torch.tensor(check["input_ids"]))
    assert torch.allclose(logits, torch.tensor(check["logits"]), atol=1e-5, rtol=0)


def test_fused_projections_with_biases_compute_the_same_logits(dream_reference):
    model = load_model(DREAM_CHECKPOINT)
    ids = torch.tensor(dream_reference["logits_check"]["input_ids"])
    before = model(ids)
    for block in model.blocks:
        block.fuse_projections()
    assert model.blocks[0].fused_qkv_bias  # the q/k/v biases travel with the fused matrix
    assert torch.allclose(model(ids), before, atol=1e-5, rtol=0)


def test_saved_checkpoint_has_the_real_names_and_loads_sharded(dream_model, dream_reference, tmp_path):
    save_checkpoint(dream_model, tmp_path, max_shard_bytes=100_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    names = set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"])
    with safe_open(str(DREAM_CHECKPOINT / "model.safetensors"), framework="pt") as f:
        assert names == set(f.keys())  # e.g. model.layers.0.self_attn.q_proj.bias, lm_head.weight
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "Dream"
    ids = torch.tensor(dream_reference["logits_check"]["input_ids"])
    assert torch.allclose(load_model(tmp_path)(ids), dream_model(ids), atol=0, rtol=0)


@pytest.mark.parametrize("field,value", [("hidden_act", "gelu"), ("use_sliding_window", True),
                                         ("rope_scaling", {"type": "linear", "factor": 2.0})])
def test_unsupported_dream_setting_is_refused_by_name(tmp_path, field, value):
    save_checkpoint(load_model(DREAM_CHECKPOINT), tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw[field] = value
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=field):
        load_model(tmp_path)


def test_unknown_model_type_is_refused_by_name(tmp_path):
    save_checkpoint(load_model(DREAM_CHECKPOINT), tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["model_type"] = "qwen2"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="model_type"):
        load_model(tmp_path)


def test_dream_cached_slice_matches_its_full_forward(dream_model, dream_reference):
    cfg = dream_model.config
    ids = torch.tensor(dream_reference["logits_check"]["input_ids"][1])
    cache = PagedKVCache(cfg.n_layers, 8, 16, cfg.n_kv_heads, cfg.head_dim, torch.float32, "cpu")
    positions, paged = paged_forward(cache, [(0, 24)], [24], [[3, 6]])
    full = dream_model.logits(dream_model.hidden_states(ids, positions, paged))
    assert torch.allclose(full, dream_model(ids[None])[0], atol=1e-5, rtol=0)
    positions, paged = paged_forward(cache, [(8, 16)], [24], [[3, 6]])
    part = dream_model.logits(dream_model.hidden_states(ids[8:16], positions, paged))
    assert torch.allclose(part, full[8:16], atol=1e-5, rtol=0)
