"""What differs between the shipped models' trainings: the tokenizer and chat template they
are saved with, the network and its size, the objective, and the answer's end tokens.

A recipe writes its tokenizer into the checkpoint directory first; everything after (the
model's vocabulary and special ids, the training examples) is read back from that saved
tokenizer, so the training sees what the server will build. A new shipped model is one more
entry in RECIPES (e.g. a block-diffusion model with its own objective in objectives.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fastdllm_ray.model import DiffusionTransformer, DreamConfig, DreamModel, LLaDAConfig, LLaDAModel

ANSWER_LENGTH = 64  # two blocks of 32: every answer and its end token fit (the server's default answer)


@dataclass(frozen=True)
class Recipe:
    name: str
    objective: str  # a key of objectives.OBJECTIVES
    save_tokenizer: Callable[[Path], None]
    build_model: Callable[[object], DiffusionTransformer]  # from the saved tokenizer; weights not yet set
    end_token: str  # closes the answer (the end of the assistant's turn)
    pad_token: str  # fills the answer region after it


def _llada_tokenizer(out: Path) -> None:
    from fastdllm_ray.train.tokenizer import save_tokenizer

    save_tokenizer(out)


def _llada_model(tokenizer) -> LLaDAModel:
    """~2.9M parameters (5.8 MB in bfloat16): d_model 192, 6 layers."""
    from fastdllm_ray.train.tokenizer import EOS, EOT, MASK

    vocab = len(tokenizer)
    return LLaDAModel(LLaDAConfig(
        d_model=192, n_heads=6, n_kv_heads=6, n_layers=6, mlp_hidden_size=576,
        vocab_size=vocab, embedding_size=vocab, max_sequence_length=512,
        mask_token_id=tokenizer.convert_tokens_to_ids(MASK), eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        extra_end_token_ids=(tokenizer.convert_tokens_to_ids(EOT),), rope_theta=10000.0,
    ))


def _dream_tokenizer(out: Path) -> None:
    from fastdllm_ray.train.dream_tokenizer import save_tokenizer

    save_tokenizer(out)


def _dream_model(tokenizer) -> DreamModel:
    """Dream's layout (grouped-query attention, q/k/v biases) at the LLaDA model's size."""
    from fastdllm_ray.train.dream_tokenizer import BOS, EOS, MASK

    ids = tokenizer.convert_tokens_to_ids
    return DreamModel(DreamConfig(
        d_model=192, n_heads=6, n_kv_heads=2, n_layers=6, mlp_hidden_size=576, vocab_size=len(tokenizer),
        max_sequence_length=512, mask_token_id=ids(MASK), eos_token_id=ids(EOS), pad_token_id=ids(EOS),
        bos_token_id=ids(BOS), rope_theta=10000.0,
    ))


def _v2_tokenizer(out: Path) -> None:
    from fastdllm_ray.train.dream_tokenizer import save_tokenizer

    save_tokenizer(out, v2=True)


def _v2_model(tokenizer) -> DiffusionTransformer:
    """The tiny Dream's network (Qwen2's layout) as Fast-dLLM v2 is Qwen2.5's: blocks of 32,
    the ids of the tiny Dream's vocabulary (so it can start from the tiny Dream's weights)."""
    from fastdllm_ray.model.fast_dllm_v2 import FastDLLMV2Config, FastDLLMV2Model
    from fastdllm_ray.train.dream_tokenizer import BOS, EOS, IM_END, V2_MASK

    ids = tokenizer.convert_tokens_to_ids
    return FastDLLMV2Model(FastDLLMV2Config(
        d_model=192, n_heads=6, n_kv_heads=2, n_layers=6, mlp_hidden_size=576, vocab_size=len(tokenizer),
        max_sequence_length=512, mask_token_id=ids(V2_MASK), eos_token_id=ids(IM_END), pad_token_id=ids(EOS),
        bos_token_id=ids(BOS), rope_theta=10000.0, bd_size=32,
    ))


RECIPES: dict[str, Recipe] = {
    "tiny-llada-arith": Recipe("tiny-llada-arith", "llada", _llada_tokenizer, _llada_model,
                               end_token="<|eot_id|>", pad_token="<|endoftext|>"),
    "tiny-dream-arith": Recipe("tiny-dream-arith", "dream", _dream_tokenizer, _dream_model,
                               end_token="<|im_end|>", pad_token="<|endoftext|>"),
    "tiny-v2-arith": Recipe("tiny-v2-arith", "fast_dllm_v2", _v2_tokenizer, _v2_model,
                            end_token="<|im_end|>", pad_token="<|endoftext|>"),
}


def init_weights(model: DiffusionTransformer, seed: int) -> DiffusionTransformer:
    """GPT-2 style: N(0, 0.02) matrices, residual outputs scaled down by depth, zero biases,
    unit norms; the same weights for a seed."""
    torch.manual_seed(seed)
    layers = model.config.n_layers
    residual = {id(block.out_layer().weight) for block in model.blocks}
    residual |= {id(block.down_layer().weight) for block in model.blocks}
    for param in model.parameters():
        if param.dim() == 2:
            std = 0.02 / math.sqrt(2 * layers) if id(param) in residual else 0.02
            torch.nn.init.normal_(param, 0.0, std)
    for block in model.blocks:
        for norm in block.norms():
            torch.nn.init.ones_(norm.weight)
        for layer in block.qkv_layers():
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)
    torch.nn.init.ones_(model.final_norm.weight)
    return model
