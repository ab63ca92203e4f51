"""ModelRunner: tensors in, committed tokens out. Owns the paged K/V cache, the page table
and token canvas of every seat, and runs one engine step: one forward over the packed query
tokens of every running sequence (refreshes, prefix steps and dual steps of any block
length together), then one decoding step over their blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdllm_ray.decoding import StepOutcome, policy_for, select_transfer
from fastdllm_ray.engine.cuda_graphs import BLOCK_BUCKETS, TOKEN_BUCKETS, StepGraphs, bucket, row_buckets
from fastdllm_ray.engine.sequence import Sequence
from fastdllm_ray.engine.step_inputs import (BLOCK_LEN, CAUSAL, FIXED, NUM_COLUMNS, Q_LEN, Q_START, SLOT, TOTAL,
                                             PackedStep, block_inputs, body_inputs, pack_rows)
from fastdllm_ray.model import DiffusionTransformer, PagedKVCache


@dataclass
class ForwardStats:
    rows: int
    computed_positions: int  # query positions run through the network
    attended_positions: int  # key positions attended (computed + served from cache)


class ModelRunner:
    def __init__(self, model: DiffusionTransformer, num_slots: int, max_model_len: int, num_pages: int, page_size: int,
                 seed: int = 0, cuda_graphs: bool = True, compile_blocks: bool = True) -> None:
        cfg = model.config
        self.model = model
        self.device = model.device
        self.mask_id = cfg.mask_token_id
        self.num_slots = num_slots
        self.max_model_len = max_model_len
        self.cache = PagedKVCache(cfg.n_layers, num_pages, page_size, cfg.n_kv_heads, cfg.head_dim,
                                  model.dtype, self.device)
        self.page_table = torch.zeros(num_slots, -(-max_model_len // page_size), dtype=torch.int32,
                                      device=self.device)
        # two extra columns: position max_model_len (a block-diffusion sequence filling its whole
        # context still decides the id after it) and the scratch that padded decisions read and write
        self.canvas = torch.full((num_slots, max_model_len + 2), self.mask_id, dtype=torch.long, device=self.device)
        self.scratch_col = max_model_len + 1
        self.rows = torch.zeros(num_slots, NUM_COLUMNS, dtype=torch.float64, device=self.device)
        on_cuda = self.device.type == "cuda"
        # the host side of self.rows: pinned, so the one copy per step is asynchronous
        self.rows_host = torch.zeros(num_slots, NUM_COLUMNS, dtype=torch.float64, pin_memory=on_cuda)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.policy = policy_for(cfg.model_type, self.mask_id)  # the family's decoding rules
        self.confidence_fn = self.policy.confidence_fn
        if compile_blocks and on_cuda:
            model.compile_blocks()
            self.confidence_fn = torch.compile(self.policy.confidence_fn, dynamic=True)
        self.graphs = StepGraphs([self.canvas]) if cuda_graphs and on_cuda else None
        # graphs cover steps up to the largest token bucket that a full engine can reach; a
        # bigger step is compute-bound and runs eagerly
        self.token_buckets = [b for b in TOKEN_BUCKETS if b <= num_slots * max_model_len]
        self.hidden = None
        if self.graphs is not None:
            self.hidden = torch.zeros(self.token_buckets[-1], cfg.d_model, dtype=model.dtype, device=self.device)

    @property
    def captures(self) -> int:
        return self.graphs.captures if self.graphs is not None else 0

    def place(self, seq: Sequence) -> None:
        """Writes the prompt followed by masks into the sequence's seat, and its page table."""
        row = self.canvas[seq.slot]
        row.fill_(self.mask_id)
        row[: seq.prompt_len] = torch.tensor(seq.prompt_ids, dtype=torch.long, device=self.device)
        self.page_table[seq.slot, : len(seq.pages)] = torch.tensor(seq.pages, dtype=torch.int32, device=self.device)

    # ---- the two halves of a step, reading self.rows ------------------------------------
    def _body(self, n_tokens: int, host=None) -> torch.Tensor:
        tokens, positions, paged = body_inputs(self.rows, n_tokens, self.canvas, self.page_table, self.cache, host)
        return self.model.hidden_states(tokens, positions, paged)

    def _body_into_buffer(self, n_tokens: int) -> None:
        self.hidden[:n_tokens].copy_(self._body(n_tokens))

    def _decide(self, hidden: torch.Tensor, n_rows: int, width: int, sampling: bool, random: bool,
                keep_k: int = 0) -> torch.Tensor:
        """Decides one step of each row's span; [rows, 2 * width + 2]: the span after the step and
        before it, the masked positions left in it, the positions committed."""
        inputs = block_inputs(self.rows[:n_rows], width, self.scratch_col, sampling, random, keep_k)
        logits = self.model.logits(hidden[inputs.hidden_index.reshape(-1)]).view(n_rows, width, -1)
        current = self.canvas[inputs.slots[:, None], inputs.canvas_pos]
        masked = (current == self.mask_id) & inputs.in_block
        x0, confidence = self.policy.predict(logits, inputs.rules, self.generator, self.confidence_fn, self.mask_id)
        chosen = select_transfer(confidence, masked & inputs.eligible, inputs.rules)
        updated = torch.where(chosen, x0, current)
        self.canvas[inputs.slots[:, None], inputs.canvas_pos] = updated
        remaining = (masked & ~chosen).sum(dim=1, keepdim=True)
        return torch.cat([updated, current, remaining, chosen.sum(dim=1, keepdim=True)], dim=1)

    # ---- a step ---------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, seqs: list[Sequence]):
        """One forward and one decoding step for every sequence in seqs; returns per-row
        outcomes and stats."""
        packed = pack_rows(seqs, self.rows_host, self.policy)
        self.rows.copy_(self.rows_host, non_blocking=True)  # the host buffer is rewritten after this step's sync
        result = self._run(packed)
        rows = result[: packed.n_rows].tolist()  # the one host sync
        width = (result.shape[1] - 2) // 2
        outcomes = [StepOutcome(row[: s.plan.decide_len], row[width: width + s.plan.decide_len], row[-2], row[-1])
                    for s, row in zip(seqs, rows)]
        return outcomes, ForwardStats(len(seqs), packed.n_tokens, packed.attended)

    def _run(self, packed: PackedStep) -> torch.Tensor:
        n_tokens = bucket(packed.n_tokens, self.token_buckets) if self.graphs is not None else None
        if n_tokens is None:  # CPU, graphs off, or a step too big to need them
            hidden = self._body(packed.n_tokens, host=self._host_lengths(packed))
            return self._decide(hidden, packed.n_rows, packed.max_block, packed.sampling, packed.random,
                                packed.keep_k)
        self.graphs(("forward", n_tokens), lambda: self._body_into_buffer(n_tokens))
        width = bucket(packed.max_block, BLOCK_BUCKETS)
        if width is None or packed.sampling or packed.random or packed.keep_k:
            # the generator's draws and per-row candidate widths stay outside graphs
            return self._decide(self.hidden, packed.n_rows, width or packed.max_block, packed.sampling, packed.random,
                                packed.keep_k)
        n_rows = bucket(packed.n_rows, row_buckets(self.num_slots))
        return self.graphs(("decide", n_rows, width), lambda: self._decide(self.hidden, n_rows, width, False, False))

    def _host_lengths(self, packed: PackedStep) -> tuple[list[int], ...] | None:
        """cu_q, kv_len, q_start and causal as lists for the CPU attention path (saves
        device->host reads)."""
        if self.device.type == "cuda":
            return None
        cu = [0]
        for n in packed.rows[:, Q_LEN].long().tolist():
            cu.append(cu[-1] + n)
        q_start, kv_len, causal = (packed.rows[:, c].long().tolist() for c in (Q_START, TOTAL, CAUSAL))
        return cu, kv_len, q_start, causal

    # ---- warm-up ----------------------------------------------------------------------------
    @torch.inference_mode()
    def capture_graphs(self) -> int:
        """Captures every bucket's graphs before traffic (the engine must be empty: synthetic
        rows run over seat 0.. and page 0). Returns the number captured."""
        if self.graphs is None:
            return 0
        before = self.graphs.captures
        for n_tokens in self.token_buckets:
            self.rows.zero_()
            left = n_tokens
            for r in range(self.num_slots):
                length = min(left, self.max_model_len)
                self.rows[r, Q_LEN], self.rows[r, TOTAL], self.rows[r, SLOT] = length, length, r
                left -= length
            self.graphs(("forward", n_tokens), lambda n=n_tokens: self._body_into_buffer(n))
        for width in [w for w in BLOCK_BUCKETS if w <= self.max_model_len]:
            for n_rows in row_buckets(self.num_slots):
                self.rows.zero_()
                self.rows[:n_rows, BLOCK_LEN], self.rows[:n_rows, FIXED] = width, 1
                self.rows[:n_rows, SLOT] = torch.arange(n_rows, dtype=torch.float64)
                self.graphs(("decide", n_rows, width),
                            lambda r=n_rows, w=width: self._decide(self.hidden, r, w, False, False))
        self.rows.zero_()
        return self.graphs.captures - before
