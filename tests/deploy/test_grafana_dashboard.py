"""Every query of k8s/grafana-dashboard.json names only metrics that a running app exports
(names scraped from the Prometheus endpoint of `serve run deployments/tiny-cpu.yaml`). The prefix
cache's counters advance only on models that share prefixes, and Ray exports a counter from its
first increment: the tiny LLaDA app never shows them, so tests/scaleout/test_prefix_routing.py
checks them against Fast-dLLM v2 replicas."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "k8s" / "grafana-dashboard.json").read_text())
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan"}
SCRAPE_DEADLINE_S = 45
# counters only block-diffusion replicas (the engine's `sharing`) ever increment
SHARING_ONLY = {"ray_fastdllm_cached_prompt_tokens_total", "ray_fastdllm_prefix_cache_evictions_total",
                "ray_fastdllm_prefill_forwards_saved_total"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (in `{...}`, `by (...)`, `on (...)`) or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # dashboard variables
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[match.end():].lstrip()
        if following.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    queries = [(panel["title"], target["expr"]) for panel in DASHBOARD["panels"]
               for target in panel["targets"]]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            queries.append((f"variable ${variable['name']}", inner.group(1)))
    return queries


def scraped_names(metrics_url: str) -> set[str]:
    text = httpx.get(metrics_url, timeout=10).text
    return {re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group()
            for line in text.splitlines() if line and not line.startswith("#")}


def test_metric_names_skips_functions_labels_and_variables():
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(ray_fastdllm_request_latency_seconds_bucket'
            '{model=~"$model", code=~"5.."}[5m]))) / on (model) group_left sum(ray_x_total offset 5m)')
    assert metric_names(expr) == {"ray_fastdllm_request_latency_seconds_bucket", "ray_x_total"}


def test_dashboard_has_the_panels_operators_need():
    titles = " | ".join(panel["title"].lower() for panel in DASHBOARD["panels"])
    for topic in ("tokens / s", "latency", "tokens per forward", "cache hit rate", "batch size",
                  "queue length", "replicas", "request fates", "prefix cache hit rate", "evictions"):
        assert topic in titles
    for where, expr in dashboard_queries():
        assert metric_names(expr), f"{where}: no metric in {expr!r}"


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_dashboard_queries_name_only_exported_metrics(tiny_cpu_app):
    # traffic that touches every metric: a finished chat, a streamed completion, a 4xx
    for body, route in [
        ({"messages": [{"role": "user", "content": "3+4="}], "max_tokens": 16}, "chat/completions"),
        ({"prompt": "5+5=", "max_tokens": 16, "stream": True}, "completions"),
        ({"messages": [], "max_tokens": 16}, "chat/completions"),
    ]:
        httpx.post(f"{tiny_cpu_app.base_url}/v1/{route}", timeout=60,
                   json={"model": tiny_cpu_app.model_name, **body})
    wanted = set().union(*(metric_names(expr) for _, expr in dashboard_queries())) - SHARING_ONLY
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    while True:  # Ray's agent forwards a replica's records every few seconds
        exported = scraped_names(tiny_cpu_app.metrics_url)
        if wanted <= exported or time.monotonic() > deadline:
            break
        time.sleep(2)
    missing = {where: sorted(metric_names(expr) - exported - SHARING_ONLY) for where, expr in dashboard_queries()
               if metric_names(expr) - exported - SHARING_ONLY}
    assert not missing, f"dashboard queries name metrics the app does not export: {missing}"
