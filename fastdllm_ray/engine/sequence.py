"""Sequence: one request's state inside the engine. How far its decoding has come is its
family's business (`state`, kept by the decoding policy); the engine keeps its seat, pages,
answer and timing."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from fastdllm_ray.params import GenerationParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: GenerationParams  # with the family's defaults filled in (DecodingPolicy.effective)
    total_len: int = 0  # positions (prompt included) it may hold K/V for: its pages
    state: Any = None  # the decoding policy's progress (DecodingPolicy.new_state)
    plan: Any = None  # the RowPlan of the step being run
    status: Status = Status.WAITING
    slot: int | None = None  # seat: the row of the token canvas
    pages: list[int] = field(default_factory=list)  # K/V cache pages, held from admission to the end
    nfe: int = 0
    output_ids: list[int] = field(default_factory=list)  # final tokens, as they became final
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_block_time: float | None = None
    block_times: list[float] = field(default_factory=list)  # seconds each block took
    block_started: float | None = None
    stream_steps: bool = False  # hand back a StepEvent per forward (engine/step_events.py)
    cached_len: int = 0  # positions [0, cached_len) whose K/V came from shared pages
    forwards_saved: int = 0  # forwards that shared pages spared
    registered: int = 0  # pages already offered to the prefix cache
    prompt_keys: list | None = None  # its prompt's prefix-cache keys, hashed once (engine._prompt_prefix_keys)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED
