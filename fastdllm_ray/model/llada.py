"""The LLaDA network: a bidirectional Llama-style transformer, parameter names as in the
real checkpoint (`transformer.blocks.N.q_proj` ...), written for batched diffusion decoding.

Positions are explicit ([B, T], -1 for padding) so sequences of different lengths share a
batch; with a CacheView the forward writes its K/V into the cache and attends over the
cached sequence; `logits_index` restricts the output head to the positions being decided.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdllm_ray.model.config import LLaDAConfig
from fastdllm_ray.model.kv_cache import CacheView


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in float32 whatever the weights' dtype, as the reference does
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float):
    """sin, cos of shape [B, T, 1, head_dim] in float32 for absolute positions [B, T]."""
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float) / head_dim
    inv_freq = 1.0 / (theta**exponent)
    freqs = positions.clamp(min=0).float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
    return emb.sin(), emb.cos()


def apply_rope(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    t32 = t.float()
    half = t32.shape[-1] // 2
    rotated = torch.cat((-t32[..., half:], t32[..., :half]), dim=-1)
    return (t32 * cos + rotated * sin).to(t.dtype)


class LLaDABlock(nn.Module):
    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        d, kv_dim = cfg.d_model, cfg.n_kv_heads * cfg.head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv_dim, bias=False)
        self.v_proj = nn.Linear(d, kv_dim, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, d, bias=False)

    def attention(self, x, sin, cos, view: CacheView | None, key_mask, layer: int):
        cfg = self.cfg
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, cfg.n_heads, cfg.head_dim)
        k = self.k_proj(x).view(B, T, cfg.n_kv_heads, cfg.head_dim)
        v = self.v_proj(x).view(B, T, cfg.n_kv_heads, cfg.head_dim)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        if view is None:
            keys, values = k.transpose(1, 2), v.transpose(1, 2)
        else:
            keys, values = view.write_and_read(layer, k, v)
        if cfg.n_kv_heads != cfg.n_heads:
            repeat = cfg.n_heads // cfg.n_kv_heads
            keys = keys.repeat_interleave(repeat, dim=1)
            values = values.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=key_mask)
        return self.attn_out(out.transpose(1, 2).reshape(B, T, cfg.d_model))

    def forward(self, x, sin, cos, view, key_mask, layer: int) -> torch.Tensor:
        x = x + self.attention(self.attn_norm(x), sin, cos, view, key_mask, layer)
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDAModel(nn.Module):
    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.embedding_size, cfg.d_model),
                "blocks": nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.n_layers)),
                "ln_f": RMSNorm(cfg.d_model, cfg.rms_norm_eps),
            }
        )
        if not cfg.weight_tying:
            self.transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)
        self.end_token_ids: tuple[int, ...] = cfg.end_token_ids

    @property
    def device(self) -> torch.device:
        return self.transformer["wte"].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer["wte"].weight.dtype

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.weight_tying:
            return F.linear(x, self.transformer["wte"].weight)
        return self.transformer["ff_out"](x)

    @torch.inference_mode()
    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        view: CacheView | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T or n, V] for tokens [B, T] at positions [B, T] (-1 = padding).

        Without a view, the tokens attend to each other (a plain full forward, padding
        masked); with one, they attend to the cached sequence after writing their own K/V.
        """
        B, T = tokens.shape
        if positions is None:
            positions = torch.arange(T, device=tokens.device).expand(B, T)
        if view is not None:
            key_mask = view.key_mask
        elif bool((positions < 0).any()):
            key_mask = (positions >= 0)[:, None, None, :]
        else:
            key_mask = None
        sin, cos = rope_tables(positions, self.config.head_dim, self.config.rope_theta)
        x = self.transformer["wte"](tokens)
        for layer, block in enumerate(self.transformer["blocks"]):
            x = block(x, sin, cos, view, key_mask, layer)
        if logits_index is not None:
            x = x.gather(1, logits_index[..., None].expand(-1, -1, x.shape[-1]))
        return self.head(self.transformer["ln_f"](x))
