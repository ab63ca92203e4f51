"""What the LLaDA and Dream networks share: a bidirectional pre-norm transformer block
(RMSNorm, grouped-query attention with RoPE, SwiGLU), and the two ways into the network.

Each family names its weights as its real checkpoint does (model/llada.py, model/dream.py);
the block reads them through a few accessors, so the computation, the fused projections,
the compiled elementwise ops and the paged cache path are written once.

Two ways in. `forward(tokens [B, T], positions)`: a plain forward, each row attending to its
own tokens (padding = position -1). `hidden_states(tokens [N], positions [N], paged)`: the
engine's cached forward, the query tokens of many sequences packed into one row, each
writing its K/V into the paged cache and attending to its own sequence's pages; `logits`
then applies the output head to the positions being decided.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdllm_ray.model import rope_write
from fastdllm_ray.model.fp8 import linear  # F.linear, or the FP8 kernel for an Fp8Weight
from fastdllm_ray.model.kv_cache import PagedForward
from fastdllm_ray.model.paged_attention import paged_attention


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # normalise in float32 whatever the weights' dtype, as both references do
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


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


def project(h: torch.Tensor, weights: tuple, sizes: list[int], biases: tuple = ()):
    """Separate projections, or one fused projection split into the same outputs; `biases`
    () or one per weight (None where a projection has none)."""
    if len(weights) == 1:
        return linear(h, weights[0], biases[0] if biases else None).split(sizes, dim=-1)
    return [linear(h, w, biases[i] if biases else None) for i, w in enumerate(weights)]


def attention_inputs(x, norm_w, eps: float, qkv_weights: tuple, sin, cos, n_heads: int, n_kv_heads: int,
                     qkv_biases: tuple = ()):
    """RMSNorm, q/k/v projections and RoPE: q [B, T, H, D], k and v [B, T, H_kv, D]."""
    B, T, d = x.shape
    head_dim = d // n_heads
    h = rms_norm(x, norm_w, eps)
    kv_dim = n_kv_heads * head_dim
    q, k, v = project(h, qkv_weights, [d, kv_dim, kv_dim], qkv_biases)
    q = q.reshape(B, T, n_heads, head_dim)
    k = k.reshape(B, T, n_kv_heads, head_dim)
    v = v.reshape(B, T, n_kv_heads, head_dim)
    return apply_rope(q, sin, cos), apply_rope(k, sin, cos), v


def normed_projection(x, norm_w, eps: float, weight, bias=None):
    """RMSNorm then one (fused) projection: the fused path's q/k/v before RoPE."""
    return linear(rms_norm(x, norm_w, eps), weight, bias)


def attention_out_and_mlp(x, attn, w_out, norm_w, eps: float, gate_up_weights: tuple, w_down):
    """Residual attention output, then the residual SwiGLU MLP."""
    x = x + linear(attn, w_out)
    h = rms_norm(x, norm_w, eps)
    gate, up = project(h, gate_up_weights, [w_down.shape[1], w_down.shape[1]])
    return x + linear(F.silu(gate) * up, w_down)


class _EagerOps:
    attention_inputs = staticmethod(attention_inputs)
    attention_out_and_mlp = staticmethod(attention_out_and_mlp)
    normed_projection = None  # set when RoPE and the cache write run as one kernel (rope_write)


