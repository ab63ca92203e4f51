"""ModelRunner: tensors in, committed tokens out. Owns the K/V cache and the token canvas
of every slot; runs one batched forward for a group of sequences and one decoding step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdllm_ray.decoding import RULE_FACTOR, RULE_FIXED, RULE_THRESHOLD, StepRules, num_to_commit
from fastdllm_ray.decoding import predict, select_transfer
from fastdllm_ray.decoding.select import confidence_of
from fastdllm_ray.engine.cuda_graphs import StepGraphs
from fastdllm_ray.engine.sequence import ForwardKind, Sequence
from fastdllm_ray.model import CacheView, KVCache, LLaDAModel


@dataclass
class RowOutcome:
    block_tokens: list[int]  # the block's tokens after this step
    remaining: int  # masked positions left in the block
    committed: int  # positions committed by this step


@dataclass(frozen=True)
class StepShape:
    """What fixes the tensor shapes of one batched step: the key of its CUDA graph."""

    kind: ForwardKind
    rows: int
    width: int  # input positions per row (padded)
    kv_len: int  # keys attended: the longest sequence of the batch
    block_length: int
    slot_range: tuple[int, int] | None  # contiguous slots: the cache is read as a view
    masked_keys: bool  # rows of different lengths: keys past a row's end are masked
    sampling: bool  # temperature > 0 somewhere
    random: bool  # random remasking somewhere

    @property
    def uses_generator(self) -> bool:  # its draws stay outside CUDA graphs
        return self.sampling or self.random


# columns of the per-row float64 input (exact for integers below 2**53)
_START, _END, _BLOCK_START, _TOTAL, _SLOT, _RULE, _FIXED, _RANDOM, _THRESHOLD, _FACTOR, _TEMP = range(11)


@dataclass
class _StepInputs:
    tokens: torch.Tensor  # [B, T] input tokens
    positions: torch.Tensor  # [B, T] absolute positions of the input tokens, -1 = padding
    view: CacheView
    rules: StepRules
    logits_index: torch.Tensor | None  # [B, block_length]: where the block sits in the input
    block_pos: torch.Tensor  # [B, block_length]: the block's absolute positions


@dataclass
class ForwardStats:
    rows: int
    computed_positions: int  # query positions run through the network
    attended_positions: int  # key positions attended (computed + served from cache)


class ModelRunner:
    def __init__(self, model: LLaDAModel, num_slots: int, slot_len: int, seed: int = 0,
                 cuda_graphs: bool = True, compile_blocks: bool = True) -> None:
        cfg = model.config
        self.model = model
        self.device = model.device
        self.mask_id = cfg.mask_token_id
        self.slot_len = slot_len
        self.cache = KVCache(cfg.n_layers, num_slots, slot_len, cfg.n_kv_heads, cfg.head_dim,
                             model.dtype, self.device)
        self.arange = torch.arange(slot_len + 1, device=self.device)
        self.canvas = torch.full((num_slots, slot_len + 1), self.mask_id, dtype=torch.long, device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        on_cuda = self.device.type == "cuda"
        self.confidence_fn = confidence_of
        if compile_blocks and on_cuda:
            model.compile_blocks()
            self.confidence_fn = torch.compile(confidence_of, dynamic=True)
        # big full forwards are compute-bound (launches don't matter) and would pin memory
        self.max_graph_tokens = 8192
        self.graphs = StepGraphs([self.canvas]) if cuda_graphs and on_cuda else None

    def place(self, seq: Sequence) -> None:
        """Writes the prompt followed by masks into the sequence's slot."""
        row = self.canvas[seq.slot]
        row.fill_(self.mask_id)
        row[: seq.prompt_len] = torch.tensor(seq.prompt_ids, dtype=torch.long, device=self.device)

    def _pack(self, kind: ForwardKind, block_length: int, seqs: list[Sequence]):
        """The step's shape and its per-row inputs as one host tensor (one copy to the device)."""
        rows, width, computed = [], 0, 0
        for s in seqs:
            p = s.params
            start = 0 if kind is ForwardKind.FULL else s.block_start
            end = s.block_start + block_length if kind is ForwardKind.DUAL else s.total_len
            rule = RULE_THRESHOLD if p.threshold is not None else RULE_FACTOR if p.factor is not None else RULE_FIXED
            rows.append((start, end, s.block_start, s.total_len, s.slot, rule,
                         num_to_commit(s.step, block_length, p.steps_per_block), p.remasking == "random",
                         p.threshold or 1.0, p.factor or 1.0, p.temperature))
            width, computed = max(width, end - start), computed + end - start
        lengths = [s.total_len for s in seqs]
        slot_list = [s.slot for s in seqs]
        contiguous = slot_list == list(range(slot_list[0], slot_list[0] + len(slot_list)))
        shape = StepShape(kind, len(seqs), width, max(lengths), block_length,
                          (slot_list[0], slot_list[-1] + 1) if contiguous else None, min(lengths) != max(lengths),
                          any(s.params.temperature > 0 for s in seqs), any(s.params.remasking == "random" for s in seqs))
        return shape, torch.tensor(rows, dtype=torch.float64), computed

    def _inputs(self, shape: StepShape, packed: torch.Tensor) -> _StepInputs:
        """Device-side index tensors of a step from its packed rows (no host sync: graphable)."""
        cols = packed.unbind(1)
        start, end, block_start, total, slots = (cols[i].long() for i in (_START, _END, _BLOCK_START, _TOTAL, _SLOT))
        positions = start[:, None] + self.arange[None, : shape.width]
        positions = positions.masked_fill(positions >= end[:, None], -1)
        write_pos = positions.masked_fill(positions < 0, self.cache.scratch_position)
        key_mask = None
        if shape.masked_keys:
            key_mask = (self.arange[None, : shape.kv_len] < total[:, None])[:, None, None, :]
        view = CacheView(self.cache, slots, write_pos, shape.kv_len, key_mask, shape.slot_range)
        rules = StepRules(
            rule=cols[_RULE].long(), fixed_count=cols[_FIXED].long(), threshold=cols[_THRESHOLD],
            factor=cols[_FACTOR], temperature=cols[_TEMP], random_remasking=cols[_RANDOM].bool(),
            any_sampling=shape.sampling, any_random=shape.random,
        )
        block_offsets = self.arange[None, : shape.block_length]
        logits_index = None  # a dual step's input is the block
        if shape.kind is not ForwardKind.DUAL:
            logits_index = (block_start - start)[:, None] + block_offsets
        tokens = self.canvas[slots[:, None], positions.clamp(min=0)]
        return _StepInputs(tokens, positions, view, rules, logits_index, block_start[:, None] + block_offsets)

    def _forward(self, shape: StepShape, packed: torch.Tensor) -> tuple[_StepInputs, torch.Tensor]:
        inputs = self._inputs(shape, packed)
        return inputs, self.model(inputs.tokens, inputs.positions, view=inputs.view, logits_index=inputs.logits_index)

    def _decode(self, inputs: _StepInputs, logits: torch.Tensor) -> torch.Tensor:
        """Commits this step's tokens into the canvas; [B, block + 2]: block, remaining, committed."""
        slots, block_pos = inputs.view.slots, inputs.block_pos
        current = self.canvas[slots[:, None], block_pos]
        masked = current == self.mask_id
        x0, confidence = predict(logits, inputs.rules, self.generator, self.confidence_fn, self.mask_id)
        chosen = select_transfer(confidence, masked, inputs.rules)
        updated = torch.where(chosen, x0, current)
        self.canvas[slots[:, None], block_pos] = updated
        remaining = (updated == self.mask_id).sum(dim=1, keepdim=True)
        return torch.cat([updated, remaining, chosen.sum(dim=1, keepdim=True)], dim=1)

    def _whole_step(self, shape: StepShape, packed: torch.Tensor) -> torch.Tensor:
        return self._decode(*self._forward(shape, packed))

    @torch.inference_mode()
    def step(self, kind: ForwardKind, block_length: int, seqs: list[Sequence]):
        """One forward and one decoding step for seqs; returns per-row outcomes and stats."""
        shape, packed, computed = self._pack(kind, block_length, seqs)
        packed = packed.to(self.device)
        graphs = self.graphs if shape.rows * shape.width <= self.max_graph_tokens else None
        if graphs is None:
            result = self._whole_step(shape, packed)
        elif not shape.uses_generator:  # forward and decoding in one graph
            result = graphs(("step", shape), lambda p: self._whole_step(shape, p), packed)
        else:  # the generator's draws stay outside the graph; it hands back its inputs and logits
            result = self._decode(*graphs(("forward", shape), lambda p: self._forward(shape, p), packed))
        packed_rows = result.tolist()  # the one host sync
        outcomes = [RowOutcome(row[:block_length], row[block_length], row[block_length + 1]) for row in packed_rows]
        stats = ForwardStats(len(seqs), computed, sum(s.total_len for s in seqs))
        return outcomes, stats
