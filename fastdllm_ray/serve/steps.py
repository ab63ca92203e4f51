"""Step chunks: with `stream_steps: true` on a streamed request, the engine's StepEvents
become extra stream chunks. Each is an ordinary chunk with no new text (so the openai client
parses it, and text-only clients skip it) plus a `step` field:

    "step": {"block": 0, "block_step": 2, "remaining": 27, "block_length": 32, "gen_length": 64,
             "row_start": 0, "row_cells": 32, "answer_cells": 64,
             "commits": [{"position": 5, "token_id": 19, "text": "2", "special": false}, ...]}

`position` counts answer tokens from 0; `special` marks tokens that never show in the text
(the end token and what the model fills after it). `row_start` and `row_cells` are the answer
positions of the block the step decodes (the family's rows: decoding/policy.py step_row), so a
client draws a row per block as the steps arrive, whether the blocks align with the answer
(LLaDA, Dream) or not (Fast-dLLM v2, LLaDA2.0: the first block holds the prompt's tail);
`answer_cells` is the most answer positions the request may fill.
"""

from __future__ import annotations

from fastdllm_ray.engine.outputs import StepEvent
from fastdllm_ray.params import GenerationParams


class StepChunks:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self._texts: dict[int, str] = {}  # token id -> its text; a vocabulary is finite

    def text(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.tokenizer.decode([token_id])
        return text

    def payload(self, event: StepEvent, params: GenerationParams) -> dict:
        commits = [{"position": position, "token_id": token, "text": self.text(token),
                    "special": token in self.special_ids}
                   for position, token in zip(event.positions, event.token_ids)]
        return {"block": event.block, "block_step": event.step, "remaining": event.remaining,
                "block_length": params.block_length, "gen_length": params.gen_length, "row_start": event.row_start,
                "row_cells": event.row_cells, "answer_cells": event.answer_cells, "commits": commits}

    def chunk(self, empty_chunk: dict, event: StepEvent, params: GenerationParams) -> dict:
        """`empty_chunk` (a stream chunk with no text) with the step attached."""
        return {**empty_chunk, "step": self.payload(event, params)}