def _fuse(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One matrix (and bias) for several projections of the same input; each layer's own
    parameters become views into it, so no memory is duplicated."""
    fused = torch.cat([layer.weight for layer in layers], dim=0)
    has_bias = layers[0].bias is not None
    fused_bias = torch.cat([layer.bias for layer in layers]) if has_bias else None
    offset = 0
    for layer in layers:
        rows = layer.weight.shape[0]
        layer.weight = nn.Parameter(fused[offset: offset + rows], requires_grad=False)
        if has_bias:
            layer.bias = nn.Parameter(fused_bias[offset: offset + rows], requires_grad=False)
        offset += rows
    return fused, fused_bias


class TransformerBlock(nn.Module):
    """The block's computation. A subclass creates the parameters under its checkpoint's
    names and lists them in `qkv_layers`, `out_layer`, `gate_up_layers`, `down_layer` and
    `norms` (attention norm, MLP norm)."""

    ops = _EagerOps  # swapped for torch.compile'd versions by DiffusionTransformer.compile_blocks()

    def qkv_layers(self) -> list[nn.Linear]:
        raise NotImplementedError

    def gate_up_layers(self) -> list[nn.Linear]:
        raise NotImplementedError

    def out_layer(self) -> nn.Linear:
        raise NotImplementedError

    def down_layer(self) -> nn.Linear:
        raise NotImplementedError

    def norms(self) -> tuple[RMSNorm, RMSNorm]:
        raise NotImplementedError

    fused_qkv: tuple = ()  # (w_qkv,) once fuse_projections() ran
    fused_qkv_bias: tuple = ()  # (b_qkv,) for a family with q/k/v biases, once fused
    fused_gate_up: tuple = ()

    def fuse_projections(self) -> None:
        """One [q;k;v] and one [gate;up] matrix: fewer, larger matmuls."""
        if self.fused_qkv:
            return
        w_qkv, b_qkv = _fuse(self.qkv_layers())
        self.fused_qkv, self.fused_qkv_bias = (w_qkv,), (() if b_qkv is None else (b_qkv,))
        self.fused_gate_up = (_fuse(self.gate_up_layers())[0],)

    def _qkv(self) -> tuple[tuple, tuple]:
        if self.fused_qkv:
            return self.fused_qkv, self.fused_qkv_bias
        layers = self.qkv_layers()
        biases = tuple(layer.bias for layer in layers) if layers[0].bias is not None else ()
        return tuple(layer.weight for layer in layers), biases

    def forward(self, x, sin, cos, layer: int, key_mask=None, paged: PagedForward | None = None) -> torch.Tensor:
        """x [B, T, d]. Plain (paged None): each row attends to its own tokens, `key_mask`
        hiding padding. Paged (B = 1, the packed queries): K/V written to the cache first,
        then each sequence's queries attend to its pages."""
        cfg = self.cfg
        B, T, _ = x.shape
        attn_norm, ff_norm = self.norms()
        qkv, qkv_bias = self._qkv()
        if paged is not None and self.ops.normed_projection is not None and self.fused_qkv:
            qkv_out = self.ops.normed_projection(x, attn_norm.weight, cfg.rms_norm_eps, qkv[0],
                                                 qkv_bias[0] if qkv_bias else None)
            q = rope_write.rope_and_write(qkv_out, sin, cos, *paged.cache.rows(layer), paged.write_rows,
                                          cfg.n_heads, cfg.n_kv_heads)
        else:
            q, k, v = self.ops.attention_inputs(
                x, attn_norm.weight, cfg.rms_norm_eps, qkv, sin, cos, cfg.n_heads, cfg.n_kv_heads, qkv_bias)
            if paged is not None:
                paged.write(layer, k, v)
        if paged is not None:
            attn = paged_attention(q.reshape(B * T, cfg.n_heads, cfg.head_dim), *paged.cache.layer(layer),
                                   paged.batch)
        else:
            keys, values = k.transpose(1, 2), v.transpose(1, 2)
            if cfg.n_kv_heads != cfg.n_heads:
                repeat = cfg.n_heads // cfg.n_kv_heads
                keys = keys.repeat_interleave(repeat, dim=1)
                values = values.repeat_interleave(repeat, dim=1)
            attn = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=key_mask)
            attn = attn.transpose(1, 2)
        attn = attn.reshape(B, T, cfg.d_model)
        gate_up = self.fused_gate_up or tuple(layer.weight for layer in self.gate_up_layers())
        return self.ops.attention_out_and_mlp(
            x, attn, self.out_layer().weight, ff_norm.weight, cfg.rms_norm_eps, gate_up, self.down_layer().weight)


