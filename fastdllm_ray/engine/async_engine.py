"""AsyncEngine: the synchronous Engine driven by a background thread, consumed from asyncio.

One thread runs `Engine.step()` while there is work and sleeps on a condition when there is
none (no busy loop). Each request's finished blocks are handed to an asyncio queue on the
event loop that submitted it (`call_soon_threadsafe`), so many coroutines can stream from
one engine. Still no Ray and no HTTP here: the serving layer wraps this.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from fastdllm_ray.engine.engine import Engine
from fastdllm_ray.engine.outputs import BlockOutput
from fastdllm_ray.params import GenerationParams

logger = logging.getLogger(__name__)

_FAILURE_BACKOFF_S = 0.05  # after an unexpected step failure, so a persistent fault cannot spin


class EngineLoopError(RuntimeError):
    """The engine loop failed while this request was live; the loop itself keeps running."""


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue


class AsyncEngine:
    """`async for out in engine.generate(prompt_ids, params)` over one shared Engine.

    `generate` submits at once, so ValueError and QueueFullError reach the caller at the
    call, before any awaiting. Leaving the iteration early (the task is cancelled, the
    client went away) aborts the request and frees its cache slot.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop_failures = 0  # step() raised (each failure fails only the live requests)
        self._streams: dict[str, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._work = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fastdllm-engine-loop", daemon=True)
        self._thread.start()

    # ---- submitting -------------------------------------------------------------------
    def submit(
        self, prompt_ids: Sequence[int], params: GenerationParams, request_id: str | None = None,
        stream_steps: bool = False,
    ) -> tuple[str, asyncio.Queue]:
        """Queues a request from a running event loop; returns its id and output queue."""
        if self._stopping:
            raise RuntimeError("engine: is shut down")
        loop = asyncio.get_running_loop()
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        stream = _Stream(loop, asyncio.Queue())
        with self._streams_lock:
            # registered before the engine sees the request, so no output can miss its queue
            if request_id in self._streams:
                raise ValueError(f"request_id: {request_id!r} is already running")
            self._streams[request_id] = stream
        try:
            self.engine.add_request(list(prompt_ids), params, request_id=request_id, stream_steps=stream_steps)
        except BaseException:
            with self._streams_lock:
                self._streams.pop(request_id, None)
            raise
        with self._work:
            self._work.notify()
        return request_id, stream.queue

    def generate(
        self, prompt_ids: Sequence[int], params: GenerationParams, request_id: str | None = None,
        stream_steps: bool = False,
    ) -> AsyncIterator[BlockOutput]:
        """Submits now (raising ValueError / QueueFullError here) and returns the block stream
        (with `stream_steps`, also one output per forward; see Engine.add_request)."""
        request_id, queue = self.submit(prompt_ids, params, request_id, stream_steps)
        return self._iterate(request_id, queue)

    async def _iterate(self, request_id: str, queue: asyncio.Queue) -> AsyncIterator[BlockOutput]:
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)
            with self._streams_lock:
                self._streams.pop(request_id, None)

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)
        with self._work:
            self._work.notify()

    # ---- the loop ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._work:
                while not self._stopping and not self.engine.has_unfinished():
                    self._work.wait()
                if self._stopping:
                    return
            try:
                outputs = self.engine.step()
            except Exception as exc:  # a bug in a step must not end the loop for later requests
                self._fail_live(exc)
                time.sleep(_FAILURE_BACKOFF_S)
                continue
            for out in outputs:
                self._deliver(out.request_id, out)

    def _deliver(self, request_id: str, item: BlockOutput | BaseException) -> None:
        with self._streams_lock:
            stream = self._streams.get(request_id)
            if stream is not None and (isinstance(item, BaseException) or item.finished):
                self._streams.pop(request_id, None)
        if stream is None:
            return  # its consumer left; the request was aborted or is finishing
        try:
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)
        except RuntimeError:  # the consumer's event loop is closed
            self.engine.abort(request_id)

    def _fail_live(self, exc: Exception) -> None:
        self.loop_failures += 1
        logger.exception("engine step failed; failing the live requests")
        with self._streams_lock:
            live = list(self._streams)
        for request_id in live:
            self.engine.abort(request_id)
            self._deliver(request_id, EngineLoopError(f"{type(exc).__name__}: {exc}"))

    # ---- state ------------------------------------------------------------------------
    @property
    def num_streams(self) -> int:
        with self._streams_lock:
            return len(self._streams)

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive()

    def shutdown(self, timeout: float | None = 5.0) -> None:
        with self._work:
            self._stopping = True
            self._work.notify_all()
        self._thread.join(timeout)


__all__ = ["AsyncEngine", "EngineLoopError"]
