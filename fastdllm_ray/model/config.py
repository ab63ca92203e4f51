"""LLaDAConfig: the subset of the checkpoint's config.json that our network implements.

Reads the real LLaDA config (model_type "llada", OLMo-style field names) and refuses,
naming the field, any setting that would make our network compute something else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# field -> the only value we implement (the real LLaDA-8B / LLaDA-1.5 values).
_REQUIRED_VALUES: dict[str, Any] = {
    "alibi": False,
    "rope": True,
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "include_bias": False,
    "include_qkv_bias": False,
    "attention_layer_norm": False,
    "input_emb_norm": False,
    "scale_logits": False,
    "bias_for_layer_norm": False,
    "layer_norm_with_affine": True,
    "block_group_size": 1,
}


class SharedConfig:
    """What both families' configs derive alike from their fields."""

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def end_token_ids(self) -> tuple[int, ...]:
        ids = [] if self.eos_token_id is None else [self.eos_token_id]
        return tuple(dict.fromkeys(ids + list(self.extra_end_token_ids)))

    @classmethod
    def from_file(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class LLaDAConfig(SharedConfig):
    model_type: ClassVar[str] = "llada"
    qkv_bias: ClassVar[bool] = False

    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden_size: int
    vocab_size: int
    embedding_size: int
    max_sequence_length: int
    mask_token_id: int
    eos_token_id: int | None = None
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    weight_tying: bool = False
    extra_end_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LLaDAConfig":
        if raw.get("model_type") != "llada":
            raise ValueError(f"config.json model_type: {raw.get('model_type')!r} is not 'llada'")
        for name, wanted in _REQUIRED_VALUES.items():
            if name in raw and raw[name] is not None and raw[name] != wanted:
                raise ValueError(
                    f"config.json {name}: {raw[name]!r} is not supported (only {wanted!r})"
                )
        for name in ("d_model", "n_heads", "n_layers", "mask_token_id"):
            if name not in raw:
                raise ValueError(f"config.json {name}: missing")
        n_heads = raw["n_heads"]
        n_kv_heads = raw.get("n_kv_heads") or n_heads
        if raw.get("multi_query_attention"):
            n_kv_heads = 1
        if raw["d_model"] % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"config.json n_heads/n_kv_heads: {n_heads}/{n_kv_heads} do not divide d_model "
                f"{raw['d_model']} and each other"
            )
        mlp_hidden = raw.get("mlp_hidden_size") or raw.get("mlp_ratio", 4) * raw["d_model"]
        vocab = raw.get("vocab_size")
        embedding = raw.get("embedding_size") or vocab
        if vocab is None or embedding is None:
            raise ValueError("config.json vocab_size: missing")
        extra = raw.get("end_token_ids") or []
        return cls(
            d_model=raw["d_model"],
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            n_layers=raw["n_layers"],
            mlp_hidden_size=mlp_hidden,
            vocab_size=vocab,
            embedding_size=embedding,
            max_sequence_length=raw.get("max_sequence_length", 4096),
            mask_token_id=raw["mask_token_id"],
            eos_token_id=raw.get("eos_token_id"),
            rope_theta=float(raw.get("rope_theta", 10000.0)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
            weight_tying=bool(raw.get("weight_tying", False)),
            extra_end_token_ids=tuple(extra),
        )

    def to_dict(self) -> dict[str, Any]:
        """A config.json in the real checkpoint's format."""
        out: dict[str, Any] = dict(_REQUIRED_VALUES)
        out.update(
            model_type="llada",
            architectures=["LLaDAModelLM"],
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            n_layers=self.n_layers,
            mlp_hidden_size=self.mlp_hidden_size,
            mlp_ratio=max(1, self.mlp_hidden_size // self.d_model),
            vocab_size=self.vocab_size,
            embedding_size=self.embedding_size,
            max_sequence_length=self.max_sequence_length,
            mask_token_id=self.mask_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.eos_token_id,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            weight_tying=self.weight_tying,
            rope_full_precision=True,
            multi_query_attention=None,
        )
        if self.extra_end_token_ids:
            out["end_token_ids"] = list(self.extra_end_token_ids)
        return out
