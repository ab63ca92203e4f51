"""Attention kernels for one engine step over a paged K/V cache (LLaDA-8B layer: 32 heads x 128, bf16).

Compares, per layer call, on the same inputs: the slot layout the engine used before (every row
padded to the longest sequence, SDPA with a key mask), our Triton kernel over pages
(model/paged_attention.py), PyTorch's FlexAttention with a block mask built from the page
tables, and PyTorch's varlen FlashAttention with a block table where this torch has it. Each is
checked against float32 SDPA row by row, and timed inside a CUDA graph (median of replays).

    PYTHONPATH=. python3 benchmarks/attention_kernels.py --out-dir $OUT
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.cuda_timing import graph_ms
from fastdllm_ray.model.paged_attention import PagedBatch, gather_keys, paged_attention, query_tiles

H, D = 32, 128
CASES = {  # name: (query lengths, key lengths); a refresh row's query is its whole sequence
    "batch 1, dual step, 384 keys": ([32], [384]),
    "batch 32, dual steps, 384 keys each": ([32] * 32, [384] * 32),
    "batch 32, dual steps, 96-800 keys": ([32] * 32, None),
    "batch 32, 28 dual + 4 refreshes, 96-800 keys": ([32] * 28 + [-1] * 4, None),
}


def make_case(q_lens, kv_lens, page_size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = len(q_lens)
    if kv_lens is None:
        kv_lens = torch.randint(96, 801, (rows,), generator=gen).tolist()
    q_lens = [k if q < 0 else q for q, k in zip(q_lens, kv_lens)]
    pages_needed = [-(-k // page_size) for k in kv_lens]
    num_pages = sum(pages_needed) + 8
    order = torch.randperm(num_pages, generator=gen)
    table = torch.zeros(rows, max(pages_needed), dtype=torch.int32)
    used = 0
    for r, n in enumerate(pages_needed):
        table[r, :n] = order[used: used + n].int()
        used += n
    k_pool = torch.randn(num_pages, page_size, H, D, generator=gen).to(torch.bfloat16)
    v_pool = torch.randn(num_pages, page_size, H, D, generator=gen).to(torch.bfloat16)
    cu = [0]
    for n in q_lens:
        cu.append(cu[-1] + n)
    q = torch.randn(cu[-1], H, D, generator=gen).to(torch.bfloat16)
    return q, k_pool, v_pool, table, q_lens, kv_lens, cu


def reference(q, k_pool, v_pool, table, kv_lens, cu):
    batch = PagedBatch(torch.tensor(cu), torch.tensor(kv_lens), table, k_pool.shape[1], host=(cu, kv_lens))
    from fastdllm_ray.model.paged_attention import paged_attention_sdpa
    return paged_attention_sdpa(q.float(), k_pool.float(), v_pool.float(), batch)


def padded_sdpa(q, k_pool, v_pool, table, q_lens, kv_lens, cu):
    """The old layout: contiguous per-slot K/V up to the batch's longest sequence, queries padded."""
    rows, kv_max, q_max = len(q_lens), max(kv_lens), max(q_lens)

    def slots(pool):
        return torch.stack([F.pad(gather_keys(pool, table[r], kv_lens[r]), (0, 0, 0, 0, 0, kv_max - kv_lens[r]))
                            for r in range(rows)])

    slots_k, slots_v = slots(k_pool), slots(v_pool)
    q_pad = torch.zeros(rows, q_max, H, D, dtype=q.dtype, device=q.device)
    for r in range(rows):
        q_pad[r, : q_lens[r]] = q[cu[r]: cu[r + 1]]
    mask = (torch.arange(kv_max, device=q.device)[None, :] < torch.tensor(kv_lens, device=q.device)[:, None])
    mask = mask[:, None, None, :]

    def run():
        return F.scaled_dot_product_attention(q_pad.transpose(1, 2), slots_k.transpose(1, 2),
                                              slots_v.transpose(1, 2), attn_mask=mask)

    def unpack(out):
        return torch.cat([out.transpose(1, 2)[r, : q_lens[r]] for r in range(rows)])

    return run, unpack


