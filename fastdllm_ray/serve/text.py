"""Token ids arriving block by block -> text deltas, cut at the first stop string.

The whole answer is decoded again at each block (blocks are few) so that characters split
across blocks come out whole. While a stop string could still be completing, its possible
prefix at the end of the text is held back, so a streamed answer never shows a stop string.
"""

from __future__ import annotations


class TextAssembler:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.token_ids: list[int] = []
        self.text = ""  # the answer so far (cut at a stop string once one appears)
        self.stopped = False  # a stop string was found: the answer is complete
        self._sent = 0  # characters already handed out as deltas

    def add(self, token_ids: list[int], final: bool = False) -> str:
        """Takes the next block's ids; returns the text that is now safe to show."""
        if self.stopped:
            return ""
        self.token_ids.extend(token_ids)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, self.stopped, final = text[:cut], True, True
        self.text = text
        end = len(text)
        if not final:
            end -= self._held_back(text)
        delta = text[self._sent:end] if end > self._sent else ""
        self._sent = max(self._sent, end)
        return delta

    def _held_back(self, text: str) -> int:
        """Characters at the end that may still change: a partial character or stop string."""
        hold = len(text) - len(text.rstrip("\ufffd"))
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        return hold
