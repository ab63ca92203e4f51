"""Locust traffic for an OpenAI-compatible fastdllm-ray server: chat and completion requests,
streaming and not, drawn from a scenario file (prompt lengths and Fast-dLLM settings).

    locust -f loadtest/locustfile.py --headless -H http://127.0.0.1:8000 -u 16 -r 4 -t 60s \
        --csv out/locust --html out/report.html [--scenarios loadtest/scenarios.yaml]

Statistics, by locust request type (the name column is the scenario):
- chat / completion (+ "-stream"): end-to-end latency of accepted requests; the content
  size column is the number of generated tokens (usage.completion_tokens).
- TTFC: time to the first streamed chunk holding a finished block (streaming scenarios only).
- REFUSED: 429/503 answers to an overloaded server (with Retry-After). Refusals are not
  failures: the server declined the work before accepting it. Their name is the status.
Failures are accepted requests that did not end with a full answer (5xx other than an
overload refusal, a broken stream, a timeout, a connection error).

With --summary-json PATH the run's totals (RPS, latency and TTFC percentiles, tokens/s,
failures, refusals) are also written as one JSON document when the test stops.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Optional

import gevent
import requests
import yaml
from locust import User, events, task
from locust.exception import StopUser

DEFAULT_SCENARIOS = Path(__file__).with_name("scenarios.yaml")
REFUSAL_STATUSES = (429, 503)


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--scenarios", default=str(DEFAULT_SCENARIOS), help="scenario YAML file")
    parser.add_argument("--api-key", default=os.environ.get("FASTDLLM_API_KEY", ""),
                        help="bearer key (default $FASTDLLM_API_KEY)")
    parser.add_argument("--model", default="", help="model name to send (default: the first of /v1/models)")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after this many answers (0: no limit)")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="client timeout per request, s")
    parser.add_argument("--summary-json", default="", help="write the run's totals here at the end")


def load_scenarios(path: str) -> list[dict]:
    """The scenario list of a YAML file, each checked for the fields the users rely on."""
    scenarios = yaml.safe_load(Path(path).read_text())["scenarios"]
    for s in scenarios:
        missing = {"name", "endpoint", "prompt_chars", "max_tokens"} - set(s)
        if missing or s["endpoint"] not in ("chat", "completion"):
            raise ValueError(f"scenarios: {s.get('name', s)} lacks {sorted(missing)} or has a bad endpoint")
    return scenarios


def synthetic_prompt(chars: int, rng: random.Random) -> str:
    """Arithmetic text of exactly `chars` characters (the shipped model's own domain)."""
    text = ""
    while len(text) < chars:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        text += f"{a}+{b}={a + b}; "
    return text[:chars].rstrip() or "1+1="


def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class _Totals:
    """Whole-run figures across scenarios (locust's own tables are per scenario)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self.stopped: Optional[float] = None
        self.latencies_ms: list[float] = []
        self.ttfc_ms: list[float] = []
        self.completion_tokens = 0
        self.failures: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.issued = 0

    def summary(self) -> dict:
        duration = max(1e-9, (self.stopped or time.time()) - self.started)
        ok = len(self.latencies_ms)
        return {
            "duration_s": round(duration, 2), "accepted_ok": ok, "failed": sum(self.failures.values()),
            "failures_by_kind": self.failures, "refused": sum(self.refusals.values()),
            "refusals_by_status": self.refusals, "rps": round(ok / duration, 3),
            "latency_p50_ms": percentile(self.latencies_ms, 50), "latency_p95_ms": percentile(self.latencies_ms, 95),
            "ttfc_p50_ms": percentile(self.ttfc_ms, 50), "ttfc_p95_ms": percentile(self.ttfc_ms, 95),
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": round(self.completion_tokens / duration, 2),
        }


TOTALS = _Totals()


@events.test_start.add_listener
def _on_start(environment, **_) -> None:
    TOTALS.reset()


@events.test_stop.add_listener
def _on_stop(environment, **_) -> None:
    TOTALS.stopped = time.time()
    path = environment.parsed_options.summary_json if environment.parsed_options else ""
    if path:
        Path(path).write_text(json.dumps(TOTALS.summary(), indent=2) + "\n")


class _Failure(Exception):
    pass


class OpenAIUser(User):
    """One client sending back-to-back requests (no think time: the point is load)."""

    _model: Optional[str] = None

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.base = self.environment.host.rstrip("/")
        self.timeout = options.request_timeout
        self.max_requests = options.max_requests
        self.scenarios = load_scenarios(options.scenarios)
        self.rng = random.Random()
        self.http = requests.Session()
        if options.api_key:
            self.http.headers["Authorization"] = f"Bearer {options.api_key}"
        if OpenAIUser._model is None:
            OpenAIUser._model = options.model or self._served_model()

    def _served_model(self) -> str:
        reply = self.http.get(f"{self.base}/v1/models", timeout=self.timeout)
        reply.raise_for_status()
        return reply.json()["data"][0]["id"]

    def _fire(self, kind: str, name: str, ms: float, length: int = 0, error: Optional[str] = None) -> None:
        self.environment.events.request.fire(request_type=kind, name=name, response_time=ms,
                                             response_length=length, context={},
                                             exception=_Failure(error) if error else None)

    def _body(self, s: dict) -> tuple[str, dict]:
        prompt = synthetic_prompt(int(s["prompt_chars"]), self.rng)
        body = {"model": OpenAIUser._model, "max_tokens": s["max_tokens"], "stream": bool(s.get("stream")),
                **s.get("fast_dllm", {})}
        if body["stream"]:
            body["stream_options"] = {"include_usage": True}
        if s["endpoint"] == "chat":
            return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": prompt}]}
        return "/v1/completions", {**body, "prompt": prompt}

    @task
    def send(self) -> None:
        if self.max_requests:
            with TOTALS.lock:
                if TOTALS.issued >= self.max_requests:
                    raise StopUser()
                TOTALS.issued += 1
        s = self.rng.choices(self.scenarios, weights=[x.get("weight", 1) for x in self.scenarios])[0]
        kind = s["endpoint"] + ("-stream" if s.get("stream") else "")
        path, body = self._body(s)
        start = time.perf_counter()
        try:
            outcome = self._request(path, body, s["name"], start)
        except (requests.RequestException, ValueError) as exc:  # connection errors, broken JSON
            outcome = ("failed", f"{type(exc).__name__}: {exc}"[:200], 0)
        ms = (time.perf_counter() - start) * 1000
        status, detail, tokens = outcome
        with TOTALS.lock:
            if status == "ok":
                TOTALS.latencies_ms.append(ms)
                TOTALS.completion_tokens += tokens
            elif status == "refused":
                TOTALS.refusals[detail] = TOTALS.refusals.get(detail, 0) + 1
            else:
                TOTALS.failures[detail[:60]] = TOTALS.failures.get(detail[:60], 0) + 1
            done = len(TOTALS.latencies_ms) + sum(TOTALS.failures.values()) + sum(TOTALS.refusals.values())
        if status == "refused":
            self._fire("REFUSED", detail, ms)
        else:
            self._fire(kind, s["name"], ms, tokens, None if status == "ok" else detail)
        if self.max_requests and done == self.max_requests:
            gevent.spawn(self.environment.runner.quit)

    def _request(self, path: str, body: dict, name: str, start: float) -> tuple[str, str, int]:
        """(ok|refused|failed, detail, completion tokens) of one request."""
        with self.http.post(self.base + path, json=body, stream=body["stream"], timeout=self.timeout) as reply:
            if reply.status_code in REFUSAL_STATUSES and _error_code(reply) != "replica_failed":
                return "refused", str(reply.status_code), 0
            if reply.status_code != 200:
                return "failed", f"HTTP {reply.status_code}: {reply.text[:120]}", 0
            if not body["stream"]:
                answer = reply.json()
                return "ok", "", int(answer["usage"]["completion_tokens"])
            return self._read_stream(reply, name, start)

    def _read_stream(self, reply, name: str, start: float) -> tuple[str, str, int]:
        first_chunk, tokens, done = False, 0, False
        for line in reply.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                return "failed", f"stream error: {event['error'].get('message', '')[:120]}", 0
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
            # the first block's chunk (a chat stream opens with a role-only chunk sent before any work)
            choice = (event.get("choices") or [None])[0]
            is_block = choice is not None and not (choice.get("delta") or {}).get("role")
            if is_block and not first_chunk:
                first_chunk = True
                ms = (time.perf_counter() - start) * 1000
                self._fire("TTFC", name, ms)
                with TOTALS.lock:
                    TOTALS.ttfc_ms.append(ms)
        return ("ok", "", tokens) if done else ("failed", "stream ended without [DONE]", 0)


def _error_code(reply) -> Optional[str]:
    try:
        return reply.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
