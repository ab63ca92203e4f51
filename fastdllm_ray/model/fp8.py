"""FP8 weights: the transformer blocks' linear weights stored as float8 e4m3 with one float32
scale per output channel, and the one `linear` that every block matmul goes through.

What is quantized: the blocks' q/k/v, attention-out, gate/up and down matrices (all but ~1/16
of an 8B model's bytes), so a batch-1 step, which reads every weight once, reads half the bytes.
What stays in the compute dtype: the embedding (a gather reads only the rows of the tokens in the
step, so there is nothing to halve), the norms (vectors) and the output head (its logits are the
confidences that decide which tokens are committed, read directly by threshold and factor
rules; keeping them exact costs one matrix). Biases (Dream's q/k/v) stay too.

Why per output channel: one outlier row does not flatten the others' resolution, and the scales
of fused projections simply concatenate, so [q;k;v] and [gate;up] fuse exactly as in bf16.

How the product is computed (`FASTDLLM_FP8_KERNEL`, read once; `use_kernel` in code):
- `weight_only`: a Triton kernel (model/fp8_triton.py) that reads the FP8 weights and
  dequantizes them in registers before bf16 tensor-core math: half the bytes, bf16's FLOPs;
- `scaled_mm`: the activations quantized per row (plain torch ops, which torch.compile fuses
  into the elementwise work before them: RMSNorm, SwiGLU) and `torch._scaled_mm` on the FP8
  tensor cores: half the bytes and twice the FLOP rate, plus the activations' rounding;
- `auto` (default): `weight_only` for steps of up to FASTDLLM_FP8_WEIGHT_ONLY_TOKENS (default
  64) tokens, where reading the weights is the whole cost, `scaled_mm` above;
- `emulated`: dequantize to the compute dtype and F.linear. Used off CUDA unless the kernel is
  `scaled_mm` (which PyTorch also runs on the CPU, slowly: the tests use it to check that path):
  on the CPU an FP8 model computes exactly what a float model holding the dequantized weights
  computes (the tests' reference), with half of bf16's weight memory but no speed gain.
On a GPU without FP8 support (compute capability below 8.9) dtype "fp8" is refused.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
KERNELS = ("auto", "weight_only", "scaled_mm", "emulated")
KERNEL_ENV = "FASTDLLM_FP8_KERNEL"
SMALL_STEP_ENV = "FASTDLLM_FP8_WEIGHT_ONLY_TOKENS"


class Fp8Weight(NamedTuple):
    """A quantized [out, in] weight: `qweight` float8 e4m3 and `scale` [out] float32, so that
    weight ~= qweight * scale[:, None]. A tuple, so torch.compile'd block functions take it as
    an argument like a tensor (one compiled graph serves every layer)."""

    qweight: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.qweight.shape


def quantize_weight(weight: torch.Tensor) -> Fp8Weight:
    """Per-output-channel e4m3: each row scaled so its largest magnitude maps to 448."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = (amax / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)  # an all-zero row stays zero
    qweight = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return Fp8Weight(qweight, scale.squeeze(1).contiguous())


