"""Per-layer kernel variants at the LLaDA-8B shape (device tool), timed inside CUDA graphs.

Each variant is captured 32 times in a row into one graph (as the 32 layers run in a
step) and the replay timed with CUDA events; the table gives microseconds per layer and
milliseconds per step (x32). Used to pick the K/V cache layout and the RoPE/compile mode.

    PYTHONPATH=. python3 benchmarks/gpu_kernels.py --batch 1,32
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.cuda_timing import graph_ms
from fastdllm_ray.decoding import StepRules, predict, select_transfer
from fastdllm_ray.decoding.select import confidence_of
from fastdllm_ray.model.llada import attention_inputs

H, D, DM, T, KV = 32, 128, 4096, 32, 384


def graph_time(fn, reps: int = 32, iters: int = 20) -> float:
    """Microseconds per call of fn, replayed `reps` times per graph."""
    return graph_ms(fn, reps, iters) * 1e3


def cache_variants(B: int) -> dict:
    L = KV + 1
    q = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    slots = torch.arange(B, device="cuda")
    write_pos = (128 + torch.arange(T, device="cuda"))[None].expand(B, T).contiguous()
    out = {}

    old_k = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16)
    old_v = torch.randn_like(old_k)

    def old():
        index = (slots[:, None], slice(None), write_pos)
        old_k[index] = k
        old_v[index] = v
        return F.scaled_dot_product_attention(q.transpose(1, 2), old_k[:, :, :KV], old_v[:, :, :KV])

    new_k = torch.randn(B, L, H, D, device="cuda", dtype=torch.bfloat16)
    new_v = torch.randn_like(new_k)
    rows = (slots[:, None] * L + write_pos).reshape(-1)

    def new():
        new_k.view(-1, H * D).index_copy_(0, rows, k.reshape(-1, H * D))
        new_v.view(-1, H * D).index_copy_(0, rows, v.reshape(-1, H * D))
        return F.scaled_dot_product_attention(q.transpose(1, 2), new_k[:, :KV].transpose(1, 2),
                                              new_v[:, :KV].transpose(1, 2))

    def new_write_only():
        new_k.view(-1, H * D).index_copy_(0, rows, k.reshape(-1, H * D))
        new_v.view(-1, H * D).index_copy_(0, rows, v.reshape(-1, H * D))

    def old_write_only():
        index = (slots[:, None], slice(None), write_pos)
        old_k[index] = k
        old_v[index] = v

    # same numbers from both layouts
    old(), new()
    ref = F.scaled_dot_product_attention(q.transpose(1, 2).float(), new_k[:, :KV].transpose(1, 2).float(),
                                         new_v[:, :KV].transpose(1, 2).float())
    err = lambda a: float((a.float() - ref).norm() / ref.norm())  # noqa: E731
    old_k.copy_(new_k.transpose(1, 2)), old_v.copy_(new_v.transpose(1, 2))
    out["agree old/new vs fp32"] = (err(old()), err(new()))
    out["cache old [S,H,L,D] write+sdpa"] = graph_time(old)
    out["cache new [S,L,H,D] write+sdpa"] = graph_time(new)
    out["cache old write only"] = graph_time(old_write_only)
    out["cache new write only"] = graph_time(new_write_only)
    return out


def input_variants(B: int) -> dict:
    x = torch.randn(B, T, DM, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(3 * DM, DM, device="cuda", dtype=torch.bfloat16) * 0.02
    norm = torch.ones(DM, device="cuda", dtype=torch.bfloat16)
    pos = (128 + torch.arange(T, device="cuda"))[None].expand(B, T)
    from fastdllm_ray.model.llada import rope_tables

    sin, cos = rope_tables(pos, D, 500000.0)
    out = {"qkv matmul alone": graph_time(lambda: F.linear(x, w))}
    for name, fn in (("eager", attention_inputs),
                     ("compiled dynamic", torch.compile(attention_inputs, dynamic=True)),
                     ("compiled static", torch.compile(attention_inputs, dynamic=False))):
        out[f"attention_inputs {name}"] = graph_time(lambda fn=fn: fn(x, norm, 1e-5, (w,), sin, cos, H, H))
    return out


def decode_variants(B: int) -> dict:
    logits = torch.randn(B, T, 126464, device="cuda", dtype=torch.bfloat16)
    masked = torch.ones(B, T, dtype=torch.bool, device="cuda")
    rules = StepRules(rule=torch.zeros(B, dtype=torch.long, device="cuda"),
                      fixed_count=torch.ones(B, dtype=torch.long, device="cuda"),
                      threshold=torch.ones(B, dtype=torch.float64, device="cuda"),
                      factor=torch.ones(B, dtype=torch.float64, device="cuda"),
                      temperature=torch.zeros(B, dtype=torch.float64, device="cuda"),
                      random_remasking=torch.zeros(B, dtype=torch.bool, device="cuda"),
                      any_sampling=False, any_random=False)
    compiled = torch.compile(confidence_of, dynamic=True)

    def step():
        x0, conf = predict(logits, rules, None, compiled, 126336)
        return select_transfer(conf, masked, rules)

    return {"decode step (predict+select)": graph_time(step, reps=1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,32")
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__}")
    for B in (int(b) for b in args.batch.split(",")):
        rows = {**cache_variants(B), **input_variants(B), **decode_variants(B)}
        print(f"\n== batch {B}, T {T}, kv {KV}: us per layer | ms per step (x32 layers)")
        for name, value in rows.items():
            if isinstance(value, tuple):
                print(f"{name:45s} {value[0]:.2e} {value[1]:.2e}")
            else:
                print(f"{name:45s} {value:9.1f} us | {value * 32 / 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