def ours(q, k_pool, v_pool, table, q_lens, kv_lens, cu):
    cu_t = torch.tensor(cu, dtype=torch.int32, device=q.device)
    kv_len = torch.tensor(kv_lens, dtype=torch.int32, device=q.device)
    tiles = sum(-(-n // 32) for n in q_lens) + 4  # enough for 32- and 64-query tiles

    row, start = query_tiles(cu_t, tiles)  # once per forward in the engine, not per layer
    batch = PagedBatch(cu_t, kv_len, table, k_pool.shape[1], row, start)

    def run():
        return paged_attention(q, k_pool, v_pool, batch)

    return run, lambda out: out


def flex(q, k_pool, v_pool, table, q_lens, kv_lens, cu, q_block=128):
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    rows, ps = len(q_lens), k_pool.shape[1]
    q_max = -(-max(q_lens) // q_block) * q_block
    options = {"BLOCK_M": q_block, "BLOCK_N": min(ps, 64)} if q_block < 128 or ps < 128 else None
    q_pad = torch.zeros(rows, H, q_max, D, dtype=q.dtype, device=q.device)
    for r in range(rows):
        q_pad[r, :, : q_lens[r]] = q[cu[r]: cu[r + 1]].transpose(0, 1)
    keys = k_pool.view(1, -1, H, D).transpose(1, 2)
    values = v_pool.view(1, -1, H, D).transpose(1, 2)
    kv_len = torch.tensor(kv_lens, dtype=torch.int32, device=q.device)
    n_qb = q_max // q_block
    full = (kv_len // ps)
    partial = (kv_len % ps > 0).int()
    last = table.gather(1, full.clamp(max=table.shape[1] - 1)[:, None].long())
    part_idx = torch.cat([last, torch.zeros_like(table[:, 1:])], 1)
    expand = lambda t: t[:, None, None].expand(rows, 1, n_qb).contiguous()  # noqa: E731
    # kv_indices must span every KV block of the key sequence (the pool's pages), padded
    width = k_pool.shape[0]
    expand_idx = lambda t: F.pad(t, (0, width - t.shape[1]))[:, None, None, :].expand(rows, 1, n_qb, width).contiguous()  # noqa: E731

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx % ps) < (kv_len[b] % ps)

    block_mask = BlockMask.from_kv_blocks(expand(partial), expand_idx(part_idx), expand(full.int()), expand_idx(table),
                                          BLOCK_SIZE=(q_block, ps), mask_mod=mask_mod, seq_lengths=(q_max, keys.shape[2]))

    def run():
        return compiled(q_pad, keys, values, block_mask=block_mask, kernel_options=options)

    def unpack(out):
        return torch.cat([out[r, :, : q_lens[r]].transpose(0, 1) for r in range(rows)])

    return run, unpack


def ours_m64(*args):
    import fastdllm_ray.model.paged_attention as pa

    pa.TILE_M = 64
    run, unpack = ours(*args)

    def run64():
        pa.TILE_M = 64
        try:
            return run()
        finally:
            pa.TILE_M = 32

    pa.TILE_M = 32
    return run64, unpack


def flex_q32(*args):
    return flex(*args, q_block=32)


def varlen(q, k_pool, v_pool, table, q_lens, kv_lens, cu):
    from torch.nn.attention.varlen import varlen_attn

    if "block_table" not in inspect.signature(varlen_attn).parameters:
        raise RuntimeError(f"torch {torch.__version__}: varlen_attn has no block_table")
    cu_q = torch.tensor(cu, dtype=torch.int32, device=q.device)
    used = torch.tensor(kv_lens, dtype=torch.int32, device=q.device)

    def run():
        return varlen_attn(q, k_pool, v_pool, cu_q, None, max(q_lens), max(kv_lens), seqused_k=used, block_table=table)

    return run, lambda out: out


IMPLS = {f.__name__: f for f in (padded_sdpa, ours, ours_m64, flex, flex_q32, varlen)}


def graph_time(run, repeats=50) -> float:
    """Median microseconds of a graph replay of `run`."""
    return graph_ms(run, iters=repeats) * 1e3


WRONG = 0.05  # relative error above which a kernel's output is wrong, not imprecise


def markdown(results: list[dict]) -> str:
    """One line per case and page size, one column per kernel (us per layer call); failures named below."""
    impls = list(dict.fromkeys(r["impl"] for r in results))
    keys = list(dict.fromkeys((r["case"], r["page_size"]) for r in results))
    cell = {(r["case"], r["page_size"], r["impl"]): r for r in results}
    lines = ["| case | page | K/V read floor us | " + " | ".join(impls) + " |",
             "|---|---:|---:|" + "---:|" * len(impls)]
    errors = {}
    for case, page in keys:
        row = [cell.get((case, page, i)) for i in impls]
        floor = next((r["kv_floor_us"] for r in row if r and "us" in r), float("nan"))
        shown = []
        for impl, r in zip(impls, row):
            if r is None:
                shown.append("")
            elif "error" in r:
                errors.setdefault(r["error"], []).append(f"{impl} ({case}, page {page})")
                shown.append("failed")
            elif r["rel_err"] > WRONG:
                shown.append(f"wrong ({r['rel_err']:.2f})")
            else:
                shown.append(f"{r['us']:.1f}")
        lines.append(f"| {case} | {page} | {floor:.1f} | " + " | ".join(shown) + " |")
    worst = max((r["rel_err"] for r in results if r.get("rel_err", 1) <= WRONG), default=float("nan"))
    lines += ["", f"Cells are microseconds per layer call; `wrong (e)`: the output's relative error e against float32 "
              f"SDPA exceeds {WRONG} (a bf16 kernel that works stays near 2e-3; the largest shown is {worst:.1e})."]
    for error, where in errors.items():
        lines.append(f"- failed: {', '.join(where[:3])}{' ...' if len(where) > 3 else ''}: `{error}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--page-sizes", default="16,64,128")
    ap.add_argument("--impls", default="padded_sdpa,ours,flex,flex_q32,varlen")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--from-json", default=None, help="print the table of a saved run (no GPU)")
    args = ap.parse_args()
    if args.from_json:
        print(markdown(json.loads(Path(args.from_json).read_text())))
        return
    bandwidth = 3.0e12
    results = []
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    for name, (q_lens, kv_lens) in CASES.items():
        for ps in [int(p) for p in args.page_sizes.split(",")]:
            case = make_case(q_lens, kv_lens, ps)
            q, k_pool, v_pool, table, ql, kl, cu = case
            ref = reference(q, k_pool, v_pool, table, kl, cu)
            dev = [t.cuda() if isinstance(t, torch.Tensor) else t for t in (q, k_pool, v_pool, table)]
            kv_bytes = sum(kl) * H * D * 2 * 2
            for impl in [IMPLS[i] for i in args.impls.split(",")]:
                if impl is padded_sdpa and ps != 64:
                    continue
                row = {"case": name, "page_size": ps, "impl": impl.__name__}
                try:
                    run, unpack = impl(*dev, ql, kl, cu)
                    out = unpack(run()).float().cpu()
                    row["rel_err"] = float((out - ref).norm() / ref.norm())
                    row["us"] = graph_time(run)
                    row["kv_floor_us"] = kv_bytes / bandwidth * 1e6
                except Exception as exc:  # a kernel this torch lacks, or one that fails: say so
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                results.append(row)
                print(json.dumps(row), flush=True)
    text = markdown(results)
    print(text)
    if args.out_dir:
        tag = args.impls.replace(",", "_") + "_" + args.page_sizes.replace(",", "_")
        Path(args.out_dir, f"attention_{tag}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
