"""FP8 linear candidates side by side on LLaDA-8B's linear layers (GPU, through the device tool).

The 224 linear layers of LLaDA-8B (32 layers x q, k, v, out, gate, up, down; d 4096, FFN 12288;
6.98 G parameters) run as the model runs them, with q/k/v and gate/up fused: per layer [q;k;v]
12288x4096, out 4096x4096, [gate;up] 24576x4096, down 4096x12288. At 32 tokens (batch 1, one
block) and 1024 tokens (batch 32), all 32 layers captured as one CUDA graph, replays timed:

- `linears`: the matmuls alone on prepared inputs (a candidate's activation quantization included),
  as the issue's probe measured them;
- `block`: each layer's matmuls with the block's own elementwise work around them, through
  model/transformer.py's block functions torch.compile'd as the engine compiles them
  (RMSNorm -> q/k/v; out + residual, RMSNorm -> gate/up, SwiGLU -> down + residual; attention
  left out, its output stood in by q): where `scaled_mm`'s activation quantization fuses.

Candidates: `bf16` F.linear (baseline); `scaled_mm`: e4m3 weights, activations quantized per row
then torch._scaled_mm (in `linears`, by separate eager ops; `scaled_mm_fused`: the same with the
quantization torch.compile'd into one kernel; in `block`, fused into the elementwise work);
`weight_only`: e4m3 weights dequantized inside our Triton kernel (model/fp8_triton.py), bf16 math;
`auto`: weight_only up to FASTDLLM_FP8_WEIGHT_ONLY_TOKENS tokens, scaled_mm above (the model's
default); `torchao_dyn` / `torchao_wo`: torchao's Float8DynamicActivationFloat8WeightConfig
(PerRow) / Float8WeightOnlyConfig, skipped when torchao is not importable. torchao 0.17.0 is
the release built against torch 2.11 (the GPU image's; 0.16.0 was built against 2.10); it travels
in the device bundle:

    ../shared/tools/device-bundle 'torchao==0.17.0'     # here, once: writes .devbundle/site.tar.xz
    # on the GPU machine (carry .devbundle):
    mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH; \
    PYTHONPATH=/tmp/site:. python3 benchmarks/fp8_linear.py --out-dir $OUT

Correctness: relative error ||y - y_bf16|| / ||y_bf16|| of each candidate against bf16 F.linear
(`linears`: the largest over layer 0's four matmuls; `block`: what the 32 layers add to the input).

Predictions (H100 SXM: ~3.0 TB/s copy bandwidth, ~750 TFLOP/s bf16, ~1400 FP8): weights are
13.96 GB in bf16 (floor 4.65 ms) and 6.98 GB in e4m3 (floor 2.33 ms).
- 32 tokens, memory-bound: bf16 ~5.5 ms (measured 5.47); scaled_mm with eager quantization
  ~8.9 ms (measured 8.88: five extra kernels per matmul); scaled_mm_fused ~3.2 ms and in the
  block ~3.0 ms (no extra launches left but one for the out and down inputs); weight_only
  ~2.8-3.2 ms (80-85% of bandwidth on skinny tiles); torchao_dyn ~ scaled_mm's (it calls
  _scaled_mm rowwise the same way); torchao_wo ~12 ms (a bf16 copy of each weight per call).
- 1024 tokens, compute-bound (14.3 TFLOP): bf16 ~20 ms; scaled_mm ~11-12 ms; weight_only
  ~20-25 ms (bf16 math plus the conversion); torchao_dyn ~ scaled_mm.
So `auto` should take weight_only's time at 32 tokens and scaled_mm's at 1024. The `sweep`
table times bf16, scaled_mm_fused and weight_only over 16..1024 tokens: where weight_only stops
winning is the value for FASTDLLM_FP8_WEIGHT_ONLY_TOKENS (default 64).

    PYTHONPATH=. python3 benchmarks/fp8_linear.py [--tokens 32,1024] [--modes linears,block,sweep] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import cuda_timing
from fastdllm_ray.model import fp8, fp8_triton
from fastdllm_ray.model.transformer import attention_out_and_mlp, normed_projection

D, FFN, LAYERS, EPS = 4096, 12288, 32, 1e-5
SHAPES = {"qkv": (3 * D, D), "out": (D, D), "gate_up": (2 * FFN, D), "down": (D, FFN)}
DEVICE, BACKEND = "cuda", "inductor"


def smoke_sizes() -> None:
    """--smoke: a tiny shape on the CPU, wall-clock timed, compiled with aot_eager: checks that the
    script runs end to end before it costs device time (the figures mean nothing)."""
    global D, FFN, LAYERS, SHAPES, DEVICE, BACKEND
    D, FFN, LAYERS, DEVICE, BACKEND = 64, 128, 2, "cpu", "aot_eager"
    SHAPES = {"qkv": (3 * D, D), "out": (D, D), "gate_up": (2 * FFN, D), "down": (D, FFN)}


def graph_ms(fn, iters: int = 20) -> float:
    """Median milliseconds of one replay of fn captured as a CUDA graph (fn warmed up first)."""
    if DEVICE == "cpu":
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return cuda_timing.graph_ms(fn, iters=iters)


def bf16_weights() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    return [{name: torch.empty(shape, dtype=torch.bfloat16, device=DEVICE).normal_(0, 0.02, generator=gen)
             for name, shape in SHAPES.items()} for _ in range(LAYERS)]


def torchao_weights(weights, config) -> list[dict]:
    """Each weight as torchao's quantized tensor subclass (F.linear dispatches to its kernels)."""
    from torchao.quantization import quantize_

    out = []
    for layer in weights:
        converted = {}
        for name, w in layer.items():
            linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=DEVICE, dtype=torch.bfloat16)
            linear.weight.data = w
            quantize_(linear, config)
            converted[name] = linear.weight
        out.append(converted)
    return out


