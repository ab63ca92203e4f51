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

    def _inputs(self, kind: ForwardKind, block_length: int, seqs: list[Sequence]):
        """positions [B, T] (-1 = padding) and the index of the block's positions in T."""
        starts = [0 if kind is ForwardKind.FULL else s.block_start for s in seqs]
        ends = [s.block_start + block_length if kind is ForwardKind.DUAL else s.total_len for s in seqs]
        width = max(e - b for b, e in zip(starts, ends))
        offsets = torch.arange(width, device=self.device)
        start_t, end_t = self._tensor(starts), self._tensor(ends)
        positions = start_t[:, None] + offsets[None, :]
        positions = torch.where(positions < end_t[:, None], positions, torch.full_like(positions, -1))
        block_offset = self._tensor([s.block_start - b for s, b in zip(seqs, starts)])
        logits_index = block_offset[:, None] + torch.arange(block_length, device=self.device)[None, :]
        computed = sum(e - b for b, e in zip(starts, ends))
        return positions, logits_index, computed

    def _view(self, seqs: list[Sequence], positions: torch.Tensor) -> CacheView:
        slots = [s.slot for s in seqs]
        lengths = [s.total_len for s in seqs]
        kv_len = max(lengths)
        key_mask = None
        if min(lengths) != kv_len:
            valid = torch.arange(kv_len, device=self.device)[None, :] < self._tensor(lengths)[:, None]
            key_mask = valid[:, None, None, :]
        contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
        write_pos = torch.where(positions < 0, torch.full_like(positions, self.cache.scratch_position), positions)
        return CacheView(self.cache, self._tensor(slots), write_pos, kv_len, key_mask,
                         (slots[0], slots[-1] + 1) if contiguous else None)

    def _rules(self, seqs: list[Sequence], block_length: int) -> StepRules:
        params = [s.params for s in seqs]
        rule = [RULE_THRESHOLD if p.threshold is not None else RULE_FACTOR if p.factor is not None
                else RULE_FIXED for p in params]
        fixed = num_to_commit(self._tensor([s.step for s in seqs]), self._tensor([block_length] * len(seqs)),
                              self._tensor([p.steps_per_block for p in params]))
        f64 = torch.float64
        return StepRules(
            rule=self._tensor(rule),
            fixed_count=fixed,
            threshold=self._tensor([p.threshold or 1.0 for p in params], f64),
            factor=self._tensor([p.factor or 1.0 for p in params], f64),
            temperature=self._tensor([p.temperature for p in params], f64),
            random_remasking=self._tensor([p.remasking == "random" for p in params], torch.bool),
            any_sampling=any(p.temperature > 0 for p in params),
            any_random=any(p.remasking == "random" for p in params),
        )

    @torch.inference_mode()
    def step(self, kind: ForwardKind, block_length: int, seqs: list[Sequence]):
        """One forward and one decoding step for seqs; returns per-row outcomes and stats."""
        positions, logits_index, computed = self._inputs(kind, block_length, seqs)
        view = self._view(seqs, positions)
        slots = view.slots
        tokens = self.canvas[slots[:, None], positions.clamp(min=0)]
        # everything the decoding step needs from the host is sent before the forward, so the
        # host queues the whole step behind the forward and waits only once, at the end
        rules = self._rules(seqs, block_length)
        block_pos = self._tensor([s.block_start for s in seqs])[:, None] + torch.arange(
            block_length, device=self.device)[None, :]
        current = self.canvas[slots[:, None], block_pos]
        masked = current == self.mask_id
        if kind is ForwardKind.DUAL:
            logits_index = None  # the block is the whole input
        if self.graphed is not None:
            logits = self.graphed(kind.value, tokens, positions, view, logits_index)
        else:
            logits = self.model(tokens, positions, view=view, logits_index=logits_index)

        x0, confidence = predict(logits, rules, self.generator, self.confidence_fn)
        chosen = select_transfer(confidence, masked, rules)
        updated = torch.where(chosen, x0, current)
        self.canvas[slots[:, None], block_pos] = updated

        remaining = (updated == self.mask_id).sum(dim=1, keepdim=True)
        committed = chosen.sum(dim=1, keepdim=True)
        packed = torch.cat([updated, remaining, committed], dim=1).tolist()  # the one host sync
        outcomes = [RowOutcome(row[:block_length], row[block_length], row[block_length + 1]) for row in packed]
        stats = ForwardStats(len(seqs), computed, sum(s.total_len for s in seqs))
        return outcomes, stats
