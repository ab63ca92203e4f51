"""CUDA graphs for engine steps, keyed by size buckets only.

At batch 1 a block step of LLaDA-8B is ~5 ms of GPU work but ~30 ms of Python and kernel
launches in eager mode; replaying a captured graph removes the launches. A step runs two
graphs: the network over the packed query tokens (keyed by the token count's bucket) and the
decision over the blocks (keyed by the row count's and block width's buckets). Everything
else that changes from step to step (lengths, positions, kinds, page tables, block offsets,
decoding rules) is data in persistent buffers that the graphs read, so the number of graphs
is bounded by the bucket lists below, whatever the traffic.
"""

from __future__ import annotations

from typing import Callable, Hashable

import torch

# query tokens per step, at most 1/8 (small steps) to 1/16 (large) of padding: a dual step is
# rows x block; a step with refreshes adds whole sequences
TOKEN_BUCKETS = (list(range(16, 257, 16)) + list(range(320, 1025, 64)) + list(range(1152, 4097, 128)))
ROW_BUCKETS = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
BLOCK_BUCKETS = [8, 16, 32, 64]  # wider blocks decide outside graphs


def bucket(value: int, buckets: list[int]) -> int | None:
    """The smallest bucket >= value, or None past the last."""
    for b in buckets:
        if b >= value:
            return b
    return None


def row_buckets(max_rows: int) -> list[int]:
    return [b for b in ROW_BUCKETS if b < max_rows] + [max_rows]


class _Graph:
    def __init__(self, fn: Callable, state: list[torch.Tensor], pool) -> None:
        # the warm-up runs the step for real; the replay that follows must find the state
        # (the token canvas) as it was, or it would decode the step twice
        saved = [t.clone() for t in state]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside capture (compiles, allocates)
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        for t, copy in zip(state, saved):
            t.copy_(copy)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = fn()

    def replay(self):
        """fn's output as captured (tensors of the graph's memory, refilled by this replay)."""
        self.graph.replay()
        return self.output


class StepGraphs:
    """Runs fn() through the graph captured for `key` (fn reads persistent buffers only)."""

    def __init__(self, state: list[torch.Tensor]) -> None:
        self.state = state
        self.graphs: dict[Hashable, _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.captures = 0  # graphs captured so far: bounded by the buckets

    def __call__(self, key: Hashable, fn: Callable):
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = _Graph(fn, self.state, self.pool)
            self.captures += 1
        return graph.replay()
