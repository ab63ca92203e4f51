"""KVCache: preallocated keys and values for a fixed number of sequence slots.

Keys are stored after RoPE at their absolute positions, so a cached key is the same
number the reference recomputes each step. Every forward first writes the K/V of the
tokens it computes into their slot at their positions (in place, as the reference's
dual cache does), then attends over the slot's first `kv_len` positions. One extra
column past `slot_len` absorbs the writes of padding rows.
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
        shape = (n_layers, num_slots, n_kv_heads, slot_len + 1, head_dim)
        # zeros, not empty: padded keys are masked, but NaN garbage would leak through 0 * NaN.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_slots = num_slots
        self.slot_len = slot_len

    @property
    def scratch_position(self) -> int:
        return self.slot_len


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

    def write_and_read(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """k, v: [B, T, H, D] for the input tokens; returns [B, H, kv_len, D] keys and values."""
        kc, vc = self.cache.k[layer], self.cache.v[layer]
        index = (self.slots[:, None], slice(None), self.write_pos)
        kc[index] = k
        vc[index] = v
        if self.slot_range is not None:
            lo, hi = self.slot_range
            return kc[lo:hi, :, : self.kv_len], vc[lo:hi, :, : self.kv_len]
        return kc[self.slots, :, : self.kv_len], vc[self.slots, :, : self.kv_len]
