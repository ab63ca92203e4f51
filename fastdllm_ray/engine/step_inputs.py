"""One engine step as tensors: every running sequence's query span packed into one row of
tokens, and the block each sequence is deciding.

The host packs one float64 row of numbers per sequence (`pack_rows`: one copy to the device);
everything per token (positions, tokens, cache rows, attention tiles) and per block position
is derived from it on the device (`body_inputs`, `block_inputs`). So a CUDA graph captured for
a number of tokens replays correctly whatever the sequences' lengths, kinds, positions,
pages and block offsets are: they are data the graph reads, not shapes it was built for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastdllm_ray.decoding import StepRules
from fastdllm_ray.decoding.policy import DecodingPolicy
from fastdllm_ray.engine.sequence import Sequence
from fastdllm_ray.model import PagedForward, PagedKVCache
from fastdllm_ray.model.paged_attention import TILE_M, PagedBatch, query_tiles

# columns of the per-row float64 input (exact for integers below 2**53); a zero row is padding.
# Q_START .. CAUSAL: the row's RowPlan (its queries, their keys, the positions it decides);
# RULE .. TOP_K: the family's StepColumns (decoding/policy.py)
(Q_START, Q_LEN, BLOCK_START, BLOCK_LEN, TOTAL, SLOT, CAUSAL, RULE, FIXED, RANDOM, THRESHOLD, FACTOR,
 TEMP, ALG, SHIFT, FIRST_ONLY, TOP_P, TOP_K) = range(18)
NUM_COLUMNS = 18


@dataclass
class PackedStep:
    rows: torch.Tensor  # [num_rows, NUM_COLUMNS] float64: the buffer pack_rows filled
    n_rows: int  # real rows (the rest is padding)
    n_tokens: int  # packed query tokens
    max_block: int  # widest decided span of the step (at least 1)
    sampling: bool  # some row has temperature > 0 (its draws stay outside CUDA graphs)
    random: bool  # some row remasks at random
    attended: int  # key positions attended, over all rows
    keep_k: int = 0  # > 0: some row narrows its candidates (top_p / top_k: decided outside graphs)


def pack_rows(seqs: list[Sequence], rows: torch.Tensor, policy: DecodingPolicy) -> PackedStep:
    """Fills `rows` (host memory, [seats, NUM_COLUMNS]) with one row per sequence, zeros after;
    each sequence keeps its RowPlan (`seq.plan`) for reading the step's outcome."""
    # narrowed rows still see the family's default candidates: a cut never leaves too few to choose from
    values, n_tokens, attended, narrowed, widest = [], 0, 0, False, policy.default_top_k
    for s in seqs:
        plan = s.plan = policy.plan(s)
        columns = plan.columns
        values.append((plan.q_start, plan.q_len, plan.decide_start, plan.decide_len, plan.kv_len, s.slot,
                       plan.causal_block) + columns)
        n_tokens += plan.q_len
        attended += plan.kv_len
        if policy.default_top_k:  # a family that decides over candidate lists (Dream)
            narrowed |= columns.top_p < 1.0 or columns.top_k != policy.default_top_k
            widest = max(widest, columns.top_k)
    rows.zero_()
    if values:
        rows[: len(values)] = torch.tensor(values, dtype=torch.float64)
    return PackedStep(rows, len(seqs), n_tokens, max(1, max(s.plan.decide_len for s in seqs)),
                      any(s.params.temperature > 0 for s in seqs), any(s.plan.columns.random for s in seqs),
                      attended, widest if narrowed else 0)


def _columns(rows: torch.Tensor, *names: int) -> list[torch.Tensor]:
    return [rows[:, c].long() for c in names]


def body_inputs(rows: torch.Tensor, n_tokens: int, canvas: torch.Tensor, page_table: torch.Tensor,
                cache: PagedKVCache, host: tuple[list[int], list[int]] | None = None):
    """tokens [n_tokens], positions [n_tokens] and the PagedForward of a step. Tokens past the
    rows' queries are padding: they read any token, write the scratch page, attend nowhere."""
    q_start, q_len, total, slot, causal = _columns(rows, Q_START, Q_LEN, TOTAL, SLOT, CAUSAL)
    device = rows.device
    cu_q = F.pad(torch.cumsum(q_len, 0), (1, 0)).int()
    t = torch.arange(n_tokens, device=device)
    row = torch.searchsorted(cu_q[1:], t.int(), right=True).clamp(max=rows.shape[0] - 1)
    valid = t < cu_q[-1]
    positions = torch.where(valid, q_start[row] + t - cu_q[row], 0)
    tokens = canvas[slot[row], positions]
    pages = page_table[slot]
    ps = cache.page_size
    write_rows = torch.where(valid, pages[row, positions // ps].long() * ps + positions % ps, cache.scratch_row)
    tile_row, tile_start = query_tiles(cu_q, -(-n_tokens // TILE_M) + rows.shape[0])
    batch = PagedBatch(cu_q, total.int(), pages, ps, tile_row, tile_start, host, q_start.int(), causal.int())
    return tokens, positions, PagedForward(cache, write_rows, batch)


@dataclass
class BlockInputs:
    """Each row's block, padded to a common width: where the hidden state deciding each
    position sits among the packed ones (shifted one back for a family that predicts from
    the previous position, never before the row's first query), where it sits in the canvas,
    which positions are real and may be committed, and the decoding rules."""

    hidden_index: torch.Tensor  # [R, W] into the packed tokens
    canvas_pos: torch.Tensor  # [R, W] positions in the row's canvas (padding: the scratch column)
    in_block: torch.Tensor  # [R, W] bool
    eligible: torch.Tensor  # [R, W] bool: positions this step may commit (first_only: the first)
    slots: torch.Tensor  # [R]
    rules: StepRules


def block_inputs(rows: torch.Tensor, width: int, scratch_col: int, sampling: bool, random: bool,
                 keep_k: int = 0) -> BlockInputs:
    q_start, q_len, block_start, block_len, slot, shift = _columns(rows, Q_START, Q_LEN, BLOCK_START, BLOCK_LEN,
                                                                   SLOT, SHIFT)
    first_query = torch.cumsum(q_len, 0) - q_len
    j = torch.arange(width, device=rows.device)[None, :]
    in_block = j < block_len[:, None]
    own = torch.maximum((first_query + block_start - q_start - shift)[:, None] + j, first_query[:, None])
    hidden_index = torch.where(in_block, own, 0)
    eligible = in_block & ((j == 0) | (rows[:, FIRST_ONLY] == 0)[:, None])
    canvas_pos = torch.where(in_block, block_start[:, None] + j, scratch_col)
    rules = StepRules(rule=rows[:, RULE].long(), fixed_count=rows[:, FIXED].long(), threshold=rows[:, THRESHOLD],
                      factor=rows[:, FACTOR], temperature=rows[:, TEMP], random_remasking=rows[:, RANDOM].bool(),
                      any_sampling=sampling, any_random=random, alg=rows[:, ALG].long(), top_p=rows[:, TOP_P],
                      top_k=rows[:, TOP_K].long(), keep_k=keep_k)
    return BlockInputs(hidden_index, canvas_pos, in_block, eligible, slot, rules)
