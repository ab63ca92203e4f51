"""CUDA graphs for engine steps: one graph per step shape, replayed every step.

At batch 1 a block step of LLaDA-8B is ~5 ms of GPU work but ~30 ms of Python and kernel
launches in eager mode; replaying a captured graph removes the launches, and capturing the
whole step (input indices, forward, decoding, canvas update) leaves the host one copy in,
one replay and one copy out. A graph is keyed by everything that shapes it; its input is
a static buffer that each call copies into before the replay.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

import torch


class _Graph:
    def __init__(self, fn: Callable, inputs: torch.Tensor, state: list[torch.Tensor], pool) -> None:
        self.inputs = inputs.clone()
        # the warm-up runs the step for real; the replay that follows must find the state
        # (the token canvas) as it was, or it would decode the step twice
        saved = [t.clone() for t in state]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside capture (compiles, allocates)
            fn(self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        for t, copy in zip(state, saved):
            t.copy_(copy)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = fn(self.inputs)

    def replay(self, inputs: torch.Tensor):
        """fn's output as captured (tensors of the graph's memory, refilled by this replay)."""
        self.inputs.copy_(inputs)
        self.graph.replay()
        return self.output


class StepGraphs:
    """Runs fn(inputs) through a graph captured for `key`; keeps the `max_graphs` latest."""

    def __init__(self, state: list[torch.Tensor], max_graphs: int = 64) -> None:
        self.state = state
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()
        self.captures = 0  # graphs captured so far (shape churn shows here)

    def __call__(self, key: Hashable, fn: Callable, inputs: torch.Tensor):
        graph = self.graphs.get(key)
        if graph is None:
            if len(self.graphs) >= self.max_graphs:
                self.graphs.popitem(last=False)
            graph = self.graphs[key] = _Graph(fn, inputs, self.state, self.pool)
            self.captures += 1
        else:
            self.graphs.move_to_end(key)
        return graph.replay(inputs)
