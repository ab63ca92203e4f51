"""CUDA graphs for the model forward: one graph per input shape, replayed every step.

At batch 1 a block step of LLaDA-8B is ~5 ms of GPU work but ~30 ms of Python and kernel
launches in eager mode; replaying a captured graph removes the launches. A graph is keyed
by everything that shapes it (kind, batch, query width, attended length, slots); its
inputs are static buffers that each call copies into before the replay.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from fastdllm_ray.model import CacheView, LLaDAModel


class _Graph:
    def __init__(self, model, tokens, positions, view: CacheView, logits_index, pool) -> None:
        self.tokens, self.positions = tokens.clone(), positions.clone()
        self.logits_index = None if logits_index is None else logits_index.clone()
        self.view = CacheView(view.cache, view.slots.clone(), view.write_pos.clone(), view.kv_len,
                              None if view.key_mask is None else view.key_mask.clone(), view.slot_range)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside capture (also writes the real K/V)
            self.run_eager(model)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = self.run_eager(model)

    def run_eager(self, model):
        return model(self.tokens, self.positions, view=self.view, logits_index=self.logits_index)

    def replay(self, tokens, positions, view: CacheView, logits_index) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.view.slots.copy_(view.slots)
        self.view.write_pos.copy_(view.write_pos)
        if view.key_mask is not None:
            self.view.key_mask.copy_(view.key_mask)
        if logits_index is not None:
            self.logits_index.copy_(logits_index)
        self.graph.replay()
        return self.output


class GraphedForward:
    """Calls model(...) through cached CUDA graphs; eager for shapes past `max_graphs` tokens."""

    def __init__(self, model: LLaDAModel, max_graphs: int = 64, max_tokens: int = 8192) -> None:
        self.model = model
        self.max_graphs = max_graphs
        self.max_tokens = max_tokens  # big full forwards are compute-bound: launches don't matter
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()

    def __call__(self, kind: str, tokens, positions, view: CacheView, logits_index) -> torch.Tensor:
        if tokens.numel() > self.max_tokens:
            return self.model(tokens, positions, view=view, logits_index=logits_index)
        key = (kind, tuple(tokens.shape), view.kv_len, view.slot_range, view.key_mask is None,
               None if logits_index is None else tuple(logits_index.shape))
        graph = self.graphs.get(key)
        if graph is None:
            if len(self.graphs) >= self.max_graphs:
                self.graphs.popitem(last=False)
            graph = self.graphs[key] = _Graph(self.model, tokens, positions, view, logits_index, self.pool)
        else:
            self.graphs.move_to_end(key)
        return graph.replay(tokens, positions, view, logits_index)
