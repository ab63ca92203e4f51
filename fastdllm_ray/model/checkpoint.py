"""Checkpoint I/O in the real LLaDA and Dream formats: config.json (its model_type says which
network) + *.safetensors (one file, or shards with model.safetensors.index.json) + tokenizer
files, from a local directory or the HF hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fastdllm_ray.model.fp8 import check_supported as check_fp8_supported
from fastdllm_ray.model.fp8 import quantize_model
from fastdllm_ray.model.transformer import DiffusionTransformer, network_for

_HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.json", "*.model", "*.txt"]


def resolve_checkpoint(path_or_id: str | Path) -> Path:
    """A local directory as is; anything else is taken as a hub id and downloaded (cached)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(path_or_id).startswith((".", "/", "~")):
        raise FileNotFoundError(f"model: {path_or_id} is not a checkpoint directory")
    from huggingface_hub import snapshot_download

    # hub errors do not say which id they were about, nor that a local path was also tried
    try:
        return Path(snapshot_download(str(path_or_id), allow_patterns=_HUB_PATTERNS))
    except ValueError as exc:  # an invalid repo id
        raise ValueError(f"model: {path_or_id!r} is neither a local directory nor a valid hub id ({exc})") from exc
    except OSError as exc:  # not found, offline, network down
        raise FileNotFoundError(
            f"model: {path_or_id!r} is not a local directory and could not be fetched from the hub "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def generation_config(directory: Path) -> dict:
    """The checkpoint's generation_config.json ({} without one): its end tokens and, where a
    model wants other defaults than the server's (a short answer length), max_new_tokens."""
    path = Path(directory) / "generation_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _end_tokens_from_generation_config(directory: Path) -> tuple[int, ...]:
    eos = generation_config(directory).get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (eos,)


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / name for name in shards]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"model: no *.safetensors in {directory}")
    return files


def load_state_dict(directory: Path, expected: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Reads every expected tensor by its checkpoint name (`prefix` + ours); names what is
    missing or misshapen."""
    found: dict[str, torch.Tensor] = {}
    for file in _weight_files(directory):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                name = key[len(prefix):] if key.startswith(prefix) else key
                if name in expected:
                    found[name] = f.get_tensor(key)
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ValueError(f"checkpoint {directory}: missing tensor {prefix}{missing[0]}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for name, tensor in found.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"checkpoint {directory}: tensor {prefix}{name} has shape "
                f"{tuple(tensor.shape)}, config.json implies {tuple(expected[name].shape)}"
            )
    return found


def load_config(path_or_id: str | Path):
    """A checkpoint's network config, of the family its config.json's model_type names, as
    `load_model` builds it (end tokens of generation_config.json included). Serving reads a
    model's limits from it (max_sequence_length, embedding_size, mask_token_id) without
    loading the weights."""
    directory = resolve_checkpoint(path_or_id)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"model: {directory} has no config.json")
    raw = json.loads(config_path.read_text())
    raw["end_token_ids"] = list(raw.get("end_token_ids") or []) + list(_end_tokens_from_generation_config(directory))
    config_class = network_for(raw.get("model_type")).config_class
    mask_text = getattr(config_class, "mask_token_text", None)
    if raw.get("mask_token_id") is None and mask_text is not None:  # a family whose config may not say it
        mask_id = added_tokens(directory).get(mask_text)
        if mask_id is None:
            raise ValueError(f"config.json mask_token_id: missing, and the tokenizer files of {directory} have "
                             f"no {mask_text!r} token")
        raw["mask_token_id"] = mask_id
    return config_class.from_dict(raw)


def load_model(
    path_or_id: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> DiffusionTransformer:
    """Loads a checkpoint (local directory or hub id; config.json's model_type says which
    family's network) into our network, in eval mode.

    dtype defaults to float32 on the CPU and bfloat16 elsewhere. "fp8": the blocks' linear
    weights quantized to float8 e4m3 with per-channel scales, the rest in that default dtype
    (model/fp8.py: FP8 kernels on GPUs of compute capability >= 8.9, emulated on the CPU).
    """
    device = torch.device(device)
    fp8 = dtype == "fp8"
    if fp8:
        check_fp8_supported(device)  # before reading gigabytes of weights
        dtype = None
    elif isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype: {dtype!r} is not a torch dtype nor 'fp8'")
        dtype = getattr(torch, dtype)
    directory = resolve_checkpoint(path_or_id)
    config = load_config(directory)
    model_class = network_for(config.model_type)
    dtype = dtype or (torch.float32 if device.type == "cpu" else torch.bfloat16)
    with torch.device("meta"):
        model = model_class(config)
    state = load_state_dict(directory, model.state_dict(), model.checkpoint_prefix)
    model.load_state_dict(state, assign=True)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    if fp8:
        quantize_model(model)
    model.end_token_ids = tuple(dict.fromkeys(config.end_token_ids + _tokenizer_end_ids(directory)))
    return model


def added_tokens(directory: Path) -> dict[str, int]:
    """The tokenizer's added (special) tokens by text: from tokenizer.json (a fast tokenizer) or,
    where a checkpoint ships only vocab.json + merges.txt (Dream's), tokenizer_config.json."""
    added: dict[str, int] = {}
    tok, tok_config = Path(directory) / "tokenizer.json", Path(directory) / "tokenizer_config.json"
    if tok_config.exists():
        decoder = json.loads(tok_config.read_text()).get("added_tokens_decoder", {})
        added.update({t.get("content"): int(i) for i, t in decoder.items()})
    if tok.exists():
        added.update({t.get("content"): t["id"] for t in json.loads(tok.read_text()).get("added_tokens", [])})
    return added


def _tokenizer_end_ids(directory: Path) -> tuple[int, ...]:
    """LLaDA's chat turns end with <|eot_id|>, Dream's and Fast-dLLM v2's with <|im_end|>;
    documents with <|endoftext|>."""
    added = added_tokens(directory)
    wanted = ("<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eos|>")
    return tuple(sorted({added[w] for w in wanted if w in added}))


def save_checkpoint(
    model: DiffusionTransformer, directory: str | Path, max_shard_bytes: int | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Writes config.json and safetensors (sharded with an index when max_shard_bytes is set)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    tensors = {
        model.checkpoint_prefix + name: t.detach().to(dtype or t.dtype).contiguous().cpu()
        for name, t in model.state_dict().items()
    }
    if max_shard_bytes is None:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return directory


# Tokenizers that checkpoints ship as custom code (auto_map), and the transformers tokenizer
# that does the same: Dream's tokenization_dream.py is Qwen2's byte-level BPE (the same
# pre-tokenizer pattern, NFC normalisation, vocab.json + merges.txt, no spaces added around
# special tokens when decoding).
BUILT_IN_EQUIVALENT = {"DreamTokenizer": "qwen2"}


def load_tokenizer(path_or_id: str | Path):
    """The checkpoint's tokenizer (with its chat template) through transformers, never running
    the checkpoint's own code: a tokenizer class from BUILT_IN_EQUIVALENT is read by its
    transformers equivalent, any other custom one is refused by transformers with an error."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = resolve_checkpoint(path_or_id)
    config_file = Path(directory, "tokenizer_config.json")
    declared = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.exists() else None
    kwargs = {"tokenizer_type": BUILT_IN_EQUIVALENT[declared]} if declared in BUILT_IN_EQUIVALENT else {}
    # transformers reads config.json on the way and warns that it knows no model type "llada"
    # (or "Dream"): true, and irrelevant to the tokenizer
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
