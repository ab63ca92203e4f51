"""PagePool: which K/V cache pages are free, which sequences hold the others, and which hold a
prefix that later requests may share.

A diffusion request's length is known when it arrives (prompt + answer), so a sequence is
given all its pages at admission and never grows: a running sequence can neither run out of
pages nor take another's. A request that could never fit is refused when it is added.

Prefix sharing (block-diffusion families only: there a finished block's K/V depend on nothing
after it). A page whose K/V are final is registered under a key that chains a hash of every
token up to the end of what its K/V depend on (`prefix_keys`). A later request looks its
prompt's keys up and holds the pages it finds instead of computing them: a page is
reference-counted, written only by the sequence that computed it, and never evicted while a
sequence holds it. Once nobody holds a registered page it stays findable, and the pool
evicts such pages least recently released first when it needs pages.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def prefix_keys(tokens: list[int], page_size: int, block: int, salt: bytes = b"") -> list[tuple[bytes, int]]:
    """(key, end) of every page whose K/V the first len(tokens) tokens determine: page i's K/V
    depend on the tokens up to the end of the block of size `block` holding its last position,
    `end`; its key chains a hash over those tokens (and `salt`: what else they depend on)."""
    keys, digest, hashed = [], hashlib.blake2b(salt + block.to_bytes(4, "little"), digest_size=16).digest(), 0
    page = 0
    while True:
        end = -(-((page + 1) * page_size) // block) * block
        if end > len(tokens):
            return keys
        chunk = np.asarray(tokens[hashed:end], dtype=np.int64).tobytes()
        digest = hashlib.blake2b(digest + chunk, digest_size=16).digest()
        keys.append((digest, end))
        hashed, page = end, page + 1


class PagePool:
    def __init__(self, num_pages: int, page_size: int) -> None:
        if num_pages < 1 or page_size < 1:
            raise ValueError("num_pages and page_size: must be >= 1")
        self.num_pages = num_pages
        self.page_size = page_size
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out low pages first
        self._holders: dict[int, int] = {}  # page -> sequences holding it
        self._key_of: dict[int, bytes] = {}  # registered page -> its key
        self._page_of: dict[bytes, int] = {}  # key -> registered page
        self._idle: OrderedDict[int, None] = OrderedDict()  # registered, held by nobody: oldest release first
        self.evictions = 0

    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.page_size)

    @property
    def num_free(self) -> int:
        """Pages a new sequence can take: free ones and idle cached ones (evicted on demand)."""
        return len(self._free) + len(self._idle)

    @property
    def num_cached(self) -> int:
        """Registered pages, held or idle."""
        return len(self._key_of)

    def can_allocate(self, tokens: int, shared: list[int] = ()) -> bool:
        """Whether a sequence of `tokens` positions fits, holding the `shared` pages it found."""
        idle_shared = sum(1 for p in shared if p in self._idle)
        return self.pages_for(tokens) - len(shared) <= self.num_free - idle_shared

    def lookup(self, keys: list[tuple[bytes, int]]) -> list[int]:
        """The registered pages of the longest run of `keys` from the first."""
        pages = []
        for key, _ in keys:
            page = self._page_of.get(key)
            if page is None:
                break
            pages.append(page)
        return pages

    def allocate(self, tokens: int, shared: list[int] = ()) -> list[int]:
        """Pages for a sequence of `tokens` positions: the `shared` ones first, held, then fresh
        ones; raises if too few are free (callers ask can_allocate first)."""
        if not self.can_allocate(tokens, shared):
            raise RuntimeError(f"page pool: {self.pages_for(tokens) - len(shared)} pages asked for, "
                               f"{self.num_free} free")
        for page in shared:
            self._idle.pop(page, None)
            self._holders[page] = self._holders.get(page, 0) + 1
        fresh = [self._take() for _ in range(self.pages_for(tokens) - len(shared))]
        for page in fresh:
            self._holders[page] = 1
        return list(shared) + fresh

    def _take(self) -> int:
        if self._free:
            return self._free.pop()
        page, _ = self._idle.popitem(last=False)  # the least recently released cached page
        del self._page_of[self._key_of.pop(page)]
        self.evictions += 1
        return page

    def register(self, page: int, key: bytes) -> None:
        """Makes a held page findable by `key` (its K/V are final). A key already registered keeps
        its page; this one then stays private to its sequence."""
        if key not in self._page_of and page not in self._key_of:
            self._page_of[key] = page
            self._key_of[page] = key

    def free(self, pages: list[int]) -> None:
        """A sequence lets its pages go: registered ones stay findable until evicted."""
        for page in reversed(pages):
            holders = self._holders.pop(page) - 1
            if holders:
                self._holders[page] = holders
            elif page in self._key_of:
                self._idle[page] = None
            else:
                self._free.append(page)
