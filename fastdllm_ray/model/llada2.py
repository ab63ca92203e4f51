"""The LLaDA2.0 network (inclusionAI/LLaDA2.0-mini, -flash: config.json model_type
"llada2_moe"), parameter names as in the real checkpoint (`model.word_embeddings`,
`model.layers.N.attention.query_key_value`, `model.layers.N.mlp.experts.E.gate_proj`, ...).

A pre-norm decoder: embedding (unscaled), layers of attention then MLP with residuals, final
RMSNorm, lm_head; the logits at a position predict that position. What differs from the shared
block (model/transformer.py), and lives here: one fused `query_key_value` projection (queries,
then keys, then values, per token), an RMSNorm over head_dim on queries and keys before RoPE,
RoPE on the first head_dim x partial_rotary_factor dims of each head only (frequencies over
those dims), `dense` as output projection, and an MLP that is a dense SwiGLU below
`first_k_dense_replace` and a mixture of experts above (model/llada2_moe.py). The norms, RoPE
arithmetic and the paged cache write / attention are the shared ones.

A block-diffusion model: attention is causal between blocks and bidirectional inside one. The
engine gives each forward its attention pattern (decoding/llada2.py); the plain `forward` is
block-causal with the reference generate's block size unless told otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdllm_ray.model.kv_cache import PagedForward
from fastdllm_ray.model.llada2_config import LLaDA2Config
from fastdllm_ray.model.llada2_moe import MoELayer, SwiGLU
from fastdllm_ray.model.paged_attention import paged_attention
from fastdllm_ray.model.transformer import DecoderLayout, RMSNorm, apply_rope, rms_norm, rope_tables


def attention_inputs(h: torch.Tensor, w_qkv: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor,
                     sin: torch.Tensor, cos: torch.Tensor, n_heads: int, n_kv_heads: int,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, T, H, D], k and v [B, T, H_kv, D] from the normed hidden states h [B, T, d]: the fused
    projection, qk-norm, then RoPE on each head's first sin.shape[-1] dims."""
    B, T, _ = h.shape
    qkv = F.linear(h, w_qkv).view(B, T, n_heads + 2 * n_kv_heads, -1)
    q, k, v = qkv.split([n_heads, n_kv_heads, n_kv_heads], dim=2)
    rotary = sin.shape[-1]
    q = rms_norm(q, q_norm, eps)
    k = rms_norm(k, k_norm, eps)
    q = torch.cat([apply_rope(q[..., :rotary], sin, cos), q[..., rotary:]], dim=-1)
    k = torch.cat([apply_rope(k[..., :rotary], sin, cos), k[..., rotary:]], dim=-1)
    return q, k, v


class _EagerOps:
    attention_inputs = staticmethod(attention_inputs)


class Attention(nn.Module):
    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__()
        width = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        self.query_key_value = nn.Linear(cfg.d_model, width, bias=False)
        self.dense = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.query_layernorm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.key_layernorm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)


class LLaDA2Layer(nn.Module):
    ops = _EagerOps  # swapped for torch.compile'd versions by LLaDA2Model.compile_blocks()

    def __init__(self, cfg: LLaDA2Config, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.attention = Attention(cfg)
        self.mlp = MoELayer(cfg) if cfg.is_moe_layer(layer) else SwiGLU(cfg.d_model, cfg.mlp_hidden_size)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, layer: int, key_mask=None,
                paged: PagedForward | None = None) -> torch.Tensor:
        """x [B, T, d]. Plain (paged None): each row attends to its own tokens where `key_mask`
        allows. Paged (B = 1, the packed queries): K/V written to the cache first, then each
        sequence's queries attend to its pages."""
        cfg, attn = self.cfg, self.attention
        B, T, _ = x.shape
        h = rms_norm(x, self.input_layernorm.weight, cfg.rms_norm_eps)
        q, k, v = self.ops.attention_inputs(h, attn.query_key_value.weight, attn.query_layernorm.weight,
                                            attn.key_layernorm.weight, sin, cos, cfg.n_heads, cfg.n_kv_heads,
                                            cfg.rms_norm_eps)
        if paged is not None:
            paged.write(layer, k, v)
            out = paged_attention(q.reshape(B * T, cfg.n_heads, cfg.head_dim), *paged.cache.layer(layer),
                                  paged.batch)
        else:
            keys, values = k.transpose(1, 2), v.transpose(1, 2)
            if cfg.n_kv_heads != cfg.n_heads:
                keys = keys.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
                values = values.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=key_mask).transpose(1, 2)
        x = x + attn.dense(out.reshape(B, T, cfg.n_heads * cfg.head_dim))
        return x + self.mlp(rms_norm(x, self.post_attention_layernorm.weight, cfg.rms_norm_eps))


class LLaDA2Model(DecoderLayout):
    config_class = LLaDA2Config
    checkpoint_prefix = ""  # the checkpoint's names are ours: model.layers.N..., lm_head
    embedding_name = "word_embeddings"

    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__(cfg, [LLaDA2Layer(cfg, i) for i in range(cfg.n_layers)])

    def compile_blocks(self, enabled: bool = True) -> None:
        """Fuses the attention inputs' elementwise work (qk-norm, partial RoPE) with torch.compile
        on CUDA; the router and the grouped expert GEMMs run as they are."""

        class _CompiledOps:
            attention_inputs = staticmethod(torch.compile(attention_inputs, dynamic=True))

        for block in self.blocks:
            block.ops = _CompiledOps if enabled else _EagerOps

    def rope(self, positions: torch.Tensor):
        """Rotary tables over the first `rotary_dim` dims of each head only (partial rotary)."""
        return rope_tables(positions, self.config.rotary_dim, self.config.rope_theta)
