"""Serving metrics through `ray.util.metrics`, exported on Ray's Prometheus endpoint.

Ray (2.60, checked against a live node) exports each metric below with a `ray_` prefix,
adds `_total` to a counter only when its name lacks it, gives histograms `_bucket`
(`le` label), `_sum` and `_count`, and adds its own labels (Component, NodeAddress,
SessionName, Version, WorkerId, otel_scope_*). Names as scraped, with our labels:

  ray_fastdllm_requests_total{application,model,replica,status}  counter  every generation request,
        once, by how it ended (counted by the ingress; statuses in serve/fates.py): stop | length |
        cancelled | timeout | error | failed | rejected | refused | invalid | unauthorized | too_large;
        replica = the engine replica that took it, model = the served model it named ("none" for either
        when there was none)
  ray_fastdllm_requests_received_total{application,route}   counter  generation requests the ingress
        received; minus the sum of requests_total, the requests in flight
  ray_fastdllm_prompt_tokens_total{model,replica}          counter  prompt tokens of finished requests
  ray_fastdllm_generated_tokens_total{model,replica}       counter  answer tokens produced
  ray_fastdllm_nfe_total{model,replica}                    counter  forward evaluations (sequence-forwards)
  ray_fastdllm_forwards_total{model,replica,kind}          counter  sequence-forwards by kind = full | prefix | dual
  ray_fastdllm_model_forwards_total{model,replica}         counter  batched forwards (one per engine step: all kinds share it)
  ray_fastdllm_graph_captures_total{model,replica}         counter  CUDA graphs captured (warm-up captures them all)
  ray_fastdllm_kv_cache_usage{model,replica}               gauge    share of K/V cache pages held
  ray_fastdllm_tokens_per_forward{model,replica}           gauge    tokens committed per sequence-forward
  ray_fastdllm_cache_hit_rate{model,replica}               gauge    cached / attended key positions
  ray_fastdllm_batch_size{model,replica}                   gauge    sequences in the latest engine step
  ray_fastdllm_peak_batch_size{model,replica}              gauge    largest batch since the replica started
  ray_fastdllm_running_requests{model,replica}             gauge    sequences holding a cache slot
  ray_fastdllm_queue_length{model,replica}                 gauge    requests waiting for a slot
  ray_fastdllm_cached_prompt_tokens_total{model,replica}   counter  prompt tokens of finished requests whose
        K/V came from the prefix cache (block-diffusion models; exported from a replica's first hit on)
  ray_fastdllm_prefix_cache_hit_rate{model,replica}        gauge    cached prompt tokens / prompt tokens of the
        requests the replica admitted (0 where the model never shares: LLaDA, Dream)
  ray_fastdllm_prefix_cache_pages{model,replica}           gauge    K/V pages the prefix cache holds (in use or idle)
  ray_fastdllm_prefix_cache_evictions_total{model,replica} counter  idle cached pages evicted for room
  ray_fastdllm_prefill_forwards_saved_total{model,replica} counter  prefill forwards skipped (the cache held the
        whole prompt's prefill)
  ray_fastdllm_time_to_first_block_seconds{model,replica}  histogram  arrival -> first final block
  ray_fastdllm_request_latency_seconds{model,replica}      histogram  arrival -> last block
  ray_fastdllm_http_requests_total{model,route,code}       counter  ingress responses by HTTP status

prometheus_client's text parser names a counter's family without `_total` (family
`ray_fastdllm_requests`, sample `ray_fastdllm_requests_total`); PromQL uses the sample names.
The counters and histograms are cumulative per replica process; gauges are sampled from
the engine every `GAUGE_PERIOD_S`. Ray's agent scrapes its workers every few seconds,
so a value shows up on the endpoint ~5-10 s after it is recorded.
"""

from __future__ import annotations

import logging
import threading

from ray.util.metrics import Counter, Gauge, Histogram

from fastdllm_ray.engine.outputs import GenerationResult
from fastdllm_ray.engine.stats import EngineStats

GAUGE_PERIOD_S = 1.0
LATENCY_BOUNDARIES_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300]
_TAGS = ("model", "replica")


