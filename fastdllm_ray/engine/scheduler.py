"""Scheduler: admission into a bounded set of seats and the K/V page pool, a bounded waiting
queue, and the running batch (every running sequence shares one forward per step)."""

from __future__ import annotations

from collections import deque
from typing import Callable

from fastdllm_ray.engine.page_pool import PagePool
from fastdllm_ray.engine.sequence import Sequence, Status


class QueueFullError(RuntimeError):
    """The engine's waiting queue is full: the request is refused, not queued."""


class Scheduler:
    """A waiting request is admitted, first come first served, when a seat (a row of the token
    canvas) is free and the pool has every page its sequence will need; the queue's head waits
    for pages rather than being overtaken, so a long request is never starved by short ones."""

    def __init__(self, num_slots: int, max_queue: int, pool: PagePool,
                 prefix_keys: Callable[[Sequence], list[tuple[bytes, int]]] | None = None) -> None:
        self.free_slots = list(range(num_slots))
        self.max_queue = max_queue
        self.max_running = num_slots  # may be lowered at run time (generate's max_batch_size)
        self.pool = pool
        self.prefix_keys = prefix_keys  # a sequence's prompt prefix keys to look up in the pool (sharing)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        # seats freed since the last admission are room too: a request that arrives between a
        # sequence finishing and the next step seating its successor is not refused (the Serve
        # router, which allows max_num_seqs + max_queue in flight, already counts that seat free)
        seats = max(0, min(len(self.free_slots), self.max_running - len(self.running)))
        if len(self.waiting) >= self.max_queue + seats:
            raise QueueFullError(f"engine queue is full ({self.max_queue} waiting requests)")
        self.waiting.append(seq)

    def admit(self) -> list[Sequence]:
        """Moves waiting sequences into free seats with their pages (lowest seat first): the
        cached pages of their longest shared prefix, and fresh ones for the rest."""
        admitted = []
        while self.waiting and self.free_slots and len(self.running) < self.max_running:
            seq = self.waiting[0]
            shared = self.pool.lookup(self.prefix_keys(seq)) if self.prefix_keys else []
            if not self.pool.can_allocate(seq.total_len, shared):
                break
            self.waiting.popleft()
            self.free_slots.sort()
            seq.slot = self.free_slots.pop(0)
            seq.pages = self.pool.allocate(seq.total_len, shared)
            seq.cached_len = seq.registered = len(shared)
            seq.cached_len *= self.pool.page_size
            seq.status = Status.RUNNING
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def release(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
            self.free_slots.append(seq.slot)
            self.pool.free(seq.pages)
            seq.pages = []
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.slot = None

    def batch(self) -> list[Sequence]:
        """The running sequences in seat order: one forward runs them all."""
        return sorted(self.running, key=lambda s: s.slot)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)
