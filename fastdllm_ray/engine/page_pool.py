"""PagePool: which K/V cache pages are free, and which sequence holds the others.

A diffusion request's length is known when it arrives (prompt + padded answer), so a sequence
is given all its pages at admission and never grows: a running sequence can neither run out
of pages nor take another's. A request that could never fit is refused when it is added.
"""

from __future__ import annotations


class PagePool:
    def __init__(self, num_pages: int, page_size: int) -> None:
        if num_pages < 1 or page_size < 1:
            raise ValueError("num_pages and page_size: must be >= 1")
        self.num_pages = num_pages
        self.page_size = page_size
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out low pages first

    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.page_size)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def can_allocate(self, tokens: int) -> bool:
        return self.pages_for(tokens) <= len(self._free)

    def allocate(self, tokens: int) -> list[int]:
        """Pages for a sequence of `tokens` positions; raises if too few are free (callers ask
        can_allocate first)."""
        n = self.pages_for(tokens)
        if n > len(self._free):
            raise RuntimeError(f"page pool: {n} pages asked for, {len(self._free)} free")
        return [self._free.pop() for _ in range(n)]

    def free(self, pages: list[int]) -> None:
        self._free.extend(reversed(pages))
