"""The LLaDA network: a bidirectional Llama-style transformer, parameter names as in the
real checkpoint (`transformer.blocks.N.q_proj` ...). The computation is shared with Dream
(model/transformer.py); this file names LLaDA's weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdllm_ray.model.config import LLaDAConfig
from fastdllm_ray.model.transformer import (DiffusionTransformer, RMSNorm, TransformerBlock, apply_rope,
                                            attention_inputs, attention_out_and_mlp, normed_projection, project,
                                            rms_norm, rope_tables)

__all__ = ["LLaDABlock", "LLaDAModel", "RMSNorm", "apply_rope", "attention_inputs", "attention_out_and_mlp",
           "normed_projection", "project", "rms_norm", "rope_tables"]


class LLaDABlock(TransformerBlock):
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

    def qkv_layers(self) -> list[nn.Linear]:
        return [self.q_proj, self.k_proj, self.v_proj]

    def gate_up_layers(self) -> list[nn.Linear]:
        return [self.ff_proj, self.up_proj]

    def out_layer(self) -> nn.Linear:
        return self.attn_out

    def down_layer(self) -> nn.Linear:
        return self.ff_out

    def norms(self) -> tuple[RMSNorm, RMSNorm]:
        return self.attn_norm, self.ff_norm


class LLaDAModel(DiffusionTransformer):
    config_class = LLaDAConfig
    checkpoint_prefix = "model."  # the real checkpoint's names: model.transformer.blocks.N...

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
    def embedding(self) -> nn.Embedding:
        return self.transformer["wte"]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer["blocks"]

    @property
    def final_norm(self) -> RMSNorm:
        return self.transformer["ln_f"]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.weight_tying:
            return F.linear(x, self.transformer["wte"].weight)
        return self.transformer["ff_out"](x)
