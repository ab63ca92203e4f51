"""LLaDA2Config: the subset of a LLaDA2.0 checkpoint's config.json (model_type "llada2_moe",
inclusionAI/LLaDA2.0-mini and -flash) that our network implements, under the attribute names
the cache and the engine read (d_model, n_heads, n_kv_heads, head_dim, n_layers, ...).

Refuses, naming the field, what would make our network compute something else, or what the
reference code would fail on (experts that do not split into groups, a top-k larger than the
chosen groups hold). The reference ignores `score_function`, `norm_topk_prob`,
`moe_router_enable_expert_bias`, `router_dtype`, `rotary_dim`, `use_rmsnorm` and a few more
(it hard-codes sigmoid scores, the selection bias, normalisation, float32 routing and
head_dim x partial_rotary_factor rotary dims): so do we.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastdllm_ray.model.config import SharedConfig

# field -> the only value we implement (LLaDA2.0-mini's and -flash's)
_REQUIRED_VALUES: dict[str, Any] = {
    "hidden_act": "silu",
    "use_qkv_bias": False,
    "use_bias": False,
    "use_qk_norm": True,
    "rope_scaling": None,
}
DEFAULT_BLOCK = 32  # the reference generate's block_length: the plain forward's block-causal size


def _positive_int(raw: dict[str, Any], name: str, default: int | None = None, minimum: int = 1) -> int:
    value = raw.get(name, default)
    if value is None:
        raise ValueError(f"config.json {name}: missing")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config.json {name}: {value!r} is not an integer >= {minimum}")
    return value


@dataclass(frozen=True)
class LLaDA2Config(SharedConfig):
    model_type: ClassVar[str] = "llada2_moe"
    architectures: ClassVar[tuple[str, ...]] = ("LLaDA2MoeModelLM",)
    mask_token_text: ClassVar[str] = "<|mask|>"  # the tokenizer's mask token, when config.json names no id

    d_model: int
    n_heads: int
    n_kv_heads: int
    head_size: int
    n_layers: int
    mlp_hidden_size: int  # the dense layers' SwiGLU
    moe_intermediate_size: int  # one expert's SwiGLU
    num_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    num_shared_experts: int
    first_k_dense_replace: int
    routed_scaling_factor: float
    partial_rotary_factor: float
    vocab_size: int
    max_sequence_length: int
    mask_token_id: int
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    rope_theta: float = 600000.0
    rms_norm_eps: float = 1e-6
    weight_tying: bool = False
    extra_end_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def head_dim(self) -> int:
        return self.head_size

    @property
    def rotary_dim(self) -> int:
        """Leading dims of each head that rotate (the reference's int(head_dim * partial_rotary_factor))."""
        return int(self.head_size * self.partial_rotary_factor)

    @property
    def embedding_size(self) -> int:
        return self.vocab_size

    @property
    def causal_block(self) -> int:
        """Block size of the plain forward's block-causal attention (the engine sets its own)."""
        return DEFAULT_BLOCK

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LLaDA2Config":
        if raw.get("model_type") != cls.model_type:
            raise ValueError(f"config.json model_type: {raw.get('model_type')!r} is not {cls.model_type!r}")
        for name, wanted in _REQUIRED_VALUES.items():
            if name in raw and raw[name] != wanted:
                raise ValueError(f"config.json {name}: {raw[name]!r} is not supported (only {wanted!r})")
        d_model = _positive_int(raw, "hidden_size")
        n_heads = _positive_int(raw, "num_attention_heads")
        n_kv_heads = raw.get("num_key_value_heads") or n_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"config.json num_key_value_heads: {n_kv_heads} does not divide "
                             f"num_attention_heads {n_heads}")
        head_size = raw.get("head_dim") or d_model // n_heads
        factor = raw.get("partial_rotary_factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
            raise ValueError(f"config.json partial_rotary_factor: {factor!r} is not in (0, 1]")
        rotary = int(head_size * factor)
        if rotary < 2 or rotary % 2:
            raise ValueError(f"config.json partial_rotary_factor: {factor} gives {rotary} rotary dims of "
                             f"head_dim {head_size}; rotate-half needs an even number >= 2")
        n_layers = _positive_int(raw, "num_hidden_layers")
        experts = _positive_int(raw, "num_experts")
        n_group = _positive_int(raw, "n_group", 1)
        if experts % n_group or experts // n_group < 2:
            raise ValueError(f"config.json n_group: {n_group} groups do not split num_experts {experts} into "
                             "equal groups of at least 2 (a group scores by its two best experts)")
        topk_group = _positive_int(raw, "topk_group", 1)
        if topk_group > n_group:
            raise ValueError(f"config.json topk_group: {topk_group} is more than n_group {n_group}")
        per_token = _positive_int(raw, "num_experts_per_tok")
        if per_token > topk_group * (experts // n_group):
            raise ValueError(f"config.json num_experts_per_tok: {per_token} is more than the "
                             f"{topk_group * (experts // n_group)} experts of topk_group {topk_group} groups")
        return cls(
            d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, head_size=head_size, n_layers=n_layers,
            mlp_hidden_size=_positive_int(raw, "intermediate_size"),
            moe_intermediate_size=_positive_int(raw, "moe_intermediate_size"),
            num_experts=experts, num_experts_per_tok=per_token, n_group=n_group, topk_group=topk_group,
            num_shared_experts=_positive_int(raw, "num_shared_experts", 0, minimum=0),
            first_k_dense_replace=_positive_int(raw, "first_k_dense_replace", 0, minimum=0),
            routed_scaling_factor=float(raw.get("routed_scaling_factor", 1.0)),
            partial_rotary_factor=float(factor),
            vocab_size=_positive_int(raw, "vocab_size"),
            max_sequence_length=_positive_int(raw, "max_position_embeddings", 16384),
            mask_token_id=_positive_int(raw, "mask_token_id", minimum=0),
            eos_token_id=raw.get("eos_token_id"),
            pad_token_id=raw.get("pad_token_id"),
            rope_theta=float(raw.get("rope_theta", 600000.0)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            weight_tying=bool(raw.get("tie_word_embeddings", False)),
            extra_end_token_ids=tuple(raw.get("end_token_ids") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """A config.json in the real checkpoint's format (field names of LLaDA2.0-mini's)."""
        out: dict[str, Any] = dict(_REQUIRED_VALUES)
        out.update(
            model_type=self.model_type, architectures=list(self.architectures), hidden_size=self.d_model,
            num_attention_heads=self.n_heads, num_key_value_heads=self.n_kv_heads, head_dim=self.head_size,
            num_hidden_layers=self.n_layers, intermediate_size=self.mlp_hidden_size,
            moe_intermediate_size=self.moe_intermediate_size, num_experts=self.num_experts,
            num_experts_per_tok=self.num_experts_per_tok, n_group=self.n_group, topk_group=self.topk_group,
            num_shared_experts=self.num_shared_experts, first_k_dense_replace=self.first_k_dense_replace,
            routed_scaling_factor=self.routed_scaling_factor, partial_rotary_factor=self.partial_rotary_factor,
            rotary_dim=self.rotary_dim, vocab_size=self.vocab_size, max_position_embeddings=self.max_sequence_length,
            mask_token_id=self.mask_token_id, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
            rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps, tie_word_embeddings=self.weight_tying,
            score_function="sigmoid", norm_topk_prob=True, moe_router_enable_expert_bias=True, router_dtype="fp32",
        )
        return out
