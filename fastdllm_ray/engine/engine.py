"""Engine: the continuous-batching loop for diffusion decoding on one device.

Each `step()` admits waiting requests (a free seat and every K/V page the sequence will need),
then runs one forward over every live sequence together: full forwards (a block start with
a cache, or every step without one), prefix steps and dual steps, of any block length, with
their query tokens packed into one batch (engine/step_inputs.py). Finished blocks are handed
back at once; finished sequences free their seat and pages at once.
Requests and aborts may arrive from other threads; they take effect at the next step.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass


from fastdllm_ray.decoding import StepOutcome
from fastdllm_ray.engine.memory import kv_cache_plan
from fastdllm_ray.engine.outputs import BlockOutput, GenerationResult
from fastdllm_ray.engine.page_pool import PagePool, prefix_keys
from fastdllm_ray.engine.runner import ModelRunner
from fastdllm_ray.engine.scheduler import QueueFullError, Scheduler
from fastdllm_ray.engine.sequence import Sequence, Status
from fastdllm_ray.engine.stats import EngineStats
from fastdllm_ray.engine.step_events import step_event
from fastdllm_ray.model import DiffusionTransformer
from fastdllm_ray.model.fp8 import quantize_model
from fastdllm_ray.params import GenerationParams


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 16  # live sequences (seats of the batch)
    max_model_len: int | None = None  # prompt + padded answer per sequence; default: the model's, <= 8192
    max_queue: int = 256  # waiting requests beyond the live ones; more are refused
    seed: int = 0  # for temperature > 0 and remasking="random"
    cuda_graphs: bool = True  # replay captured steps on CUDA (no effect on the CPU)
    compile_blocks: bool = True  # torch.compile the blocks' elementwise work on CUDA
    page_size: int = 64  # positions per K/V cache page (a power of two >= 16)
    # pages in the K/V pool; default: max_num_seqs sequences of max_model_len, or, on CUDA with
    # gpu_memory_utilization set, what the GPU's memory holds, at most that many (engine/memory.py).
    # Fewer pages let more seats share the memory when most requests are shorter than max_model_len.
    num_pages: int | None = None
    # requests whose prompts begin alike share the K/V pages of their common whole blocks (only
    # for block-diffusion families, where that is exact: decoding/policy.py shares_prefix)
    prefix_sharing: bool = True
    # on CUDA, size the pool from the GPU's memory (engine/memory.py): the share of it for weights,
    # activations, graphs and pages, as vLLM's flag of that name. None: num_pages' default.
    gpu_memory_utilization: float | None = None
    dtype: str | None = None  # "fp8": the model's block linears quantized when the engine is built (model/fp8.py)

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("max_model_len: must be >= 2")
        if self.page_size < 16 or self.page_size & (self.page_size - 1):
            raise ValueError(f"page_size: {self.page_size} is not a power of two >= 16")
        if self.num_pages is not None and self.num_pages < 1:
            raise ValueError("num_pages: must be >= 1")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: {self.gpu_memory_utilization} is outside (0, 1]")
        if self.dtype not in (None, "fp8"):
            raise ValueError(f"dtype: {self.dtype!r} is not 'fp8' (the model's own dtype is set when it is loaded)")


DEFAULT_CONTEXT_CAP = 8192  # positions per sequence when neither the caller nor the model says fewer


def default_max_model_len(declared: int) -> int:
    """The context a sequence gets when max_model_len is not set: the model's own, capped. A
    checkpoint may declare far more than anyone serves (Dream's config says 131072), and every
    seat reserves cache for it: 16 seats of Dream-7B at 131072 would ask for 120 GB."""
    return min(declared, DEFAULT_CONTEXT_CAP)


def as_token_ids(values) -> list:
    """Plain ints from any integer sequence (list, numpy array, tensor); anything else is
    kept as it is for `Engine.validate` to refuse by name."""
    return [int(t) if not isinstance(t, bool) and hasattr(t, "__index__") else t for t in values]


class Engine:
    def __init__(self, model: DiffusionTransformer, config: EngineConfig | None = None) -> None:
        self.model = model
        self.config = config or EngineConfig()
        declared = model.config.max_sequence_length
        self.max_model_len = min(self.config.max_model_len or default_max_model_len(declared), declared)
        c = self.config
        if c.dtype == "fp8":
            quantize_model(model)
        self.memory = kv_cache_plan(model, c, self.max_model_len)  # on CUDA: measured, sized from free memory
        num_pages = self.memory.num_pages
        self.pool = PagePool(num_pages, c.page_size)
        self.runner = ModelRunner(model, c.max_num_seqs, self.max_model_len, num_pages, c.page_size,
                                  c.seed, c.cuda_graphs, c.compile_blocks)
        self.sharing = c.prefix_sharing and self.runner.policy.shares_prefix
        self.scheduler = Scheduler(c.max_num_seqs, c.max_queue, self.pool,
                                   self._prompt_prefix_keys if self.sharing else None)
        self.stats = EngineStats()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._aborts: list[Sequence] = []
        self._sequences: dict[str, Sequence] = {}

    def warm_up(self, block_length: int = 32) -> float:
        """Prepares the engine before any traffic, so that no request pays for compilation or
        graph capture. On CUDA it captures the graphs of every size bucket (every step of up to
        4096 query tokens, blocks of up to 64 positions: engine/cuda_graphs.py), then decodes a
        few short requests (batch 1 and > 1, every kind of step the family runs, one sampling) to
        compile the eager paths. Leaves no trace (seats and pages freed, counters reset). Returns seconds."""
        if self.has_unfinished():
            raise RuntimeError("warm_up: the engine already has requests")
        start = time.monotonic()
        self.runner.capture_graphs()
        mask = self.model.config.mask_token_id
        prompt = [t for t in range(block_length + 1) if t != mask][: max(1, min(block_length, self.max_model_len // 2))]
        block_length = max(1, min(block_length, (self.max_model_len - len(prompt)) // 2))
        generator_state = self.runner.generator.get_state()
        for requests in self.runner.policy.warm_up_rounds(block_length):
            for params in requests[: self.config.max_num_seqs]:
                self.add_request(prompt, params)
            while self.has_unfinished():
                self.step()
        self.runner.generator.set_state(generator_state)
        self.stats = EngineStats(graph_captures=self.runner.captures)
        return time.monotonic() - start

    def validate(self, prompt_ids: list[int], params: GenerationParams) -> None:
        """Raises ValueError naming the field when this model cannot run the request."""
        if not isinstance(params, GenerationParams):
            raise ValueError(f"params: {type(params).__name__} is not GenerationParams")
        policy = self.runner.policy
        policy.validate(params)
        params = policy.effective(params)
        if len(prompt_ids) == 0:
            raise ValueError("prompt: is empty")
        vocab = self.model.config.embedding_size
        if any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab for t in prompt_ids):
            raise ValueError(f"prompt: token ids must be integers in [0, {vocab})")
        if self.model.config.mask_token_id in prompt_ids:
            raise ValueError("prompt: contains the mask token id, which would be generated, not read")
        total = policy.total_len(len(prompt_ids), params)
        answer = total - len(prompt_ids)
        if total > self.max_model_len:
            raise ValueError(
                f"prompt: {len(prompt_ids)} prompt tokens + {answer} answer tokens "
                f"exceed the model's max_sequence_length {self.max_model_len}"
            )
        if self.pool.pages_for(total) > self.pool.num_pages:
            raise ValueError(
                f"prompt: {len(prompt_ids)} prompt tokens + {answer} answer tokens need "
                f"{self.pool.pages_for(total)} K/V cache pages of {self.pool.page_size} positions; the cache "
                f"holds {self.pool.num_pages}"
            )

    def add_request(self, prompt_ids: list[int], params: GenerationParams, request_id: str | None = None,
                    stream_steps: bool = False) -> str:
        """Queues a request (thread-safe); raises ValueError or QueueFullError. With `stream_steps`,
        every forward also hands back a BlockOutput whose `step` says what it committed."""
        prompt_ids = as_token_ids(prompt_ids)
        self.validate(prompt_ids, params)
        request_id = request_id or f"req-{next(self._ids)}"
        policy = self.runner.policy
        params = policy.effective(params)
        seq = Sequence(request_id, prompt_ids, params, total_len=policy.total_len(len(prompt_ids), params),
                       stream_steps=bool(stream_steps))
        seq.state = policy.new_state(seq)
        with self._lock:
            if request_id in self._sequences:
                raise ValueError(f"request_id: {request_id!r} is already running")
            self.scheduler.add(seq)
            self._sequences[request_id] = seq
        return request_id

    def abort(self, request_id: str) -> None:
        """Removes a request at the next step (thread-safe); its cache slot is freed."""
        with self._lock:
            seq = self._sequences.get(request_id)
            if seq is not None:  # the sequence itself: a later request reusing the id is not hit
                self._aborts.append(seq)

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._sequences)

    @property
    def num_running(self) -> int:
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    def step(self) -> list[BlockOutput]:
        """One engine iteration; returns the blocks that became final (and, for requests with
        stream_steps, one output per forward carrying its StepEvent)."""
        outputs: list[BlockOutput] = []
        with self._lock:
            for seq in self._aborts:
                if not seq.finished:
                    outputs.append(self._finish(seq, "cancelled"))
            self._aborts.clear()
            for seq in self.scheduler.admit():
                self.runner.place(seq)
                self.runner.policy.admitted(seq)
                seq.block_started = time.monotonic()
                self.stats.prompt_tokens += seq.prompt_len
                self.stats.cached_prompt_tokens += seq.cached_len
                self.stats.forwards_saved += seq.forwards_saved
        batch = self.scheduler.batch()
        self.stats.kv_cache_usage = 1 - self.pool.num_free / self.pool.num_pages
        self.stats.cached_pages, self.stats.evictions = self.pool.num_cached, self.pool.evictions
        self.stats.last_batch_size = len(batch)
        self.stats.max_batch_size = max(self.stats.max_batch_size, len(batch))
        if not batch:
            return outputs
        try:
            outcomes, fstats = self.runner.step(batch)
        except Exception as exc:  # a failed forward fails its sequences, not the engine
            with self._lock:
                outputs.extend(self._finish(seq, "error", f"{type(exc).__name__}: {exc}") for seq in batch)
            return outputs
        self.stats.model_forwards += 1
        self.stats.forwards.update(seq.plan.kind for seq in batch)
        self.stats.rows += fstats.rows
        self.stats.computed_positions += fstats.computed_positions
        self.stats.attended_positions += fstats.attended_positions
        self.stats.graph_captures = self.runner.captures
        end_ids = frozenset(self.model.end_token_ids)
        for seq, outcome in zip(batch, outcomes):
            self.stats.committed_tokens += outcome.committed
            block_output = self._advance(seq, outcome, end_ids)
            if block_output is not None:
                outputs.append(block_output)
        return outputs

    def _advance(self, seq: Sequence, outcome: StepOutcome, end_ids: frozenset[int]) -> BlockOutput | None:
        policy = self.runner.policy
        event = step_event(policy, seq, outcome, self.model.config.mask_token_id) if seq.stream_steps else None
        advance = policy.advance(seq, outcome, end_ids)
        seq.nfe += 1
        if self.sharing:
            self._offer_pages(seq)
        now = time.monotonic()
        if advance.block_done:
            seq.block_times.append(now - (seq.block_started or now))
            seq.block_started = now
        if (advance.block_done or advance.finish) and seq.first_block_time is None:
            seq.first_block_time = now
        seq.output_ids.extend(advance.tokens)
        if advance.finish is not None:
            with self._lock:
                final = self._finish(seq, advance.finish)
            final.token_ids, final.step = advance.tokens, event
            return final
        if advance.tokens or event is not None:
            return BlockOutput(seq.request_id, advance.tokens, finished=False, step=event, cached_tokens=seq.cached_len)
        return None

    # ---- prefix sharing --------------------------------------------------------------------
    def _prompt_prefix_keys(self, seq: Sequence) -> list[tuple[bytes, int]]:
        """The keys of the prompt's pages the sequence may take from the cache (hashed once: a
        request waiting for pages is looked up again every step)."""
        if seq.prompt_keys is None:
            policy = self.runner.policy
            seq.prompt_keys = prefix_keys(seq.prompt_ids[: policy.shareable_prefix(seq)], self.pool.page_size,
                                          policy.prefix_block(seq))
        return seq.prompt_keys

    def _offer_pages(self, seq: Sequence) -> None:
        """Registers the sequence's pages whose K/V became final, for later requests to share."""
        policy, page = self.runner.policy, self.pool.page_size
        block = policy.prefix_block(seq)
        final = policy.final_prefix(seq)
        if final < -(-((seq.registered + 1) * page) // block) * block:  # the next page's K/V are not final yet
            return
        keys = prefix_keys((seq.prompt_ids + seq.output_ids)[:final], page, block)
        for i in range(seq.registered, len(keys)):
            self.pool.register(seq.pages[i], keys[i][0])
        seq.registered = max(seq.registered, len(keys))

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> BlockOutput:
        """Ends a sequence (caller holds the lock) and frees its slot."""
        self.scheduler.release(seq)
        self._sequences.pop(seq.request_id, None)
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        seq.error = error
        self.stats.finished[reason] += 1
        now = time.monotonic()
        result = GenerationResult(
            request_id=seq.request_id,
            prompt_ids=seq.prompt_ids,
            token_ids=list(seq.output_ids),
            nfe=seq.nfe,
            finish_reason=reason,
            block_times=seq.block_times,
            time_to_first_block=None if seq.first_block_time is None else seq.first_block_time - seq.arrival_time,
            latency=now - seq.arrival_time,
            error=error,
            cached_tokens=seq.cached_len,
            forwards_saved=seq.forwards_saved,
        )
        return BlockOutput(seq.request_id, [], finished=True, result=result, cached_tokens=seq.cached_len)


__all__ = ["Engine", "EngineConfig", "QueueFullError"]
