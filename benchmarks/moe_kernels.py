"""LLaDA2.0-mini's mixture-of-experts layer on the GPU (device tool): the routed experts as the
fused Triton kernels (model/moe_triton.py, what the engine runs on CUDA) and as two grouped
GEMMs (torch._grouped_mm, `FASTDLLM_MOE_BACKEND=grouped_mm`), eager and replayed from a CUDA
graph, against a loop over the experts that got tokens (the reference's moe_infer: one pair
of matmuls per expert, after a host read of the counts). A random bf16 layer of the real
shape: hidden 2048, 256 experts of 512, 8 per token, 8 groups of which 4 are kept,
routed_scaling_factor 2.5, one shared expert.

For each token count: distinct experts touched, the floor (reading the weights of the
experts it touches, or its FLOPs, whichever is longer, at --hbm-gbps / --tflops; defaults:
H100 SXM), each path's time, the whole MoE layer (router, routed and shared experts) on each
path (fused: the Triton router, then the experts with the shared one in the same launches;
grouped: the torch router, grouped GEMMs, the shared expert's own SwiGLU) against its floor
(the touched and shared experts' and the router's weights), and how far each routed path's
output is from a float32 loop. Then the Triton path's four launches one by one (each timed
in a graph of 10) against the read floors of its two GEMMs, and the two routers. Exits
non-zero if a path disagrees with the loop, a CUDA graph of the Triton path does not
reproduce it eagerly, also after the routing changes under the graph (all tokens on the same
8 experts, then on as many as can be), the routers choose differently for more than 1% of
the tokens (a near-tie may fall either way: float32 sums in other orders), or the two whole
layers' outputs differ where the routers agree.

`--sweep` then times other block and tile shapes of the two Triton GEMMs (for choosing
moe_triton's SMALL / MEDIUM / LARGE; ~1 minute of compiling).

    PYTHONPATH=. python3 benchmarks/moe_kernels.py --tokens 32,1024 [--sweep]
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
import torch.nn.functional as F

from benchmarks.cuda_timing import capture, graph_ms, median_ms
from fastdllm_ray.model import llada2_moe, moe_router_triton, moe_triton
from fastdllm_ray.model.llada2_config import LLaDA2Config
from fastdllm_ray.model.llada2_moe import MoELayer, grouped_experts, grouped_mm_usable, route
from fastdllm_ray.model.moe_triton import Tile

MINI = {  # inclusionAI/LLaDA2.0-mini config.json (the MoE part; attention fields do not matter here)
    "model_type": "llada2_moe", "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4,
    "head_dim": 128, "num_hidden_layers": 20, "intermediate_size": 5120, "moe_intermediate_size": 512,
    "num_experts": 256, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "num_shared_experts": 1,
    "first_k_dense_replace": 1, "routed_scaling_factor": 2.5, "partial_rotary_factor": 0.5,
    "vocab_size": 157184, "max_position_embeddings": 16384, "mask_token_id": 156895, "rope_theta": 600000,
}
DEVICE = "cuda"
SWEEP_BLOCK_M = (16, 32, 64)
SWEEP_GATE_UP = [Tile(32, 128), Tile(32, 64, 4, 4), Tile(64, 128), Tile(64, 64, 4, 4), Tile(64, 128, 8, 3),
                 Tile(128, 64, 8, 3)]
SWEEP_DOWN = [Tile(64, 128), Tile(32, 128), Tile(128, 64, 4, 4), Tile(64, 64, 4, 4), Tile(128, 128, 8, 3),
              Tile(256, 64, 8, 3)]


def random_layer(cfg: LLaDA2Config, seed: int = 0) -> MoELayer:
    torch.manual_seed(seed)
    layer = MoELayer(cfg).to(DEVICE, torch.bfloat16)
    with torch.no_grad():
        for _name, p in layer.named_parameters():
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


def per_call_ms(fn, reps: int = 10) -> float:
    """One launch's time: a graph of `reps` calls, replayed, divided (no launch overhead)."""
    return graph_ms(fn, reps, iters=10)


@contextlib.contextmanager
def backend(name: str):
    saved, llada2_moe.MOE_BACKEND = llada2_moe.MOE_BACKEND, name
    try:
        yield
    finally:
        llada2_moe.MOE_BACKEND = saved


def rel_err(out: torch.Tensor, exact: torch.Tensor) -> float:
    return (out.float() - exact).abs().max().item() / exact.abs().max().item()


