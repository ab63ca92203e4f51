"""The merge behind `GET /metrics`: several Ray nodes' Prometheus texts (written by
prometheus_client, as Ray's exporters write theirs) become one valid exposition of the app's
families, each family once, every node's samples under it, and a line per exporter saying
whether it was merged. The served endpoint is tested against real clusters in
test_cli_serve_metrics.py and test_metrics_every_node.py."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastdllm_ray.serve.metrics_proxy import EXPORTER_UP, exporter_address, merge_exporters


def node_text(node: str, worker: str, nfe: float, hit_rate: float) -> str:
    """One node's exporter text: two app families, a Serve family, and Ray system series."""
    registry = CollectorRegistry()
    labels = {"NodeAddress": node, "WorkerId": worker, "model": "m"}
    Counter("ray_fastdllm_nfe", "forward evaluations", list(labels), registry=registry).labels(**labels).inc(nfe)
    Gauge("ray_fastdllm_cache_hit_rate", "cached / attended", list(labels), registry=registry).labels(**labels).set(
        hit_rate)
    Histogram("ray_serve_http_request_latency_ms", "latency", list(labels), buckets=(1, 10),
              registry=registry).labels(**labels).observe(5)
    Gauge("ray_node_cpu_utilization", "cpu", ["NodeAddress"], registry=registry).labels(NodeAddress=node).set(50)
    return generate_latest(registry).decode()


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_nodes_app_samples_are_merged_under_one_family_each():
    merged = merge_exporters({"10.0.0.1:8080": node_text("10.0.0.1", "w1", 3, 0.5),
                              "10.0.0.2:8080": node_text("10.0.0.2", "w2", 4, 0.25)}).decode()
    types = Tally(line.split()[2] for line in merged.splitlines() if line.startswith("# TYPE"))
    assert all(count == 1 for count in types.values()), types  # the text format allows a family once
    found = families(merged)
    nfe = {s.labels["WorkerId"]: s.value for s in found["ray_fastdllm_nfe"].samples if s.name.endswith("_total")}
    assert nfe == {"w1": 3, "w2": 4}
    assert {s.labels["WorkerId"]: s.value for s in found["ray_fastdllm_cache_hit_rate"].samples} == {"w1": 0.5,
                                                                                                    "w2": 0.25}
    counts = [s for s in found["ray_serve_http_request_latency_ms"].samples if s.name.endswith("_count")]
    assert sorted(s.labels["WorkerId"] for s in counts) == ["w1", "w2"]
    assert found["ray_serve_http_request_latency_ms"].type == "histogram"


def test_only_the_apps_families_are_kept():
    found = families(merge_exporters({"10.0.0.1:8080": node_text("10.0.0.1", "w1", 1, 0.5)}).decode())
    assert "ray_node_cpu_utilization" not in found and "python_gc_objects_collected" not in found
    kept = {name for name in found if not name.endswith("_created")}  # prometheus_client's own, Ray has none
    assert kept == {"ray_fastdllm_nfe", "ray_fastdllm_cache_hit_rate", "ray_serve_http_request_latency_ms",
                          EXPORTER_UP}


def test_an_exporter_that_did_not_answer_or_sent_garbage_shows_as_down_and_the_rest_goes_out():
    merged = merge_exporters({"10.0.0.1:8080": node_text("10.0.0.1", "w1", 3, 0.5), "10.0.0.2:8080": None,
                              "10.0.0.3:8080": "ray_fastdllm_nfe_total{WorkerId=\"w3\" 7\n"}).decode()
    found = families(merged)
    assert {s.labels["exporter"]: s.value for s in found[EXPORTER_UP].samples} == {
        "10.0.0.1:8080": 1, "10.0.0.2:8080": 0, "10.0.0.3:8080": 0}
    assert [s.labels["WorkerId"] for s in found["ray_fastdllm_nfe"].samples if s.name.endswith("_total")] == ["w1"]


def test_a_series_seen_twice_is_sent_once():
    text = node_text("10.0.0.1", "w1", 3, 0.5)
    found = families(merge_exporters({"10.0.0.1:8080": text, "10.0.0.1:8081": text}).decode())
    assert len([s for s in found["ray_fastdllm_nfe"].samples if s.name.endswith("_total")]) == 1


def test_exporter_addresses_are_those_of_live_nodes_with_a_port():
    node = {"Alive": True, "NodeManagerAddress": "10.0.0.1", "MetricsExportPort": 8080}
    assert exporter_address(node) == "10.0.0.1:8080"
    assert exporter_address({**node, "NodeManagerAddress": "fd00::1"}) == "[fd00::1]:8080"
    assert exporter_address({**node, "Alive": False}) is None
    assert exporter_address({**node, "MetricsExportPort": -1}) is None  # metrics collection off