def dequantize(weight: Fp8Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (weight.qweight.float() * weight.scale[:, None]).to(dtype)


# ---- which kernel ---------------------------------------------------------------------------
_settings: dict[str, object] = {}


def _read_settings() -> dict[str, object]:
    if not _settings:
        kernel = os.environ.get(KERNEL_ENV, "auto")
        if kernel not in KERNELS:
            raise ValueError(f"{KERNEL_ENV}: {kernel!r} is not one of {', '.join(KERNELS)}")
        small = os.environ.get(SMALL_STEP_ENV, "64")
        if not small.isdigit():
            raise ValueError(f"{SMALL_STEP_ENV}: {small!r} is not a whole number of tokens")
        _settings.update(kernel=kernel, small_step=int(small))
    return _settings


def use_kernel(name: str, small_step: int | None = None) -> None:
    """Chooses the CUDA kernel in code (benchmarks, tests); compiled blocks recompile for it."""
    if name not in KERNELS:
        raise ValueError(f"kernel: {name!r} is not one of {', '.join(KERNELS)}")
    settings = _read_settings()
    settings["kernel"] = name
    if small_step is not None:
        settings["small_step"] = int(small_step)


def active_kernel() -> str:
    return str(_read_settings()["kernel"])


def linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a tensor weight; for an Fp8Weight, the configured FP8 kernel."""
    if not isinstance(weight, Fp8Weight):
        return F.linear(x, weight, bias)
    settings = _read_settings()
    kernel = settings["kernel"]
    if x.device.type != "cuda" and kernel != "scaled_mm":  # PyTorch runs _scaled_mm on the CPU too
        kernel = "emulated"
    if kernel == "emulated":
        return F.linear(x, dequantize(weight, x.dtype), bias)
    out_features, in_features = weight.shape
    x2 = x.reshape(-1, in_features)
    if kernel == "auto":
        kernel = "weight_only" if x2.shape[0] <= settings["small_step"] else "scaled_mm"
    if kernel == "scaled_mm" and in_features % 16 == 0 and out_features % 16 == 0:  # _scaled_mm's shapes
        y = _scaled_mm_linear(x2, weight, bias)
    else:
        y = torch.ops.fastdllm.fp8_weight_only_linear(x2, weight.qweight, weight.scale, bias)
    return y.reshape(*x.shape[:-1], out_features)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-row (per-token) e4m3 activations and their [M, 1] float32 scales."""
    x32 = x.float()
    scale = (x32.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (x32 / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def _scaled_mm_linear(x: torch.Tensor, weight: Fp8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    # the quantization is plain torch ops, so torch.compile fuses it into the work before it;
    # the matmul is one opaque op (cuBLAS), whatever the compiler's support for _scaled_mm
    xq, x_scale = quantize_rows(x)
    return torch.ops.fastdllm.fp8_scaled_mm(xq, weight.qweight, x_scale, weight.scale, bias, x.dtype)


# ---- the kernels as ops that torch.compile and CUDA graphs treat as one call each -------------
@torch.library.custom_op("fastdllm::fp8_scaled_mm", mutates_args=())
def _scaled_mm_op(xq: torch.Tensor, qweight: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor,
                  bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    # _scaled_mm wants the second operand column-major: the [out, in] rows transposed are (on
    # CUDA, row-wise scales need a bf16 output: the GPU's compute dtype)
    return torch._scaled_mm(xq, qweight.t(), scale_a=x_scale, scale_b=w_scale[None, :], bias=bias,
                            out_dtype=out_dtype, use_fast_accum=True)


@_scaled_mm_op.register_fake
def _(xq, qweight, x_scale, w_scale, bias, out_dtype):
    return xq.new_empty(xq.shape[0], qweight.shape[0], dtype=out_dtype)


@torch.library.custom_op("fastdllm::fp8_weight_only_linear", mutates_args=())
def _weight_only_op(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    from fastdllm_ray.model import fp8_triton

    return fp8_triton.weight_only_linear(x, qweight, scale, bias)


@_weight_only_op.register_fake
def _(x, qweight, scale, bias):
    return x.new_empty(x.shape[0], qweight.shape[0])


# ---- support and model conversion --------------------------------------------------------------
def check_supported(device: torch.device | str) -> None:
    """Raises ValueError naming dtype where FP8 weights cannot run (a CPU runs them emulated)."""
    device = torch.device(device)
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise ValueError(f"dtype: 'fp8' runs on CUDA GPUs (compute capability >= 8.9) or emulated on the CPU, "
                         f"not on {device.type}")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ValueError(f"dtype: 'fp8' needs FP8 tensor cores (compute capability >= 8.9: L4, L40S, H100, H200, "
                         f"...); {torch.cuda.get_device_name(device)} has {major}.{minor}: use bfloat16")
    from fastdllm_ray.model import fp8_triton

    if active_kernel() in ("auto", "weight_only") and not fp8_triton.available():
        raise ValueError(f"dtype: 'fp8' with {KERNEL_ENV}={active_kernel()} needs Triton, which is not installed "
                         f"(or set {KERNEL_ENV}=scaled_mm)")


class Fp8Linear(nn.Module):
    """An nn.Linear's place in a block once quantized: `weight` is the Fp8Weight."""

    def __init__(self, weight: Fp8Weight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("qweight", weight.qweight)
        self.register_buffer("weight_scale", weight.scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @property
    def weight(self) -> Fp8Weight:
        return Fp8Weight(self.qweight, self.weight_scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8_e4m3 per-channel"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def _replace(block: nn.Module, layers: list[nn.Module], fused: Fp8Weight) -> None:
    """Puts an Fp8Linear where each layer was, its weight rows a view of the fused one's."""
    names = {id(module): name for name, module in block.named_modules()}
    offset = 0
    for layer in layers:
        rows = layer.weight.shape[0]
        part = Fp8Weight(fused.qweight[offset: offset + rows], fused.scale[offset: offset + rows])
        parent, _, leaf = names[id(layer)].rpartition(".")
        setattr(block.get_submodule(parent) if parent else block, leaf, Fp8Linear(part, layer.bias))
        offset += rows


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Fp8Linear) for m in model.modules())


def quantize_model(model: nn.Module) -> nn.Module:
    """Quantizes every block's linear weights in place (the model already on its device, in its
    compute dtype); a model already quantized is left as it is. Projections are fused first
    ([q;k;v], [gate;up]), as compile_blocks would, and each layer keeps a view of its rows."""
    check_supported(model.device)
    if not all(hasattr(block, "fused_gate_up") for block in model.blocks):
        raise ValueError(f"dtype: fp8 covers the dense blocks (LLaDA, Dream, Fast-dLLM v2), not "
                         f"{model.config.model_type}'s mixture-of-experts layers")
    if not is_quantized(model):
        # generate()'s engine kept on the model replays CUDA graphs that read the old weights
        model.__dict__.pop("_generate_engine", None)
    for block in model.blocks:
        if block.fused_qkv and isinstance(block.fused_qkv[0], Fp8Weight):
            continue
        block.fuse_projections()
        qkv, gate_up = quantize_weight(block.fused_qkv[0]), quantize_weight(block.fused_gate_up[0])
        qkv_layers, gate_up_layers = block.qkv_layers(), block.gate_up_layers()
        out_layer, down_layer = block.out_layer(), block.down_layer()
        block.fused_qkv, block.fused_gate_up = (qkv,), (gate_up,)
        _replace(block, qkv_layers, qkv)
        _replace(block, gate_up_layers, gate_up)
        _replace(block, [out_layer], quantize_weight(out_layer.weight))
        _replace(block, [down_layer], quantize_weight(down_layer.weight))
    if model.device.type == "cuda":
        torch.cuda.empty_cache()  # the bf16 matrices' memory goes back to the device (the K/V pool sizes from it)
    return model
