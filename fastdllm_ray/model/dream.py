"""The Dream network (Dream-v0-Instruct-7B / Base-7B): Qwen2.5-shaped, bidirectional, with
q/k/v biases and grouped-query attention; parameter names as in the real checkpoint
(`model.layers.N.self_attn.q_proj` ...). The computation is shared with LLaDA
(model/transformer.py); this file names Dream's weights.

Dream predicts position i from the hidden state at i - 1 (its logits are shifted, as in an
autoregressive model); that is the decoding policy's business (decoding/dream.py), not the
network's: `forward` returns each position's own logits, as the reference's model does.
"""

from __future__ import annotations

from torch import nn

from fastdllm_ray.model.dream_config import DreamConfig
from fastdllm_ray.model.transformer import DecoderLayout, RMSNorm, TransformerBlock


class _Attention(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        d, kv_dim = cfg.d_model, cfg.n_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(d, d, bias=True)
        self.k_proj = nn.Linear(d, kv_dim, bias=True)
        self.v_proj = nn.Linear(d, kv_dim, bias=True)
        self.o_proj = nn.Linear(d, d, bias=False)


class _MLP(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden_size, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden_size, cfg.d_model, bias=False)


class DreamBlock(TransformerBlock):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.self_attn = _Attention(cfg)
        self.mlp = _MLP(cfg)

    def qkv_layers(self) -> list[nn.Linear]:
        return [self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj]

    def gate_up_layers(self) -> list[nn.Linear]:
        return [self.mlp.gate_proj, self.mlp.up_proj]

    def out_layer(self) -> nn.Linear:
        return self.self_attn.o_proj

    def down_layer(self) -> nn.Linear:
        return self.mlp.down_proj

    def norms(self) -> tuple[RMSNorm, RMSNorm]:
        return self.input_layernorm, self.post_attention_layernorm


class DreamModel(DecoderLayout):
    config_class = DreamConfig
    checkpoint_prefix = ""  # the checkpoint's names are ours: model.layers.N..., lm_head

    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__(cfg, [DreamBlock(cfg) for _ in range(cfg.n_layers)])
