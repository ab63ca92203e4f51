"""PagedKVCache: the keys and values of every live sequence, in fixed-size pages of one pool.

Keys are stored after RoPE at their absolute positions, so a cached key is the same number
the reference recomputes each step. A sequence's position p lives in page
page_table[p // page_size], at offset p % page_size; pages are handed out by the engine's
PagePool when a sequence is admitted and returned when it ends. Every forward first writes
the K/V of the tokens it computes (in place, as the reference's dual cache does), then each
row attends over its own pages (model/paged_attention.py).

Layout [layer, page, offset, head, dim]: one token's K (or V) is one contiguous row of
heads x dim, so a write is a single row copy per token at row page * page_size + offset
(`rows`). One extra page past `num_pages` absorbs the writes of padding tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdllm_ray.model.paged_attention import PagedBatch


class PagedKVCache:
    def __init__(self, n_layers: int, num_pages: int, page_size: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (n_layers, num_pages + 1, page_size, n_kv_heads, head_dim)
        # zeros, not empty: a padding query may read a page nobody wrote, and NaN garbage
        # would not stay in its own row through 0 * NaN
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_pages = num_pages
        self.page_size = page_size

    @property
    def scratch_row(self) -> int:
        """The flat row that padding tokens write to (the extra page)."""
        return self.num_pages * self.page_size

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.k[:, 0, 0].numel() * self.k.element_size()

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `layer`'s pools, [pages + 1, page_size, heads, dim] each."""
        return self.k[layer], self.v[layer]

    def rows(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `layer`'s keys and values as [page * page_size + offset, heads * dim]."""
        width = self.k.shape[-2] * self.k.shape[-1]
        return self.k[layer].view(-1, width), self.v[layer].view(-1, width)


@dataclass
class PagedForward:
    """What a cached forward needs besides tokens and positions: where each input token's
    K/V goes (`write_rows` [N], flat rows of `PagedKVCache.rows`) and which pages each
    row of queries reads (`batch`)."""

    cache: PagedKVCache
    write_rows: torch.Tensor
    batch: PagedBatch

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: [N, H_kv, D] for the input tokens."""
        k_rows, v_rows = self.cache.rows(layer)
        k_rows.index_copy_(0, self.write_rows, k.reshape(self.write_rows.shape[0], -1))
        v_rows.index_copy_(0, self.write_rows, v.reshape(self.write_rows.shape[0], -1))
