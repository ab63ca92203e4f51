"""Training examples as token ids, through the checkpoint's own tokenizer and chat template
(so training sees exactly the prompts the server builds), and batches of similar length.

An example is a conversation's messages up to its last question (the generation prompt
included), then the answer region: the last answer, the family's end-of-turn token and
end-of-text padding up to `answer_length`, so the model learns where to stop.
"""

from __future__ import annotations

import numpy as np
import torch

from fastdllm_ray.train.chats import Chat


def encode(tokenizer, chats: list[Chat], answer_length: int, end_token: str, pad_token: str,
           chunk: int = 20_000) -> tuple[list[np.ndarray], np.ndarray]:
    """(rows of token ids, prompt lengths). Raises ValueError when an answer does not fit."""
    end_id, pad_id = tokenizer.convert_tokens_to_ids(end_token), tokenizer.convert_tokens_to_ids(pad_token)
    rows: list[np.ndarray] = []
    prompt_lens: list[int] = []
    for start in range(0, len(chats), chunk):
        part = chats[start: start + chunk]
        texts = tokenizer.apply_chat_template([c.messages() for c in part], add_generation_prompt=True,
                                              tokenize=False)
        prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
        answers = tokenizer([c.turns[-1].answer for c in part], add_special_tokens=False)["input_ids"]
        for chat, prompt, answer in zip(part, prompts, answers):
            if len(answer) >= answer_length:
                raise ValueError(f"answer_length: {answer_length} tokens do not hold {chat.turns[-1].answer!r} "
                                 "and its end token")
            region = np.full(answer_length, pad_id, dtype=np.int64)
            region[: len(answer)] = answer
            region[len(answer)] = end_id
            rows.append(np.concatenate([np.asarray(prompt, dtype=np.int64), region]))
            prompt_lens.append(len(prompt))
    return rows, np.asarray(prompt_lens)


class LengthBatches:
    """Batches of similar length: each pass over the examples shuffles them, cuts them into
    groups of 8 batches, sorts each group by length and cuts it into its batches (in a random
    order), so padding stays small, every example is used once a pass, and a batch is still a
    random mix of the examples' kinds."""

    GROUP = 8

    def __init__(self, rows: list[np.ndarray], prompt_lens: np.ndarray, pad_id: int, batch_size: int,
                 seed: int) -> None:
        if len(rows) < batch_size:
            raise ValueError(f"batch_size: {batch_size} is more than the {len(rows)} examples")
        self.rows, self.prompt_lens, self.pad_id, self.batch_size = rows, prompt_lens, pad_id, batch_size
        self.lengths = np.asarray([len(r) for r in rows])
        self.rng = np.random.default_rng(seed)
        self.queue: list[np.ndarray] = []

    def _refill(self) -> None:
        order = self.rng.permutation(len(self.rows))
        group = self.GROUP * self.batch_size
        batches = []
        for start in range(0, len(order) - self.batch_size + 1, group):
            members = order[start: start + group]
            members = members[np.argsort(self.lengths[members], kind="stable")]
            batches += [members[i: i + self.batch_size] for i in range(0, len(members) - self.batch_size + 1,
                                                                         self.batch_size)]
        self.queue = [batches[i] for i in self.rng.permutation(len(batches))]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, T] (padded with pad_id to the batch's longest) and prompt lengths [B]."""
        if not self.queue:
            self._refill()
        picked = self.queue.pop()
        width = int(self.lengths[picked].max())
        tokens = np.full((len(picked), width), self.pad_id, dtype=np.int64)
        for j, i in enumerate(picked):
            tokens[j, : len(self.rows[i])] = self.rows[i]
        return torch.from_numpy(tokens), torch.from_numpy(self.prompt_lens[picked])