def candidates(weights) -> dict:
    """name -> (per-layer weights, linear function for `linears` mode, fp8 kernel for `block` mode)."""
    quantized = [{name: fp8.quantize_weight(w) for name, w in layer.items()} for layer in weights]
    compiled_scaled_mm = torch.compile(fp8._scaled_mm_linear, dynamic=True, backend=BACKEND)
    found = {
        "bf16": (weights, F.linear, None),
        "scaled_mm": (quantized, fp8._scaled_mm_linear, "scaled_mm"),
        "scaled_mm_fused": (quantized, compiled_scaled_mm, None),
        "weight_only": (quantized, lambda x, w, b=None: fp8_triton.weight_only_linear(x, w.qweight, w.scale, b),
                        "weight_only"),
        "auto": (quantized, None, "auto"),
    }
    try:
        from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig,
                                          PerRow)
    except ImportError:
        print("torchao not importable: its candidates are skipped", flush=True)
        return found
    # set_inductor_config=False: torchao would otherwise change inductor settings for every later candidate
    for name, config, kernel in (
            ("torchao_dyn", Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False),
             "torchao"),
            ("torchao_wo", Float8WeightOnlyConfig(set_inductor_config=False), None)):
        try:
            found[name] = (torchao_weights(weights, config), F.linear, kernel)
        except Exception as exc:  # e.g. its hardware check off an FP8 GPU
            print(f"{name} skipped: {type(exc).__name__}: {exc}", flush=True)
    return found


def linears_fn(layers, linear, tokens: int):
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    h = torch.randn(tokens, D, dtype=torch.bfloat16, device=DEVICE, generator=gen)
    act = torch.randn(tokens, FFN, dtype=torch.bfloat16, device=DEVICE, generator=gen)
    inputs = {"qkv": h, "out": h, "gate_up": h, "down": act}

    def run():
        return [[linear(inputs[name], w[name]) for name in SHAPES] for w in layers]

    return run


def block_fn(layers, tokens: int, ops):
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    x0 = torch.randn(1, tokens, D, dtype=torch.bfloat16, device=DEVICE, generator=gen)
    norm = torch.ones(D, dtype=torch.bfloat16, device=DEVICE)
    projection, out_and_mlp = ops

    def run():
        x = x0
        for w in layers:
            qkv = projection(x, norm, EPS, w["qkv"])
            x = out_and_mlp(x, qkv[..., :D], w["out"], norm, EPS, (w["gate_up"],), w["down"])
        return x

    run.x0 = x0  # the error is measured on what the layers add to it
    return run


