"""Scheduler: admission into a bounded set of cache slots, a bounded waiting queue, and
the grouping of running sequences into batched forwards."""

from __future__ import annotations

from collections import deque

from fastdllm_ray.engine.sequence import ForwardKind, Sequence, Status


class QueueFullError(RuntimeError):
    """The engine's waiting queue is full: the request is refused, not queued."""


class Scheduler:
    def __init__(self, num_slots: int, max_queue: int) -> None:
        self.free_slots = list(range(num_slots))
        self.max_queue = max_queue
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.max_queue:
            raise QueueFullError(f"engine queue is full ({self.max_queue} waiting requests)")
        self.waiting.append(seq)

    def admit(self) -> list[Sequence]:
        """Moves waiting sequences into free slots (lowest slot first, so batches stay compact)."""
        admitted = []
        while self.waiting and self.free_slots:
            seq = self.waiting.popleft()
            self.free_slots.sort()
            seq.slot = self.free_slots.pop(0)
            seq.status = Status.RUNNING
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def release(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
            self.free_slots.append(seq.slot)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.slot = None

    def groups(self) -> list[tuple[ForwardKind, int, list[Sequence]]]:
        """Running sequences that can share one forward: same kind, same block length."""
        by_key: dict[tuple[ForwardKind, int], list[Sequence]] = {}
        for seq in self.running:
            by_key.setdefault((seq.kind, seq.block_length), []).append(seq)
        return [(kind, bl, sorted(seqs, key=lambda s: s.slot)) for (kind, bl), seqs in by_key.items()]

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)
