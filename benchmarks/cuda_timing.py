"""CUDA timing shared by the kernel benchmarks: a function captured in a CUDA graph (warmed up
on a side stream first, as capture needs), replayed, and the median of CUDA-event times."""

from __future__ import annotations

import torch


def capture(fn, reps: int = 1, warmup: int = 3):
    """fn captured `reps` times in a row in one CUDA graph: (replay, the last call's output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    out = None
    with torch.cuda.graph(graph):
        for _ in range(reps):
            out = fn()
    return graph.replay, out


def median_ms(fn, iters: int = 30, warmup: int = 3) -> float:
    """Median milliseconds of one call of fn between two CUDA events (after `warmup` calls)."""
    for _ in range(warmup):
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


def graph_ms(fn, reps: int = 1, iters: int = 20) -> float:
    """Milliseconds per call of fn: a graph of `reps` calls in a row, replayed and divided (no
    launch overhead in the figure)."""
    replay, _ = capture(fn, reps)
    return median_ms(replay, iters) / reps
