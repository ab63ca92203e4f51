"""Sequence: one request's decoding state inside the engine."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from fastdllm_ray.params import GenerationParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class ForwardKind(str, enum.Enum):
    FULL = "full"  # the whole sequence: every step without cache, a block start with one
    PREFIX = "prefix"  # the block and everything after it, against the cached prefix
    DUAL = "dual"  # the block only, against the cached prefix and suffix


@dataclass
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: GenerationParams
    status: Status = Status.WAITING
    slot: int | None = None  # seat: the row of the token canvas
    pages: list[int] = field(default_factory=list)  # K/V cache pages, held from admission to the end
    block: int = 0  # index of the block being decoded
    step: int = 0  # forwards already run inside the current block
    masked: int = -1  # masked positions left in the current block (set in __post_init__)
    carried: int = 0  # positions a step chose not to commit, owed by the next (decoding/dream.py)
    nfe: int = 0
    output_ids: list[int] = field(default_factory=list)  # final tokens, block by block
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_block_time: float | None = None
    block_times: list[float] = field(default_factory=list)  # seconds each block took
    block_started: float | None = None
    stream_steps: bool = False  # hand back a StepEvent per forward (engine/step_events.py)
    step_block: list[int] | None = None  # the block as the last StepEvent left it

    def __post_init__(self) -> None:
        self.masked = self.params.block_length

    def start_next_block(self) -> None:
        self.block += 1
        self.step = 0
        self.masked = self.params.block_length
        self.carried = 0

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def total_len(self) -> int:
        return self.prompt_len + self.params.padded_gen_length

    @property
    def block_length(self) -> int:
        return self.params.block_length

    @property
    def block_start(self) -> int:
        return self.prompt_len + self.block * self.params.block_length

    @property
    def is_last_block(self) -> bool:
        return self.block == self.params.num_blocks - 1

    @property
    def kind(self) -> ForwardKind:
        if self.params.cache == "none" or self.step == 0:
            return ForwardKind.FULL
        return ForwardKind(self.params.cache)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED
