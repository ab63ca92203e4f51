"""KVCache: preallocated keys and values for a fixed number of sequence slots.

Keys are stored after RoPE at their absolute positions, so a cached key is the same
number the reference recomputes each step. Every forward first writes the K/V of the
tokens it computes into their slot at their positions (in place, as the reference's
dual cache does), then attends over the slot's first `kv_len` positions. One extra
column past `slot_len` absorbs the writes of padding rows.

Layout [layer, slot, position, head, dim]: one token's K (or V) is one contiguous row of
heads x dim, so a write is a single row copy per token (`index_copy_`), and attention
reads the slot's positions as a strided [head, position, dim] view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class KVCache:
    def __init__(
        self,
        n_layers: int,
        num_slots: int,
        slot_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (n_layers, num_slots, slot_len + 1, n_kv_heads, head_dim)
        # zeros, not empty: padded keys are masked, but NaN garbage would leak through 0 * NaN.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_slots = num_slots
        self.slot_len = slot_len

    @property
    def scratch_position(self) -> int:
        return self.slot_len

    def rows(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `layer`'s keys and values as [slot * (slot_len + 1) + position, heads * dim]."""
        width = self.k.shape[-2] * self.k.shape[-1]
        return self.k[layer].view(-1, width), self.v[layer].view(-1, width)


@dataclass
class CacheView:
    """Where one batched forward writes and reads its K/V.

    slots: [B] slot of each row; write_pos: [B, T] absolute position of each input token
    (padding rows point at the scratch column); kv_len: keys attended (max sequence length
    of the batch); key_mask: [B, 1, 1, kv_len] bool, or None when every key is valid.
    """

    cache: KVCache
    slots: torch.Tensor
    write_pos: torch.Tensor
    kv_len: int
    key_mask: torch.Tensor | None
    slot_range: tuple[int, int] | None = None  # contiguous slots: read a view, no gather

    def flat_rows(self) -> torch.Tensor:
        """[B * T] cache row of each input token (see KVCache.rows); computed once a forward."""
        return (self.slots[:, None] * (self.cache.slot_len + 1) + self.write_pos).reshape(-1)

    def write(self, layer: int, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: [B, T, H, D] for the input tokens, stored at `rows` (from flat_rows())."""
        kc, vc = self.cache.rows(layer)
        kc.index_copy_(0, rows, k.reshape(rows.shape[0], -1))
        vc.index_copy_(0, rows, v.reshape(rows.shape[0], -1))

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, H, kv_len, D] keys and values of the rows' slots."""
        kc, vc = self.cache.k[layer], self.cache.v[layer]
        if self.slot_range is not None:
            lo, hi = self.slot_range
            keys, values = kc[lo:hi, : self.kv_len], vc[lo:hi, : self.kv_len]
        else:
            keys, values = kc[self.slots, : self.kv_len], vc[self.slots, : self.kv_len]
        return keys.transpose(1, 2), values.transpose(1, 2)