def replays_follow_routing(fused, chosen: torch.Tensor, experts: int) -> bool:
    """A graph of the fused path, captured for one routing, replayed for others (written into
    the tensor it reads), equals the eager path each time."""
    replay, out = capture(fused)
    saved, n, k = chosen.clone(), *chosen.shape
    same = torch.arange(k, device=chosen.device).repeat(n, 1)  # every pair on the same k experts
    spread = (torch.arange(n * k, device=chosen.device) % experts).view(n, k)  # on as many as can be
    ok = True
    for routing in (same, spread, saved):
        chosen.copy_(routing)
        replay()
        ok &= torch.equal(out, fused())
    return ok


def measure(layer: MoELayer, cfg: LLaDA2Config, tokens: int, hbm_gbps: float, tflops: float) -> dict:
    x = torch.randn(tokens, cfg.d_model, device=DEVICE, dtype=torch.bfloat16)
    gate_up, down = layer.experts.gate_up, layer.experts.down
    with torch.inference_mode():
        chosen, weights = layer.gate(x)
        grouped = lambda: grouped_experts(x, chosen, weights, gate_up, down)  # noqa: E731
        fused = lambda: moe_triton.fused_experts(x, chosen, weights, gate_up, down)  # noqa: E731
        loop = lambda: loop_experts(x, chosen, weights, gate_up, down)  # noqa: E731
        replay_grouped, graph_grouped = capture(grouped)
        replay_fused, graph_fused = capture(fused)
        layers = {}
        for name in ("grouped_mm", "triton"):
            with backend(name):
                layers[name], _ = capture(lambda: layer(x))
        replay_grouped()
        replay_fused()
        exact = loop_experts(x.float(), chosen, weights, gate_up.float(), down.float())
        out_grouped, out_fused, out_loop = grouped(), fused(), loop()
        torch.cuda.synchronize()
        row = {
            "tokens": tokens, "experts": int(chosen.unique().numel()),
            "grouped_ms": median_ms(grouped), "grouped_graph_ms": median_ms(replay_grouped),
            "fused_ms": median_ms(fused), "fused_graph_ms": median_ms(replay_fused), "loop_ms": median_ms(loop),
            "layer_grouped_ms": median_ms(layers["grouped_mm"]), "layer_fused_ms": median_ms(layers["triton"]),
            "err_grouped": rel_err(out_grouped, exact), "err_fused": rel_err(out_fused, exact),
            "err_loop": rel_err(out_loop, exact),
            "grouped_graph_matches": torch.equal(graph_grouped, out_grouped),
            "fused_graph_matches": torch.equal(graph_fused, out_fused),
            "fused_graph_follows_routing": replays_follow_routing(fused, chosen, cfg.num_experts),
        }
        row["stages"] = stage_times(layer, x, chosen, weights)
        row.update(router_check(layer, x))
        outs = {}
        for name in ("grouped_mm", "triton"):
            with backend(name):
                outs[name] = layer(x)
        agree = row.pop("router_agree")  # a token the routers send apart has no common answer
        row["err_layer"] = rel_err(outs["triton"][agree], outs["grouped_mm"][agree].float())
    params_per_expert = 3 * cfg.moe_intermediate_size * cfg.d_model  # gate, up, down
    floor_read = row["experts"] * params_per_expert * 2 / (hbm_gbps * 1e9) * 1e3  # bf16 bytes
    floor_compute = 2 * tokens * cfg.num_experts_per_tok * params_per_expert / (tflops * 1e12) * 1e3
    row["floor_ms"] = max(floor_read, floor_compute)
    row["bound"] = "read" if floor_read >= floor_compute else "compute"
    # the layer: the touched experts, the shared one (which the fused launches also run) and the router
    shared_read = params_per_expert * 2 / (hbm_gbps * 1e9) * 1e3
    router_read = cfg.num_experts * cfg.d_model * 2 / (hbm_gbps * 1e9) * 1e3
    row["floor_layer_ms"] = max(floor_read + shared_read + router_read, floor_compute * 9 / 8)
    row["floor_gate_up_ms"], row["floor_down_ms"] = (floor_read + shared_read) * 2 / 3, (floor_read + shared_read) / 3
    return row