def rel_err(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", default="32,1024")
    ap.add_argument("--modes", default="linears,block,sweep")
    ap.add_argument("--sweep", default="16,32,64,128,256,512,1024", help="token counts of the sweep table")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--smoke", action="store_true", help="a tiny shape on the CPU: checks the script runs")
    args = ap.parse_args()
    if args.smoke:
        smoke_sizes()
    tokens = [int(t) for t in args.tokens.split(",")]
    modes = args.modes.split(",")
    torch._dynamo.config.recompile_limit = 64  # one compiled graph per candidate and step-size side
    started = time.perf_counter()
    weights = bf16_weights()
    found = candidates(weights)
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (--smoke: figures mean nothing)"
    lines = [f"{device}, torch {torch.__version__}; LLaDA-8B's linear layers (fused as the model "
             "runs them), one CUDA graph of 32 layers; ms per replay (ratio to bf16), rel. error vs bf16", ""]
    linears, blocks, sweeps = {}, {}, {}
    if "linears" in modes:
        lines += table("linears (matmuls alone)", found, tokens, lambda c, t: linears_fn(c[0], c[1], t),
                       lambda run: run()[0], skip=("auto",), results=linears)
    if "block" in modes:
        def block(c, t):
            if c[2] is None and c[0] is not weights:
                return None
            if c[2] in ("scaled_mm", "weight_only", "auto"):
                fp8.use_kernel(c[2])
            ops = (torch.compile(normed_projection, dynamic=True, backend=BACKEND),
                   torch.compile(attention_out_and_mlp, dynamic=True, backend=BACKEND))
            return block_fn(c[0], t, ops)

        lines += table("block (compiled elementwise work + matmuls)", found, tokens, block, lambda run: [run() - run.x0],
                       skip=("scaled_mm_fused", "torchao_wo"), results=blocks)
    if "sweep" in modes:
        sweep = [int(t) for t in args.sweep.split(",")]
        lines += table("sweep (matmuls alone) over tokens per step", found, sweep,
                       lambda c, t: linears_fn(c[0], c[1], t), lambda run: run()[0],
                       only=("bf16", "scaled_mm_fused", "weight_only"), errors=False, results=sweeps)
    kernel, small_step, why = recommend(linears, blocks, sweeps, tokens)
    lines.append(f"Recommended for the model layer: FASTDLLM_FP8_KERNEL={kernel} "
                 f"FASTDLLM_FP8_WEIGHT_ONLY_TOKENS={small_step} ({why})")
    lines.append(f"\n{time.perf_counter() - started:.0f} s in all")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out_dir:
        Path(args.out_dir, "fp8_linear.md").write_text(text + "\n")
        # read by benchmarks/fp8_gpu_all.sh, so the engine runs that follow use the winner
        Path(args.out_dir, "fp8_kernel.env").write_text(
            f"export FASTDLLM_FP8_KERNEL={kernel} FASTDLLM_FP8_WEIGHT_ONLY_TOKENS={small_step}\n")


MAX_ERROR = 0.06  # e4m3 weights and activations: ~3.5% of a matmul's output; more is a wrong kernel


def recommend(linears: dict, blocks: dict, sweeps: dict, tokens: list[int]) -> tuple[str, int, str]:
    """The model layer's kernel from the block timings (the model's own situation) of the correct
    candidates: weight_only for small steps and scaled_mm for large ones (`auto`, switching where
    the sweep says weight_only stops winning), or the one that wins at both ends."""
    correct = {name for name in ("weight_only", "scaled_mm")
               if all((name, t) in linears and linears[name, t][1] is not None and linears[name, t][1] < MAX_ERROR
                      for t in tokens)}
    small, large = min(tokens), max(tokens)
    ms = {(name, t): blocks.get((name, t), (float("inf"),))[0] for name in ("weight_only", "scaled_mm")
          for t in (small, large)}
    if correct == {"scaled_mm"}:
        return "scaled_mm", 0, "weight_only is not correct"
    if correct == {"weight_only"}:
        return "weight_only", 0, "scaled_mm is not correct"
    if not correct:
        return "auto", 64, "no candidate measured correct: unchanged default"
    wo_small, wo_large = ms["weight_only", small] < ms["scaled_mm", small], ms["weight_only", large] < ms["scaled_mm", large]
    if wo_small and not wo_large:
        switch = small
        for t in sorted({t for _, t in sweeps}):  # the last size before weight_only first loses
            if sweeps.get(("weight_only", t), (float("inf"),))[0] >= sweeps.get(("scaled_mm_fused", t), (0.0,))[0]:
                break
            switch = max(switch, t)
        return "auto", switch, f"weight_only faster at {small} tokens, scaled_mm at {large}; sweep switch {switch}"
    if wo_small:
        return "weight_only", 0, f"weight_only faster at {small} and {large} tokens"
    return "scaled_mm", 0, f"scaled_mm faster at {small} tokens" + (" and " + str(large) if not wo_large else "")


def table(title, found, tokens, make, outputs, skip=(), only=None, errors=True, results=None) -> list[str]:
    """One markdown table: a row per candidate, per token count its time, ratio to bf16 and error
    (also kept in `results`: (candidate, tokens) -> (ms, error))."""
    head = " | ".join(f"{t} tok ms (x bf16){' / rel err' if errors else ''}" for t in tokens)
    lines = [f"### {title}", "", f"| candidate | {head} |", "|---|" + "---:|" * len(tokens)]
    baseline: dict[int, tuple[float, list]] = {}
    for name, candidate in found.items():
        if name in skip or (only is not None and name not in only):
            continue
        cells = []
        for t in tokens:
            try:
                run = make(candidate, t)
                if run is None:
                    break
                ms = graph_ms(run)
                out = outputs(run)
            except Exception as exc:  # a candidate that fails is reported, the others still run
                cells.append(f"failed: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            if name == "bf16":
                baseline[t] = (ms, out)
            base_ms, base_out = baseline.get(t, (float("nan"), None))
            err = max(rel_err(a, b) for a, b in zip(out, base_out)) if errors and base_out is not None else None
            cells.append(f"{ms:.2f} ({ms / base_ms:.2f}x)" + (f" / {err:.4f}" if err is not None else ""))
            if results is not None:
                results[name, t] = (ms, err)
            if DEVICE == "cuda":
                torch.cuda.synchronize()
        if cells:
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    return lines + [""]


if __name__ == "__main__":
    main()
