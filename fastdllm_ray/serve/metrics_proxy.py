"""`GET /metrics` on the API port: the app's Prometheus series from every node of the Ray cluster,
so that one scrape target serves a single machine and a cluster alike.

Ray exports metrics per node: each node's metrics agent serves the series recorded by the
processes on that node at <node address>:<metrics export port>. Ray's dashboard lists those
exporters for Prometheus in the service-discovery file it writes on the head node
(`prom_metrics_service_discovery.json` in the session dir). We read the list where Ray builds it
from, the GCS's table of live nodes (`ray.nodes()`): the file exists only on the head and only
with the dashboard, and the ingress may run on any node.

Each scrape fetches every exporter at once, keeps the families named `ray_fastdllm_*` and
`ray_serve_*`, and writes them out merged: each family once (the text format allows a family's
HELP and TYPE once), with the samples of every node under it. Merging never makes two samples
one series: each carries the `WorkerId` and `NodeAddress` of the process that recorded it (a
repeat would be dropped, not sent twice). An exporter that does not answer within
`EXPORTER_TIMEOUT_S` is left out of that scrape and shows as
`fastdllm_metrics_exporter_up{exporter="host:port"} 0` (1 for each one merged), so a partial
answer is visible rather than silent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable, Optional

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response

APP_METRIC_PREFIXES = ("ray_fastdllm_", "ray_serve_")
EXPORTER_UP = "fastdllm_metrics_exporter_up"
# below Prometheus' default scrape_timeout (10 s): a slow node must not fail the whole scrape
EXPORTER_TIMEOUT_S = 5.0

logger = logging.getLogger("ray.serve")


def exporter_address(node: dict) -> Optional[str]:
    """`host:port` of a node's metrics exporter, as Ray's service-discovery file writes it
    (None for a dead node or one with metrics collection off)."""
    port = node.get("MetricsExportPort") or 0
    if not node.get("Alive") or port <= 0:
        return None
    host = node["NodeManagerAddress"]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def exporter_addresses() -> list[str]:
    """Every live node's metrics exporter (a GCS call: run it off the event loop)."""
    import ray

    return sorted({address for node in ray.nodes() if (address := exporter_address(node))})


def _family_of(line: str) -> str:
    if line.startswith("#"):
        parts = line.split(maxsplit=3)
        return parts[2] if len(parts) > 2 and parts[1] in ("HELP", "TYPE", "UNIT") else ""
    return line.split("{", 1)[0].split(" ", 1)[0]


def app_lines(text: str) -> str:
    """The lines of the app's families only: an exporter's text is mostly Ray's own system
    series (~700 KB a node), and parsing only what we keep costs a tenth."""
    return "\n".join(line for line in text.splitlines() if _family_of(line).startswith(APP_METRIC_PREFIXES)) + "\n"


class _Families:
    """A prometheus_client collector over families already built (what generate_latest reads)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge_exporters(texts: dict[str, Optional[str]]) -> bytes:
    """The app's families of every exporter's text (address -> text, None when it did not
    answer) as one Prometheus text exposition, plus one `fastdllm_metrics_exporter_up` each."""
    families: dict[str, Metric] = {}
    seen: set[tuple] = set()
    up = GaugeMetricFamily(EXPORTER_UP, "1 if this Ray node's metrics exporter was merged into this scrape, "
                                        "0 if it did not answer", labels=["exporter"])
    for address, text in texts.items():
        parsed: list[Metric] = []
        if text is not None:
            try:
                parsed = list(text_string_to_metric_families(app_lines(text)))
            except ValueError:  # a malformed answer counts as no answer; the others still go out
                logger.warning("metrics exporter %s sent text that does not parse", address)
                text = None
        up.add_metric([address], 0 if text is None else 1)
        for family in parsed:
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                             family.unit))
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in seen:
                    seen.add(key)
                    merged.samples.append(sample)
    return generate_latest(_Families([*families.values(), up]))


async def _fetch(session, address: str) -> Optional[str]:
    try:
        async with session.get(f"http://{address}/metrics") as reply:
            if reply.status == 200:
                return await reply.text()
            logger.warning("metrics exporter %s answered HTTP %d", address, reply.status)
    except Exception as exc:  # down, restarting, unreachable: the scrape goes on without it
        logger.warning("metrics exporter %s did not answer (%s)", address, type(exc).__name__)
    return None


async def scrape_app_metrics() -> bytes:
    """Fetches every node's exporter concurrently and merges the app's series."""
    import aiohttp  # a dependency of ray[serve]

    addresses = await asyncio.to_thread(exporter_addresses)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=EXPORTER_TIMEOUT_S)) as session:
        texts = await asyncio.gather(*(_fetch(session, address) for address in addresses))
    return await asyncio.to_thread(merge_exporters, dict(zip(addresses, texts)))


async def metrics_response() -> Response:
    """The body of `GET /metrics`, in the text format every Prometheus reads (0.0.4)."""
    return Response(await scrape_app_metrics(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