def router_check(layer: MoELayer, x: torch.Tensor) -> dict:
    """The torch router against the Triton one: time (graphs of 10), tokens whose chosen set
    differs (a near-tie the two float32 summation orders break apart), and the largest weight
    difference where they agree."""
    g, c = layer.gate, layer.gate.cfg
    args = (x, g.weight, g.expert_bias, c.n_group, c.topk_group, c.num_experts_per_tok, c.routed_scaling_factor)
    (chosen, weights), (fused_chosen, fused_weights) = route(*args), moe_router_triton.route(*args)
    differ = (chosen.sort(dim=-1).values != fused_chosen.sort(dim=-1).values).any(dim=-1)
    same = ~differ & (chosen == fused_chosen).all(dim=-1)
    return {"router_agree": ~differ,
            "router_ms": per_call_ms(lambda: route(*args)),
            "router_fused_ms": per_call_ms(lambda: moe_router_triton.route(*args)),
            "router_differ": int(differ.sum()),
            "router_weight_err": (weights - fused_weights)[same].abs().max().item() if same.any() else float("nan")}


def stage_times(layer: MoELayer, x, chosen, weights) -> dict[str, float]:
    """Each launch of the fused path as the MoE layer runs it (with the shared expert)."""
    gate_up, down, shared = layer.experts.gate_up, layer.experts.down, layer.shared_weights()
    cfg = moe_triton.choose_config(chosen.numel(), gate_up.shape[0], x.dtype)
    align = lambda: moe_triton.align(chosen, gate_up.shape[0], cfg.block_m, shared=True)  # noqa: E731
    routing = align()
    h = moe_triton.gate_up_swiglu(x, gate_up, routing, cfg.gate_up, shared)
    pair_out = moe_triton.down_proj(h, down, routing, cfg.down, shared)
    return {
        "block_m": cfg.block_m,
        "align": per_call_ms(align),
        "gate_up": per_call_ms(lambda: moe_triton.gate_up_swiglu(x, gate_up, routing, cfg.gate_up, shared)),
        "down": per_call_ms(lambda: moe_triton.down_proj(h, down, routing, cfg.down, shared)),
        "combine": per_call_ms(lambda: moe_triton.combine(pair_out, weights, shared=True)),
    }


