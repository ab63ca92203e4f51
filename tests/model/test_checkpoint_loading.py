"""Checkpoints in the real LLaDA format (config.json + safetensors, single or sharded) load
back into the same network; broken ones fail with an error that names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastdllm_ray.model import LLaDAConfig, LLaDAModel, load_model, save_checkpoint

TOKENS = torch.tensor([[1, 5, 9, 2, 60, 61, 61, 61], [7, 7, 3, 0, 61, 61, 61, 61]])


def tiny_model(weight_tying: bool = False) -> LLaDAModel:
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=64,
                      embedding_size=64, max_sequence_length=128, mask_token_id=61, eos_token_id=62,
                      weight_tying=weight_tying)
    model = LLaDAModel(cfg).eval()
    with torch.no_grad():  # RMSNorm weights start at 1: make them matter
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture
def saved(tmp_path) -> tuple[LLaDAModel, Path]:
    model = tiny_model()
    return model, save_checkpoint(model, tmp_path / "ckpt")


def test_single_file_checkpoint_loads_with_equal_logits(saved):
    model, directory = saved
    assert [p.name for p in directory.glob("*.safetensors")] == ["model.safetensors"]
    loaded = load_model(directory)
    assert loaded.config == model.config
    assert loaded.end_token_ids == (62,)
    assert torch.equal(loaded(TOKENS), model(TOKENS))


def test_tensors_carry_the_real_checkpoint_names(saved):
    names = set(load_file(saved[1] / "model.safetensors"))
    assert "model.transformer.blocks.0.q_proj.weight" in names
    assert "model.transformer.blocks.1.ff_proj.weight" in names
    assert "model.transformer.ff_out.weight" in names
    assert "model.transformer.wte.weight" in names


def test_sharded_checkpoint_with_index_loads_with_equal_logits(tmp_path):
    model = tiny_model()
    directory = save_checkpoint(model, tmp_path / "sharded", max_shard_bytes=16_000)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and shards == {p.name for p in directory.glob("*.safetensors")}
    assert torch.equal(load_model(str(directory))(TOKENS), model(TOKENS))


def test_tied_weights_checkpoint_loads_with_equal_logits(tmp_path):
    model = tiny_model(weight_tying=True)
    loaded = load_model(save_checkpoint(model, tmp_path / "tied"))
    assert torch.equal(loaded(TOKENS), model(TOKENS))


def test_bfloat16_checkpoint_loads_in_the_requested_dtype(saved, tmp_path):
    model, _ = saved
    directory = save_checkpoint(model, tmp_path / "bf16", dtype=torch.bfloat16)
    loaded = load_model(directory, dtype="float32")
    assert loaded.dtype == torch.float32
    assert load_model(directory, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert torch.allclose(loaded(TOKENS), model(TOKENS), atol=0.1)


@pytest.mark.parametrize("field, value", [("alibi", True), ("block_type", "sequential"),
                                          ("layer_norm_type", "default"), ("activation_type", "gelu"),
                                          ("include_bias", True), ("model_type", "llama")])
def test_unsupported_config_feature_is_refused_by_name(saved, field, value):
    directory = saved[1]
    config = json.loads((directory / "config.json").read_text())
    config[field] = value
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=field):
        load_model(directory)


def test_missing_tensor_is_named(saved):
    directory = saved[1]
    tensors = load_file(directory / "model.safetensors")
    del tensors["model.transformer.blocks.1.k_proj.weight"]
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing tensor model\.transformer\.blocks\.1\.k_proj\.weight"):
        load_model(directory)


def test_tensor_of_wrong_shape_is_named(saved):
    directory = saved[1]
    tensors = load_file(directory / "model.safetensors")
    tensors["model.transformer.blocks.0.up_proj.weight"] = torch.zeros(40, 32)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.transformer\.blocks\.0\.up_proj\.weight has shape \(40, 32\)"):
        load_model(directory)


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint"):
        load_model(missing)


def test_directory_without_config_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_directory_without_weights_is_not_a_checkpoint(saved):
    directory = saved[1]
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"\*\.safetensors"):
        load_model(directory)


def test_hub_id_offline_fails_naming_the_id(tmp_path, monkeypatch):
    # A name that is not a local directory goes to huggingface_hub.snapshot_download;
    # offline and with an empty cache it must fail with an error that names the id.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="GSAI-ML/LLaDA-8B-Instruct"):
        load_model("GSAI-ML/LLaDA-8B-Instruct")
