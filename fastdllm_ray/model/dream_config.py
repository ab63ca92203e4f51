"""DreamConfig: the subset of a Dream checkpoint's config.json (model_type "Dream", Qwen2
field names) that our network implements, under the same attribute names as LLaDAConfig so
that the shared block, the cache and the engine read either.

Refuses, naming the field, any setting that would make our network compute something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastdllm_ray.model.config import SharedConfig

MODEL_TYPE = "Dream"
# field -> the only value we implement (Dream-v0-Instruct-7B / Dream-v0-Base-7B's values)
_REQUIRED_VALUES: dict[str, Any] = {
    "hidden_act": "silu",
    "use_sliding_window": False,
    "rope_scaling": None,
}


@dataclass(frozen=True)
class DreamConfig(SharedConfig):
    model_type: ClassVar[str] = MODEL_TYPE
    qkv_bias: ClassVar[bool] = True

    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden_size: int
    vocab_size: int
    max_sequence_length: int
    mask_token_id: int
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    weight_tying: bool = False
    extra_end_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def embedding_size(self) -> int:
        return self.vocab_size

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "DreamConfig":
        return cls(**cls.qwen2_fields(raw))

    @classmethod
    def qwen2_fields(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Our fields from a Qwen2-style config.json (Dream's, and families built on Qwen2.5)."""
        if raw.get("model_type") != cls.model_type:
            raise ValueError(f"config.json model_type: {raw.get('model_type')!r} is not {cls.model_type!r}")
        for name, wanted in _REQUIRED_VALUES.items():
            if raw.get(name, wanted) != wanted:
                raise ValueError(f"config.json {name}: {raw[name]!r} is not supported (only {wanted!r})")
        for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                     "vocab_size", "mask_token_id"):
            if raw.get(name) is None:
                raise ValueError(f"config.json {name}: missing")
        n_heads = raw["num_attention_heads"]
        n_kv_heads = raw.get("num_key_value_heads") or n_heads
        if raw["hidden_size"] % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"config.json num_attention_heads/num_key_value_heads: {n_heads}/{n_kv_heads} do not divide "
                f"hidden_size {raw['hidden_size']} and each other")
        return dict(
            d_model=raw["hidden_size"],
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            n_layers=raw["num_hidden_layers"],
            mlp_hidden_size=raw["intermediate_size"],
            vocab_size=raw["vocab_size"],
            max_sequence_length=raw.get("max_position_embeddings", 32768),
            mask_token_id=raw["mask_token_id"],
            eos_token_id=raw.get("eos_token_id"),
            pad_token_id=raw.get("pad_token_id"),
            bos_token_id=raw.get("bos_token_id"),
            rope_theta=float(raw.get("rope_theta", 1000000.0)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            weight_tying=bool(raw.get("tie_word_embeddings", False)),
            extra_end_token_ids=tuple(raw.get("end_token_ids") or ()),
        )

    architectures: ClassVar[tuple[str, ...]] = ("DreamModel",)

    def to_dict(self) -> dict[str, Any]:
        """A config.json in the real checkpoint's format."""
        out: dict[str, Any] = dict(_REQUIRED_VALUES)
        out.update(
            model_type=self.model_type,
            architectures=list(self.architectures),
            hidden_size=self.d_model,
            num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_kv_heads,
            num_hidden_layers=self.n_layers,
            intermediate_size=self.mlp_hidden_size,
            vocab_size=self.vocab_size,
            max_position_embeddings=self.max_sequence_length,
            mask_token_id=self.mask_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.weight_tying,
            sliding_window=None,
            attention_dropout=0.0,
            torch_dtype="float32",
        )
        return out
