"""ModelRunner: tensors in, committed tokens out. Owns the K/V cache and the token canvas
of every slot; runs one batched forward for a group of sequences and one decoding step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdllm_ray.decoding import RULE_FACTOR, RULE_FIXED, RULE_THRESHOLD, StepRules, num_to_commit
from fastdllm_ray.decoding import predict, select_transfer
from fastdllm_ray.decoding.select import confidence_of
from fastdllm_ray.engine.cuda_graphs import GraphedForward
from fastdllm_ray.engine.sequence import ForwardKind, Sequence
from fastdllm_ray.model import CacheView, KVCache, LLaDAModel


@dataclass
class RowOutcome:
    block_tokens: list[int]  # the block's tokens after this step
    remaining: int  # masked positions left in the block
    committed: int  # positions committed by this step


@dataclass
class _Batch:
    positions: torch.Tensor  # [B, T] absolute positions of the input tokens, -1 = padding
    view: CacheView
    rules: StepRules
    logits_index: torch.Tensor  # [B, block_length]: where the block sits in the input
    block_pos: torch.Tensor  # [B, block_length]: the block's absolute positions
    computed: int  # input positions, summed over rows


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
        self.graphed = GraphedForward(model) if cuda_graphs and on_cuda else None

    def place(self, seq: Sequence) -> None:
        """Writes the prompt followed by masks into the sequence's slot."""
        row = self.canvas[seq.slot]
        row.fill_(self.mask_id)
        row[: seq.prompt_len] = torch.tensor(seq.prompt_ids, dtype=torch.long, device=self.device)

    def _tensor(self, values, dtype=torch.long) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    def _batch(self, kind: ForwardKind, block_length: int, seqs: list[Sequence]) -> "_Batch":
        """All per-row inputs of a step, sent to the device in two copies (launches cost
        more than the work at batch 1), then expanded there into index tensors."""
        ints, floats, width, computed = [], [], 0, 0
        for s in seqs:
            p = s.params
            start = 0 if kind is ForwardKind.FULL else s.block_start
            end = s.block_start + block_length if kind is ForwardKind.DUAL else s.total_len
            rule = RULE_THRESHOLD if p.threshold is not None else RULE_FACTOR if p.factor is not None else RULE_FIXED
            ints.append((start, end, s.block_start, s.total_len, s.slot, rule,
                         num_to_commit(s.step, block_length, p.steps_per_block), p.remasking == "random"))
            floats.append((p.threshold or 1.0, p.factor or 1.0, p.temperature))
            width, computed = max(width, end - start), computed + end - start
        start_t, end_t, block_start, total, slots, rule_t, fixed, rand = self._tensor(ints).unbind(1)
        floats_t = self._tensor(floats, torch.float64)
        lengths = [s.total_len for s in seqs]
        kv_len = max(lengths)

        positions = start_t[:, None] + self.arange[None, :width]
        positions = positions.masked_fill(positions >= end_t[:, None], -1)
        write_pos = positions.masked_fill(positions < 0, self.cache.scratch_position)
        key_mask = None
        if min(lengths) != kv_len:
            key_mask = (self.arange[None, :kv_len] < total[:, None])[:, None, None, :]
        slot_list = [s.slot for s in seqs]
        contiguous = slot_list == list(range(slot_list[0], slot_list[0] + len(slot_list)))
        view = CacheView(self.cache, slots, write_pos, kv_len, key_mask,
                         (slot_list[0], slot_list[-1] + 1) if contiguous else None)
        params = [s.params for s in seqs]
        rules = StepRules(
            rule=rule_t, fixed_count=fixed, threshold=floats_t[:, 0], factor=floats_t[:, 1],
            temperature=floats_t[:, 2], random_remasking=rand.bool(),
            any_sampling=any(p.temperature > 0 for p in params),
            any_random=any(p.remasking == "random" for p in params),
        )
        block_offsets = self.arange[None, :block_length]
        return _Batch(positions, view, rules, (block_start - start_t)[:, None] + block_offsets,
                      block_start[:, None] + block_offsets, computed)

    @torch.inference_mode()
    def step(self, kind: ForwardKind, block_length: int, seqs: list[Sequence]):
        """One forward and one decoding step for seqs; returns per-row outcomes and stats."""
        # everything the decoding step needs from the host is sent before the forward, so the
        # host queues the whole step behind the forward and waits only once, at the end
        batch = self._batch(kind, block_length, seqs)
        positions, view, rules, logits_index, block_pos = (
            batch.positions, batch.view, batch.rules, batch.logits_index, batch.block_pos)
        slots = view.slots
        tokens = self.canvas[slots[:, None], positions.clamp(min=0)]
        current = self.canvas[slots[:, None], block_pos]
        masked = current == self.mask_id
        if kind is ForwardKind.DUAL:
            logits_index = None  # the block is the whole input
        if self.graphed is not None:
            logits = self.graphed(kind.value, tokens, positions, view, logits_index)
        else:
            logits = self.model(tokens, positions, view=view, logits_index=logits_index)

        x0, confidence = predict(logits, rules, self.generator, self.confidence_fn, self.mask_id)
        chosen = select_transfer(confidence, masked, rules)
        updated = torch.where(chosen, x0, current)
        self.canvas[slots[:, None], block_pos] = updated

        remaining = (updated == self.mask_id).sum(dim=1, keepdim=True)
        committed = chosen.sum(dim=1, keepdim=True)
        packed = torch.cat([updated, remaining, committed], dim=1).tolist()  # the one host sync
        outcomes = [RowOutcome(row[:block_length], row[block_length], row[block_length + 1]) for row in packed]
        stats = ForwardStats(len(seqs), batch.computed, sum(s.total_len for s in seqs))
        return outcomes, stats