class ReplicaMetrics:
    """The metrics of one engine replica; `observe_*` are called as requests end."""

    def __init__(self, model: str, replica: str) -> None:
        tags = {"model": model, "replica": replica}

        def make(kind, name, description, extra=(), **kw):
            metric = kind(name, description, tag_keys=_TAGS + extra, **kw)
            metric.set_default_tags(tags)
            return metric

        self.prompt_tokens = make(Counter, "fastdllm_prompt_tokens_total", "prompt tokens")
        self.generated_tokens = make(Counter, "fastdllm_generated_tokens_total", "generated answer tokens")
        self.nfe = make(Counter, "fastdllm_nfe_total", "forward evaluations (sequence-forwards)")
        self.forwards = make(Counter, "fastdllm_forwards_total", "sequence-forwards by kind", ("kind",))
        self.model_forwards = make(Counter, "fastdllm_model_forwards_total", "batched forwards (one per step)")
        self.graph_captures = make(Counter, "fastdllm_graph_captures_total", "CUDA graphs captured")
        self.kv_cache_usage = make(Gauge, "fastdllm_kv_cache_usage", "share of K/V cache pages held")
        self.tokens_per_forward = make(Gauge, "fastdllm_tokens_per_forward", "tokens committed per sequence-forward")
        self.cache_hit_rate = make(Gauge, "fastdllm_cache_hit_rate", "attended key positions served from cache")
        self.batch_size = make(Gauge, "fastdllm_batch_size", "sequences in the latest engine step")
        self.peak_batch_size = make(Gauge, "fastdllm_peak_batch_size", "largest engine batch so far")
        self.running = make(Gauge, "fastdllm_running_requests", "sequences holding a cache slot")
        self.queue_length = make(Gauge, "fastdllm_queue_length", "requests waiting for a cache slot")
        self.cached_prompt_tokens = make(Counter, "fastdllm_cached_prompt_tokens_total",
                                         "prompt tokens served from the prefix cache")
        self.prefix_cache_hit_rate = make(Gauge, "fastdllm_prefix_cache_hit_rate",
                                          "prompt tokens served from the prefix cache / prompt tokens")
        self.prefix_cache_pages = make(Gauge, "fastdllm_prefix_cache_pages", "K/V pages held by the prefix cache")
        self.prefix_evictions = make(Counter, "fastdllm_prefix_cache_evictions_total",
                                     "idle prefix cache pages evicted for room")
        self.forwards_saved = make(Counter, "fastdllm_prefill_forwards_saved_total",
                                   "prefill forwards the prefix cache spared")
        self.ttfb = make(Histogram, "fastdllm_time_to_first_block_seconds", "arrival to first final block",
                         boundaries=LATENCY_BOUNDARIES_S)
        self.latency = make(Histogram, "fastdllm_request_latency_seconds", "arrival to last block",
                            boundaries=LATENCY_BOUNDARIES_S)
        self._counts_seen: dict[tuple[str, str | None], int] = {}  # counter -> engine count already exported

    def observe_result(self, result: GenerationResult) -> None:
        self.prompt_tokens.inc(len(result.prompt_ids))
        if result.cached_tokens:
            self.cached_prompt_tokens.inc(result.cached_tokens)
        if result.token_ids:
            self.generated_tokens.inc(len(result.token_ids))
        if result.nfe:
            self.nfe.inc(result.nfe)
        if result.time_to_first_block is not None:
            self.ttfb.observe(result.time_to_first_block)
        if result.latency is not None and result.finish_reason in ("stop", "length"):
            self.latency.observe(result.latency)

    def sample_engine(self, stats: EngineStats, running: int, waiting: int) -> None:
        self.tokens_per_forward.set(stats.tokens_per_forward)
        self.cache_hit_rate.set(stats.cache_hit_rate)
        self.batch_size.set(stats.last_batch_size if running else 0)
        self.peak_batch_size.set(stats.max_batch_size)
        self.running.set(running)
        self.queue_length.set(waiting)
        self.kv_cache_usage.set(stats.kv_cache_usage)
        self.prefix_cache_hit_rate.set(stats.prefix_cache_hit_rate)
        self.prefix_cache_pages.set(stats.cached_pages)
        counts = {("forwards", kind): count for kind, count in list(stats.forwards.items())}
        counts.update({("model_forwards", None): stats.model_forwards, ("graph_captures", None): stats.graph_captures,
                       ("prefix_evictions", None): stats.evictions, ("forwards_saved", None): stats.forwards_saved})
        for (name, kind), count in counts.items():  # counters advance by what the engine did since
            new = count - self._counts_seen.get((name, kind), 0)
            if new > 0:
                getattr(self, name).inc(new, tags={"kind": kind} if kind else None)
                self._counts_seen[(name, kind)] = count


class GaugeSampler:
    """A daemon thread that samples the engine's gauges every period (stops with `stop`)."""

    def __init__(self, sample, period_s: float = GAUGE_PERIOD_S) -> None:
        self._sample = sample
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastdllm-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._sample()
            except Exception:  # a failed sample must not end sampling for the replica's life
                logging.getLogger("ray.serve").exception("sampling engine gauges failed")

    def stop(self) -> None:
        self._stop.set()


class IngressMetrics:
    def __init__(self, model: str) -> None:
        self.responses = Counter("fastdllm_http_requests_total", "ingress responses by HTTP status",
                                 tag_keys=("model", "route", "code"))
        self.responses.set_default_tags({"model": model})

    def observe(self, route: str, code: int) -> None:
        self.responses.inc(1, tags={"route": route, "code": str(code)})


# ---- request fates: counted by the ingress, which sees every request (serve/fates.py) ----

class RequestFateMetrics:
    """`requests_received_total` as a generation request arrives, `requests_total` once as it ends;
    both carry the Serve application (as Serve's own metrics name it), so that several apps on one
    cluster each add up."""

    def __init__(self, application: str) -> None:
        self.received = Counter("fastdllm_requests_received_total", "generation requests received by the ingress",
                                tag_keys=("application", "route"))
        self.requests = Counter("fastdllm_requests_total", "generation requests by how they ended",
                                tag_keys=("application", "model", "replica", "status"))
        for metric in (self.received, self.requests):
            metric.set_default_tags({"application": application})

    def receive(self, route: str) -> None:
        self.received.inc(1, tags={"route": route})

    def settle(self, model: str, replica: str, status: str) -> None:
        self.requests.inc(1, tags={"model": model, "replica": replica, "status": status})