def sweep(layer: MoELayer, cfg: LLaDA2Config, tokens: int, floors: tuple[float, float]) -> None:
    """Each GEMM of the Triton path (shared expert included, as the layer runs it) under other
    block and tile shapes; a shape that fails is a row saying so."""
    x = torch.randn(tokens, cfg.d_model, device=DEVICE, dtype=torch.bfloat16)
    gate_up, down, shared = layer.experts.gate_up, layer.experts.down, layer.shared_weights()
    with torch.inference_mode():
        chosen, _ = layer.gate(x)
        for block_m in SWEEP_BLOCK_M:
            routing = moe_triton.align(chosen, gate_up.shape[0], block_m, shared=True)
            h = moe_triton.gate_up_swiglu(x, gate_up, routing, SWEEP_GATE_UP[0], shared)
            for kernel, tiles, floor in (("gate_up", SWEEP_GATE_UP, floors[0]), ("down", SWEEP_DOWN, floors[1])):
                for t in tiles:
                    if kernel == "gate_up":
                        run = lambda t=t, r=routing: moe_triton.gate_up_swiglu(x, gate_up, r, t, shared)  # noqa: E731
                    else:
                        run = lambda t=t, r=routing, h=h: moe_triton.down_proj(h, down, r, t, shared)  # noqa: E731
                    try:
                        ms = per_call_ms(run)
                        cell = f"{ms * 1e3:.1f} | {ms / floor:.2f}"
                    except Exception as exc:  # noqa: BLE001 (a shape the GPU cannot run is a row, not the end)
                        cell = f"failed: {type(exc).__name__} | "
                    print(f"| {tokens} | {block_m} | {kernel} | {t.block_n} | {t.block_k} | {t.warps} | {t.stages} | "
                          f"{cell} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="32,1024", help="token counts per step (32: batch 1 of a 32-block)")
    parser.add_argument("--hbm-gbps", type=float, default=3350.0, help="memory bandwidth for the floor (H100 SXM)")
    parser.add_argument("--tflops", type=float, default=989.0, help="dense bf16 peak for the floor (H100 SXM)")
    parser.add_argument("--sweep", action="store_true", help="also time other tile shapes of the Triton GEMMs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("moe_kernels.py: needs a CUDA GPU (it times bf16 grouped GEMMs); torch sees none")
    if not moe_triton.available(torch.device("cuda"), torch.bfloat16):
        sys.exit("moe_kernels.py: needs Triton (the fused path); it does not import")
    device = torch.device("cuda", torch.cuda.current_device())
    grouped = "torch._grouped_mm" if grouped_mm_usable(device, torch.bfloat16) else "padded bmm fallback"
    cfg = LLaDA2Config.from_dict(MINI)
    layer = random_layer(cfg)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, triton {moe_triton.triton.__version__}, "
          f"grouped path: {grouped}")
    print(f"`PYTHONPATH=. python3 benchmarks/moe_kernels.py --tokens {args.tokens}{' --sweep' * args.sweep}`\n")
    print("| tokens | experts touched | floor ms | grouped ms (eager) | grouped ms (graph) | fused ms (eager) | "
          "fused ms (graph) | fused x floor | loop ms | MoE layer floor ms | layer ms (graph): grouped | fused | "
          "fused x floor | rel err grouped | fused | loop |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    failures, rows = [], []
    for tokens in (int(t) for t in args.tokens.split(",")):
        r = measure(layer, cfg, tokens, args.hbm_gbps, args.tflops)
        rows.append(r)
        print(f"| {tokens} | {r['experts']} | {r['floor_ms']:.3f} ({r['bound']}) | {r['grouped_ms']:.3f} | "
              f"{r['grouped_graph_ms']:.3f} | {r['fused_ms']:.3f} | {r['fused_graph_ms']:.3f} | "
              f"{r['fused_graph_ms'] / r['floor_ms']:.2f} | {r['loop_ms']:.3f} | {r['floor_layer_ms']:.3f} | "
              f"{r['layer_grouped_ms']:.3f} | {r['layer_fused_ms']:.3f} | {r['layer_fused_ms'] / r['floor_layer_ms']:.2f} | "
              f"{r['err_grouped']:.1e} | {r['err_fused']:.1e} | {r['err_loop']:.1e} |",
              flush=True)
        bound = max(2 * r["err_loop"], 1e-2)
        for path in ("grouped", "fused"):
            if r[f"err_{path}"] > bound:
                failures.append(f"{tokens} tokens: {path} path off by {r[f'err_{path}']:.2e} (loop {r['err_loop']:.2e})")
            if not r[f"{path}_graph_matches"]:
                failures.append(f"{tokens} tokens: the CUDA graph's replay differs from the eager {path} path")
        if not r["fused_graph_follows_routing"]:
            failures.append(f"{tokens} tokens: a graph of the fused path replayed for a new routing differs from eager")
        if r["err_layer"] > bound:
            failures.append(f"{tokens} tokens: the fused MoE layer is off the grouped one by {r['err_layer']:.2e}")
        if r["router_differ"] > max(1, tokens // 100) or not r["router_weight_err"] <= 1e-5:
            failures.append(f"{tokens} tokens: the Triton router differs from the torch router "
                            f"({r['router_differ']} tokens, weights by {r['router_weight_err']:.1e})")
    print("\nThe fused path's launches as the layer runs them (with the shared expert), each in a graph of 10 "
          "(us; GEMMs against the read floor of their weights):\n")
    print("| tokens | block_m | align | gate_up + SwiGLU | x floor | down | x floor | combine | sum |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["stages"]
        total = s["align"] + s["gate_up"] + s["down"] + s["combine"]
        print(f"| {r['tokens']} | {s['block_m']} | {s['align'] * 1e3:.1f} | {s['gate_up'] * 1e3:.1f} | "
              f"{s['gate_up'] / r['floor_gate_up_ms']:.2f} | {s['down'] * 1e3:.1f} | {s['down'] / r['floor_down_ms']:.2f} | "
              f"{s['combine'] * 1e3:.1f} | {total * 1e3:.1f} |", flush=True)
    print("\nThe router (graphs of 10): torch ops against the two Triton kernels:\n")
    print("| tokens | torch ms | Triton ms | tokens choosing differently | largest weight difference | "
          "layer: rel diff fused / grouped |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tokens']} | {r['router_ms']:.3f} | {r['router_fused_ms']:.3f} | {r['router_differ']} | "
              f"{r['router_weight_err']:.1e} | {r['err_layer']:.1e} |", flush=True)
    if args.sweep:
        print("\n| tokens | block_m | kernel | block_n | block_k | warps | stages | us | x floor |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            sweep(layer, cfg, r["tokens"], (r["floor_gate_up_ms"], r["floor_down_ms"]))
    if failures:
        sys.exit("moe_kernels.py: " + "; ".join(failures))


if __name__ == "__main__":
    main()
