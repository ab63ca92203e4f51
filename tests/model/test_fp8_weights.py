"""FP8 weights on the CPU (the emulated path): per-channel e4m3 quantization within its
rounding bound, a quantized model computing what a float model holding the dequantized weights
computes, the bytes it saves, and dtype "fp8" refused by name where it cannot run; the GPU's
scaled_mm path (which PyTorch also runs on the CPU) computing the row-quantized product, traced
by torch.compile as one graph for every layer, and the shipped model answering through it."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
import torch.nn.functional as F

from fastdllm_ray.eval import DecodingConfig, run_engine
from fastdllm_ray.model import default_model_path, fp8, load_model, load_tokenizer
from fastdllm_ray.model.transformer import attention_out_and_mlp
from fastdllm_ray.model.fp8 import Fp8Linear, Fp8Weight, dequantize, quantize_weight
from fastdllm_ray.train.data import problems
from tests.conftest import DREAM_CHECKPOINT, REF_CHECKPOINT

TOKENS = torch.tensor([[1, 5, 9, 2, 60, 61, 61, 61, 7, 8, 100, 3], [7, 7, 3, 0, 61, 61, 61, 61, 4, 4, 4, 4]])


def test_quantization_error_is_within_e4m3_rounding_of_each_row_scale():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-4, 1, 64)[:, None]  # rows of very different magnitudes
    w[3, 7] = 50.0  # an outlier flattens only its own row
    w[5] = 0.0
    q = quantize_weight(w)
    assert q.qweight.dtype == torch.float8_e4m3fn and q.scale.shape == (64,)
    assert torch.allclose(q.scale, w.abs().amax(dim=1).clamp(min=1e-38) / 448)
    error = (dequantize(q) - w).abs()
    # 3 mantissa bits: half a step is 2^-4 of the value; below e4m3's normals (2^-6) steps are 2^-9
    bound = 2.0**-4 * w.abs() + 2.0**-10 * q.scale[:, None]
    assert bool((error <= bound * 1.0001 + 1e-12).all())
    assert bool((dequantize(q)[5] == 0).all())
    relative = (dequantize(q) - w).norm(dim=1) / w.norm(dim=1).clamp(min=1e-30)
    assert relative[torch.arange(64) != 5].max() < 0.05


def _float_model_of_dequantized_weights(path):
    """The reference: the float32 model whose block linears hold dequantize(quantize(w))."""
    model = load_model(path)
    with torch.no_grad():
        for block in model.blocks:
            for layer in block.qkv_layers() + block.gate_up_layers() + [block.out_layer(), block.down_layer()]:
                layer.weight.copy_(dequantize(quantize_weight(layer.weight)))
    return model


@pytest.mark.parametrize("path", [REF_CHECKPOINT, DREAM_CHECKPOINT], ids=["llada", "dream-with-qkv-bias"])
def test_emulated_fp8_model_computes_what_the_dequantized_float_model_computes(path):
    quantized = load_model(path, dtype="fp8")
    assert fp8.is_quantized(quantized) and quantized.dtype == torch.float32  # float32 activations on the CPU
    reference = _float_model_of_dequantized_weights(path)
    tokens = TOKENS % quantized.config.embedding_size
    assert torch.allclose(quantized(tokens), reference(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", [REF_CHECKPOINT, DREAM_CHECKPOINT], ids=["llada", "dream"])
def test_fp8_logits_stay_close_to_the_unquantized_model(path):
    full, quantized = load_model(path), load_model(path, dtype="fp8")
    tokens = TOKENS % full.config.embedding_size
    a, b = full(tokens), quantized(tokens)
    assert (b - a).norm() / a.norm() < 0.05
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


def test_block_linears_are_fp8_and_embedding_norms_head_are_not():
    model = load_model(REF_CHECKPOINT, dtype="fp8")
    block = model.blocks[0]
    for layer in block.qkv_layers() + block.gate_up_layers() + [block.out_layer(), block.down_layer()]:
        assert isinstance(layer, Fp8Linear) and layer.qweight.dtype == torch.float8_e4m3fn
    assert isinstance(block.fused_qkv[0], Fp8Weight) and isinstance(block.fused_gate_up[0], Fp8Weight)
    # the layers' rows are views of the fused matrices: quantized once, stored once
    assert block.qkv_layers()[0].qweight.untyped_storage().data_ptr() == \
        block.fused_qkv[0].qweight.untyped_storage().data_ptr()
    assert model.embedding.weight.dtype == torch.float32
    assert model.transformer["ff_out"].weight.dtype == torch.float32
    assert block.norms()[0].weight.dtype == torch.float32


def test_fp8_linear_weights_take_one_byte_a_parameter_plus_a_scale_a_row():
    full, quantized = load_model(REF_CHECKPOINT, dtype="bfloat16"), load_model(REF_CHECKPOINT, dtype="fp8")

    def block_bytes(model) -> int:
        storages = {}
        for t in list(model.blocks.parameters()) + list(model.blocks.buffers()):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(storages.values())

    cfg = full.config
    kv = cfg.n_kv_heads * cfg.head_dim
    params = cfg.n_layers * (cfg.d_model * (2 * cfg.d_model + 2 * kv) + 3 * cfg.d_model * cfg.mlp_hidden_size)
    rows = cfg.n_layers * (2 * cfg.d_model + 2 * kv + 2 * cfg.mlp_hidden_size + cfg.d_model)
    norms = cfg.n_layers * 2 * cfg.d_model
    assert block_bytes(full) == 2 * params + 2 * norms
    assert block_bytes(quantized) == params + 4 * rows + 4 * norms  # norms stay float32 (the CPU's dtype)


def test_quantizing_twice_changes_nothing():
    model = load_model(REF_CHECKPOINT, dtype="fp8")
    before = model(TOKENS % 512)
    fp8.quantize_model(model)
    assert torch.equal(model(TOKENS % 512), before)


def test_unknown_dtype_string_is_refused_by_name():
    with pytest.raises(ValueError, match="dtype: 'fp9' is not a torch dtype nor 'fp8'"):
        load_model(REF_CHECKPOINT, dtype="fp9")


def test_fp8_is_refused_on_a_gpu_without_fp8_tensor_cores(monkeypatch):
    # no such GPU here: the device query answers as an A100 (compute capability 8.0) would
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(ValueError, match=r"dtype: 'fp8' needs FP8 tensor cores .* NVIDIA A100-SXM4-80GB has 8\.0"):
        load_model(REF_CHECKPOINT, device="cuda", dtype="fp8")


def test_fp8_is_refused_on_a_device_that_is_neither_cuda_nor_cpu():
    with pytest.raises(ValueError, match="dtype: 'fp8' runs on CUDA GPUs"):
        fp8.check_supported("meta")


def test_unknown_kernel_names_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="kernel: 'cublas' is not one of"):
        fp8.use_kernel("cublas")
    monkeypatch.setattr(fp8, "_settings", {})
    monkeypatch.setenv(fp8.KERNEL_ENV, "fastest")
    with pytest.raises(ValueError, match="FASTDLLM_FP8_KERNEL: 'fastest' is not one of"):
        fp8.active_kernel()


@pytest.fixture
def kernel():
    before = fp8.active_kernel()
    yield fp8.use_kernel
    fp8.use_kernel(before)


def test_scaled_mm_path_computes_the_product_of_row_quantized_activations_and_weights(kernel):
    kernel("scaled_mm")  # PyTorch runs _scaled_mm on the CPU too: the GPU path's arithmetic, checked here
    torch.manual_seed(0)
    w, bias = torch.randn(96, 128) * 0.05, torch.randn(96).bfloat16()
    x = (torch.randn(2, 5, 128) * torch.logspace(-2, 1, 5)[None, :, None]).bfloat16()  # rows of other scales
    q = quantize_weight(w)
    y = fp8.linear(x, q, bias)
    assert y.shape == (2, 5, 96) and y.dtype == torch.bfloat16
    xq, x_scale = fp8.quantize_rows(x.reshape(-1, 128))
    exact = (xq.float() * x_scale) @ dequantize(q).T + bias.float()
    assert float((y.reshape(-1, 96).float() - exact).norm() / exact.norm()) < 1e-2  # bf16 output rounding
    unquantized = F.linear(x.float(), dequantize(q), bias.float())
    assert float((y.float() - unquantized).norm() / unquantized.norm()) < 5e-2  # e4m3 activations


def test_compiled_block_takes_fp8_weights_as_arguments_one_graph_for_every_layer(kernel):
    kernel("scaled_mm")
    torch._dynamo.reset()
    counts = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(attention_out_and_mlp, backend=counts, dynamic=True)
    torch.manual_seed(0)
    d, hidden, norm = 32, 48, torch.ones(32)
    for _ in range(4):  # layers: other weights, same compiled graph
        w_out, w_gate_up, w_down = (quantize_weight(torch.randn(*s) * 0.1) for s in ((d, d), (2 * hidden, d), (d, hidden)))
        for tokens in (3, 9):
            x, attn = torch.randn(1, tokens, d), torch.randn(1, tokens, d)
            expected = attention_out_and_mlp(x, attn, w_out, norm, 1e-5, (w_gate_up,), w_down)
            assert torch.allclose(compiled(x, attn, w_out, norm, 1e-5, (w_gate_up,), w_down), expected)
    assert counts.frame_count == 1


def test_shipped_model_answers_through_the_scaled_mm_path(kernel):
    kernel("scaled_mm")  # weights and activations in e4m3, as on the GPU's FP8 tensor cores
    path = default_model_path()
    model, tokenizer = load_model(path, dtype="fp8"), load_tokenizer(path)
    held_out = problems(16, seed=1234, split="eval")
    result = run_engine(model, tokenizer, held_out, DecodingConfig("dual", "threshold", 32), batch_size=8)
    assert result.correct >= 15
