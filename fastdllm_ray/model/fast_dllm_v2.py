"""The Fast-dLLM v2 network (Efficient-Large-Model/Fast_dLLM_v2_7B): Qwen2.5's layout and
parameter names (grouped-query attention with q/k/v biases), read from config.json model_type
"Fast_dLLM_Qwen"; a block-diffusion model, so its attention is causal between blocks of
`bd_size` tokens and bidirectional inside one. The computation is the shared block
(model/transformer.py); the engine gives each forward its attention pattern (a block-causal
prefill, or a block over the kept K/V), the plain `forward` is block-causal.

The mask id is config.json's `mask_token_id` when it has one, else the tokenizer's `|<MASK>|`
(model/checkpoint.py reads it from the tokenizer files); the turn ends with `<|im_end|>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fastdllm_ray.model.dream import DreamModel
from fastdllm_ray.model.dream_config import DreamConfig


@dataclass(frozen=True)
class FastDLLMV2Config(DreamConfig):
    model_type: ClassVar[str] = "Fast_dLLM_Qwen"
    architectures: ClassVar[tuple[str, ...]] = ("Fast_dLLM_QwenForCausalLM",)
    mask_token_text: ClassVar[str] = "|<MASK>|"  # the tokenizer's mask token, when config.json names no id

    bd_size: int = 32  # the block size it was trained with

    @property
    def causal_block(self) -> int:
        """Block size of the plain forward's block-causal attention."""
        return self.bd_size

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FastDLLMV2Config":
        bd_size = raw.get("bd_size", 32)
        if isinstance(bd_size, bool) or not isinstance(bd_size, int) or bd_size < 1:
            raise ValueError(f"config.json bd_size: {bd_size!r} is not a positive integer")
        return cls(**cls.qwen2_fields(raw), bd_size=bd_size)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "bd_size": self.bd_size}


class FastDLLMV2Model(DreamModel):
    config_class = FastDLLMV2Config
