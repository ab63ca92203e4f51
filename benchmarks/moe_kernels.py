"""LLaDA2.0-mini's mixture-of-experts layer on the GPU (device tool): the routed experts as two
grouped GEMMs over the tokens each expert got (`routed_experts`, torch._grouped_mm, what the
engine runs), eager and replayed from a CUDA graph, against a loop over the experts that got
tokens (the reference's moe_infer: one pair of matmuls per expert, after a host read of the
counts). A random bf16 layer of the real shape: hidden 2048, 256 experts of 512, 8 per token,
8 groups of which 4 are kept, routed_scaling_factor 2.5, one shared expert.

For each token count: distinct experts touched, the floor of the step (reading the weights of
the experts it touches, or its FLOPs, whichever is longer, at --hbm-gbps / --tflops; defaults:
H100 SXM), each path's time, and how far the grouped path's output is from the loop's (both
bf16) and from a float32 loop. Exits non-zero if they disagree or a CUDA graph cannot hold
the grouped path.

    PYTHONPATH=. python3 benchmarks/moe_kernels.py --tokens 32,1024
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from fastdllm_ray.model.llada2_config import LLaDA2Config
from fastdllm_ray.model.llada2_moe import MoELayer, grouped_mm_usable, routed_experts

MINI = {  # inclusionAI/LLaDA2.0-mini config.json (the MoE part; attention fields do not matter here)
    "model_type": "llada2_moe", "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4,
    "head_dim": 128, "num_hidden_layers": 20, "intermediate_size": 5120, "moe_intermediate_size": 512,
    "num_experts": 256, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "num_shared_experts": 1,
    "first_k_dense_replace": 1, "routed_scaling_factor": 2.5, "partial_rotary_factor": 0.5,
    "vocab_size": 157184, "max_position_embeddings": 16384, "mask_token_id": 156895, "rope_theta": 600000,
}


def random_layer(cfg: LLaDA2Config, seed: int = 0) -> MoELayer:
    torch.manual_seed(seed)
    layer = MoELayer(cfg).to("cuda", torch.bfloat16)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.normal_(0.0, p.shape[-1] ** -0.5)
        layer.gate.expert_bias.normal_(0.0, 0.1)
    return layer


def loop_experts(x, chosen, weights, gate_up, down) -> torch.Tensor:
    """The reference's moe_infer: sorted pairs, then one expert at a time over its slice."""
    n, k = chosen.shape
    inter = down.shape[2]
    flat = chosen.reshape(-1)
    order = flat.argsort()
    counts = torch.bincount(flat, minlength=gate_up.shape[0]).tolist()
    xs, outs, start = x[order // k], [], 0
    for e, count in enumerate(counts):
        if count:
            h = F.linear(xs[start:start + count], gate_up[e])
            outs.append(F.linear(F.silu(h[:, :inter]) * h[:, inter:], down[e]))
            start += count
    out = torch.cat(outs)
    in_token_order = torch.empty_like(out).index_copy_(0, order, out)
    return (in_token_order.view(n, k, -1).float() * weights[..., None]).sum(dim=1).to(x.dtype)


def median_ms(fn, iters: int = 30) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def graph_of(fn):
    """fn captured in a CUDA graph; returns (replay, the graph's output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def measure(layer: MoELayer, cfg: LLaDA2Config, tokens: int, hbm_gbps: float, tflops: float) -> dict:
    x = torch.randn(tokens, cfg.d_model, device="cuda", dtype=torch.bfloat16)
    gate_up, down = layer.experts.gate_up, layer.experts.down
    with torch.inference_mode():
        chosen, weights = layer.gate(x)
        grouped = lambda: routed_experts(x, chosen, weights, gate_up, down)  # noqa: E731
        loop = lambda: loop_experts(x, chosen, weights, gate_up, down)  # noqa: E731
        replay, graph_out = graph_of(grouped)
        replay_layer, _ = graph_of(lambda: layer(x))
        replay()
        exact = loop_experts(x.float(), chosen, weights, gate_up.float(), down.float())
        out_grouped, out_loop = grouped(), loop()
        torch.cuda.synchronize()
        scale = exact.abs().max().item()
        row = {
            "tokens": tokens,
            "experts": int(chosen.unique().numel()),
            "grouped_ms": median_ms(grouped), "graph_ms": median_ms(replay), "loop_ms": median_ms(loop),
            "layer_graph_ms": median_ms(replay_layer),
            "err_grouped": (out_grouped.float() - exact).abs().max().item() / scale,
            "err_loop": (out_loop.float() - exact).abs().max().item() / scale,
            "graph_matches": torch.equal(graph_out, out_grouped),
        }
    params_per_expert = 3 * cfg.moe_intermediate_size * cfg.d_model  # gate, up, down
    floor_read = row["experts"] * params_per_expert * 2 / (hbm_gbps * 1e9) * 1e3  # bf16 bytes
    floor_compute = 2 * tokens * cfg.num_experts_per_tok * params_per_expert / (tflops * 1e12) * 1e3
    row["floor_ms"] = max(floor_read, floor_compute)
    row["bound"] = "read" if floor_read >= floor_compute else "compute"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="32,1024", help="token counts per step (32: batch 1 of a 32-block)")
    parser.add_argument("--hbm-gbps", type=float, default=3350.0, help="memory bandwidth for the floor (H100 SXM)")
    parser.add_argument("--tflops", type=float, default=989.0, help="dense bf16 peak for the floor (H100 SXM)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("moe_kernels.py: needs a CUDA GPU (it times bf16 grouped GEMMs); torch sees none")
    device = torch.device("cuda", torch.cuda.current_device())
    path = "torch._grouped_mm" if grouped_mm_usable(device, torch.bfloat16) else "padded bmm fallback"
    cfg = LLaDA2Config.from_dict(MINI)
    layer = random_layer(cfg)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, grouped path: {path}")
    print(f"`PYTHONPATH=. python3 benchmarks/moe_kernels.py --tokens {args.tokens}`\n")
    print("| tokens | experts touched | floor ms | grouped ms (eager) | grouped ms (graph) | x floor | "
          "loop ms | loop / graph | MoE layer ms (graph) | rel err grouped | rel err loop |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    failures = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        r = measure(layer, cfg, tokens, args.hbm_gbps, args.tflops)
        print(f"| {tokens} | {r['experts']} | {r['floor_ms']:.3f} ({r['bound']}) | {r['grouped_ms']:.3f} | "
              f"{r['graph_ms']:.3f} | {r['graph_ms'] / r['floor_ms']:.2f} | {r['loop_ms']:.3f} | "
              f"{r['loop_ms'] / r['graph_ms']:.1f} | {r['layer_graph_ms']:.3f} | {r['err_grouped']:.1e} | "
              f"{r['err_loop']:.1e} |")
        if r["err_grouped"] > max(2 * r["err_loop"], 1e-2):
            failures.append(f"{tokens} tokens: grouped path off by {r['err_grouped']:.2e} (loop {r['err_loop']:.2e})")
        if not r["graph_matches"]:
            failures.append(f"{tokens} tokens: the CUDA graph's replay differs from the eager grouped path")
    if failures:
        sys.exit("moe_kernels.py: " + "; ".join(failures))


if __name__ == "__main__":
    main()
