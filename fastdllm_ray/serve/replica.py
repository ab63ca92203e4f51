"""EngineReplica: one Serve replica = one model on one device, driven by an AsyncEngine.

The ingress calls `generate` as a streaming method: its first item says whether the request
was admitted ({"status": "accepted"}) or refused ({"status": "rejected"|"invalid", ...}), so
the ingress can answer 503/400 before it starts a stream; then one BlockOutput per final
block. Cancelling the call (client gone) cancels the generator, which aborts the request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import torch
from ray import serve

from fastdllm_ray.engine import Engine, EngineConfig, QueueFullError
from fastdllm_ray.engine.async_engine import AsyncEngine
from fastdllm_ray.engine.outputs import BlockOutput
from fastdllm_ray.model import load_model
from fastdllm_ray.params import GenerationParams
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.metrics import GaugeSampler, ReplicaMetrics

logger = logging.getLogger("ray.serve")


def resolve_model(config: AppConfig) -> str:
    """The checkpoint a config names: its `model` (a shipped model's name is its directory), or
    the model the package ships by default."""
    from fastdllm_ray.model.shipped import default_model_path, resolve_shipped

    if config.model:
        return resolve_shipped(config.model)
    return str(default_model_path())


def served_model_name(config: AppConfig) -> str:
    """What clients send as `model`: the configured name, else the checkpoint's last path part."""
    if config.model_name:
        return config.model_name
    return Path(resolve_model(config).rstrip("/")).name.lower()


def served_model_names(config: AppConfig) -> list[str]:
    """Every name clients may send as `model` for this model: its name, then its aliases."""
    return list(dict.fromkeys([served_model_name(config), *config.model_aliases]))


def replica_device(config: AppConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if torch.cuda.is_available() and (config.num_gpus_per_replica or 0) > 0 else "cpu"


@serve.deployment
class EngineReplica:
    def __init__(self, config: dict) -> None:
        self.config = AppConfig.model_validate(config)
        device = replica_device(self.config)
        model = load_model(resolve_model(self.config), device=device, dtype=self.config.dtype)
        settings = self.config.engine
        engine = Engine(model, EngineConfig(max_num_seqs=settings.max_num_seqs,
                                            max_model_len=settings.max_model_len,
                                            max_queue=settings.max_queue, seed=self.config.seed,
                                            page_size=settings.page_size, num_pages=settings.num_pages,
                                            prefix_sharing=settings.prefix_sharing,
                                            gpu_memory_utilization=settings.gpu_memory_utilization))
        warm_s = engine.warm_up() if settings.warm_up else 0.0
        self.engine = AsyncEngine(engine)
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # constructed outside Serve (a script or a test)
            replica = f"local-{os.getpid()}"
        self.replica_id = replica  # in every admission, so the ingress can count each request's fate by replica
        self.metrics = ReplicaMetrics(served_model_name(self.config), replica)
        self._sampler = GaugeSampler(self._sample_gauges)
        logger.info("engine replica %s: %s on %s (%s), %d seats, %d tokens each at most, %s, warm-up %.1f s",
                    replica, resolve_model(self.config), device, self.config.dtype or "default dtype",
                    settings.max_num_seqs, engine.max_model_len, engine.memory.summary(), warm_s)

    def _sample_gauges(self) -> None:
        engine = self.engine.engine
        self.metrics.sample_engine(engine.stats, engine.num_running, engine.num_waiting)

    async def generate(self, prompt_ids: list[int], params: GenerationParams, request_id: str,
                       stream_steps: bool = False) -> AsyncIterator[dict | BlockOutput]:
        try:
            stream = self.engine.generate(prompt_ids, params, request_id, stream_steps)
        except QueueFullError as exc:
            yield {"status": "rejected", "message": str(exc), "replica": self.replica_id}
            return
        except ValueError as exc:
            yield {"status": "invalid", "message": str(exc), "replica": self.replica_id}
            return
        finished = False
        try:
            yield {"status": "accepted", "replica": self.replica_id}
            async for out in stream:
                if out.result is not None:
                    self.metrics.observe_result(out.result)
                finished = out.finished
                yield out
        finally:
            if not finished:  # cancelled, perhaps before the stream was first awaited
                self.engine.abort(request_id)

    def record_replica_metadata(self) -> dict:
        """Told once to every router of this deployment (Serve's hook, when the replica is ready):
        whether prompts share prefixes here, and by which page size (serve/prefix_router.py)."""
        engine = self.engine.engine
        return {"prefix_sharing": engine.sharing, "page_size": engine.pool.page_size}

    def stats(self) -> dict:
        """Engine counters for tests, benchmarks and debugging (the metrics carry the same)."""
        engine = self.engine.engine
        s = engine.stats
        return {
            "running": engine.num_running, "waiting": engine.num_waiting,
            "last_batch_size": s.last_batch_size, "max_batch_size": s.max_batch_size,
            "forwards": dict(s.forwards), "nfe": s.rows, "committed_tokens": s.committed_tokens,
            "tokens_per_forward": s.tokens_per_forward, "cache_hit_rate": s.cache_hit_rate,
            "finished": dict(s.finished), "loop_failures": self.engine.loop_failures,
            "max_model_len": engine.max_model_len, "graph_captures": s.graph_captures,
            "kv_cache_usage": s.kv_cache_usage, "replica": self.replica_id,
            # prefix sharing (block-diffusion models; zeros elsewhere)
            "prefix_sharing": engine.sharing, "prompt_tokens": s.prompt_tokens,
            "cached_prompt_tokens": s.cached_prompt_tokens, "prefix_cache_hit_rate": s.prefix_cache_hit_rate,
            "forwards_saved": s.forwards_saved, "cached_pages": s.cached_pages, "evictions": s.evictions,
        }

    def check_health(self) -> None:
        if not self.engine.is_running:
            raise RuntimeError("engine loop thread is not running")

    def __del__(self) -> None:
        sampler = getattr(self, "_sampler", None)
        if sampler is not None:
            sampler.stop()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown(timeout=1.0)