class DiffusionTransformer(nn.Module):
    """The network around the blocks. A subclass builds its modules under its checkpoint's
    names and provides `embedding`, `blocks`, `final_norm` and `head`; `checkpoint_prefix` is
    what its checkpoint puts before our parameter names. A subclass with a `config_class`
    registers as the network of that config's `model_type` (`network_for`): a model family
    is a module that subclasses this, nothing here names one."""

    checkpoint_prefix = ""
    config_class: type | None = None  # its config (with `model_type` and `from_dict`)
    _registry: dict[str, type["DiffusionTransformer"]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        config_class = cls.__dict__.get("config_class")
        if config_class is not None:
            DiffusionTransformer._registry[config_class.model_type] = cls

    @property
    def embedding(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def final_norm(self) -> RMSNorm:
        raise NotImplementedError

    def head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compile_blocks(self, enabled: bool = True) -> None:
        """Fuses each block's elementwise work (norms, RoPE, SwiGLU) with torch.compile.

        One compiled function serves every layer (weights are arguments), so it compiles once
        per input shape family; used on CUDA, where those ops cost more than the matmuls'
        own memory traffic at small batch. Where Triton runs, cached forwards apply RoPE and
        write the cache in one kernel (model/rope_write.py).
        """
        fused_rope = rope_write.usable(self.config, self.device)

        class _CompiledOps:
            attention_inputs = staticmethod(torch.compile(attention_inputs, dynamic=True))
            attention_out_and_mlp = staticmethod(torch.compile(attention_out_and_mlp, dynamic=True))
            normed_projection = staticmethod(torch.compile(normed_projection, dynamic=True)) if fused_rope else None

        for block in self.blocks:
            block.ops = _CompiledOps if enabled else _EagerOps
            if enabled:
                block.fuse_projections()

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def rope(self, positions: torch.Tensor):
        """sin, cos of the rotary embedding at `positions` (a family rotating part of each head
        overrides this)."""
        return rope_tables(positions, self.config.head_dim, self.config.rope_theta)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head over final hidden states [..., d]."""
        return self.head(self.final_norm(hidden))

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                logits_index: torch.Tensor | None = None, causal_block: int | None = None) -> torch.Tensor:
        """Logits [B, T or n, V] for tokens [B, T] at positions [B, T] (-1 = padding): a plain
        forward with no cache, each row's tokens attending to each other; with `causal_block`
        (default: the config's, 0 for a bidirectional family) a token sees only the tokens of its
        own block of that size and of earlier blocks."""
        return self.logits(self.final_hidden(tokens, positions, logits_index, causal_block))

    def final_hidden(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                     logits_index: torch.Tensor | None = None, causal_block: int | None = None) -> torch.Tensor:
        """`forward`'s hidden states before the final norm and head (training computes its own loss)."""
        B, T = tokens.shape
        if positions is None:
            positions = torch.arange(T, device=tokens.device).expand(B, T)
        if causal_block is None:
            causal_block = getattr(self.config, "causal_block", 0)
        key_mask = (positions >= 0)[:, None, None, :] if bool((positions < 0).any()) else None
        if causal_block:
            block = positions.clamp(min=0) // causal_block
            causal = (block[:, None, :, None] >= block[:, None, None, :])
            key_mask = causal if key_mask is None else causal & key_mask
        sin, cos = self.rope(positions)
        x = self.embedding(tokens)
        for layer, block_module in enumerate(self.blocks):
            x = block_module(x, sin, cos, layer, key_mask=key_mask)
        if logits_index is not None:
            x = x.gather(1, logits_index[..., None].expand(-1, -1, x.shape[-1]))
        return x

    @torch.inference_mode()
    def hidden_states(self, tokens: torch.Tensor, positions: torch.Tensor, paged: PagedForward) -> torch.Tensor:
        """Final hidden states [N, d] (before the last norm) of packed query tokens [N] at
        absolute positions [N], through the paged cache (see PagedForward)."""
        sin, cos = self.rope(positions[None])
        x = self.embedding(tokens)[None]
        for layer, block in enumerate(self.blocks):
            x = block(x, sin, cos, layer, paged=paged)
        return x[0]


def network_for(model_type: str) -> type[DiffusionTransformer]:
    """The network class of a checkpoint's config.json model_type."""
    network = DiffusionTransformer._registry.get(model_type)
    if network is None:
        raise ValueError(f"config.json model_type: {model_type!r} is not one of {sorted(DiffusionTransformer._registry)}")
    return network


class DecoderLayout(DiffusionTransformer):
    """The Hugging Face decoder layout several families' checkpoints share: `model.<embedding>`,
    `model.layers.N`, `model.norm`, and `lm_head` unless tied to the embedding. A subclass passes
    its layers and names its embedding (`embedding_name`)."""

    embedding_name = "embed_tokens"

    def __init__(self, cfg, layers: list[nn.Module]) -> None:
        super().__init__()
        self.config = cfg
        self.model = nn.Module()
        setattr(self.model, self.embedding_name, nn.Embedding(cfg.vocab_size, cfg.d_model))
        self.model.layers = nn.ModuleList(layers)
        self.model.norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        if not cfg.weight_tying:
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.end_token_ids: tuple[int, ...] = cfg.end_token_ids

    @property
    def embedding(self) -> nn.Embedding:
        return getattr(self.model, self.embedding_name)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def final_norm(self) -> RMSNorm:
        return self.model.norm

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.weight_tying:
            return F.linear(x, self.embedding.weight)
        return self.lm_head(x)
