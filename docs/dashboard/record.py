"""Makes docs/dashboard.png from a real run: `fastdllm-ray serve` (the shipped model, CPU,
autoscaling 1-2 replicas), a real Prometheus scraping its `GET /metrics` (the config in
prometheus.yml beside this file, with this run's port and a 5 s interval), traffic in phases,
then render.py draws every panel of k8s/grafana-dashboard.json from that Prometheus.

Traffic: `fastdllm-ray loadtest` (locust, loadtest/scenarios.yaml) with 4, then 40, then 4
users; all along, a client that sends a request with a bad field every 5 s and one that drops a
long stream after its first event every 10 s; then 2 minutes with no traffic.

Needs `prometheus` on the PATH (Debian: apt-get install prometheus). From the repository root:

    .venv/bin/python docs/dashboard/record.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import DASHBOARD, render  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent
PHASES = [(4, "3m"), (40, "4m"), (4, "3m")]  # (locust users, run time)
IDLE_S = 120
MODEL = "tiny-llada-arith"


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout_s} s")
        time.sleep(1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def misbehaving_clients(url: str, stop: threading.Event) -> None:
    """A bad field every 5 s (400, fate `invalid`) and a stream dropped after its first event
    every 10 s (fate `cancelled`)."""
    tick = 0
    while not stop.wait(5):
        tick += 1
        try:
            httpx.post(f"{url}/v1/completions", timeout=30, json={"model": MODEL, "prompt": "1+1=", "threshold": 2})
            if tick % 2 == 0:
                body = {"model": MODEL, "messages": [{"role": "user", "content": "12+30="}], "stream": True,
                        "max_tokens": 448, "block_length": 32, "steps": 448}
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as reply:
                    next(reply.iter_lines(), None)  # the first event, then hang up
        except httpx.HTTPError:
            pass  # overload refusals and timeouts are part of the picture, not a failure of the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=18000, help="API port of the server")
    parser.add_argument("--metrics-port", type=int, default=18080, help="Ray's metrics export port")
    parser.add_argument("--prometheus-port", type=int, default=19090)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    if shutil.which("prometheus") is None:
        raise SystemExit("prometheus is not on the PATH (Debian: apt-get install prometheus)")
    work = Path(tempfile.mkdtemp(prefix="fdr-dash-"))
    url, prometheus = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.prometheus_port}"
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="5s", scrape_timeout="5s")  # a finer picture of a short run
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{args.port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    processes: list[subprocess.Popen] = []
    log = (work / "run.log").open("w")
    try:
        processes.append(subprocess.Popen(
            [str(BIN / "fastdllm-ray"), "serve", "--port", str(args.port), "--metrics-port", str(args.metrics_port),
             "--min-replicas", "1", "--max-replicas", "2", "--max-num-seqs", "8", "--max-queue", "8",
             "--num-cpus", "4"], stdout=log, stderr=subprocess.STDOUT))
        processes.append(subprocess.Popen(
            ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{args.prometheus_port}"], stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: answers(f"{url}/health") and "Ctrl-C stops" in (work / "run.log").read_text(), 300,
                   "the server")
        wait_until(lambda: answers(f"{prometheus}/-/ready"), 60, "prometheus")
        start = time.time()
        stop = threading.Event()
        side = threading.Thread(target=misbehaving_clients, args=(url, stop), daemon=True)
        side.start()
        for phase, (users, run_time) in enumerate(PHASES):
            subprocess.run([str(BIN / "fastdllm-ray"), "loadtest", "--base-url", url, "--users", str(users),
                            "--run-time", run_time, "--out", str(work / f"locust-{phase}-{users}-users")],
                           stdout=log, stderr=subprocess.STDOUT, check=True)
        stop.set()
        side.join()
        time.sleep(IDLE_S)
        end = time.time()
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        print(json.dumps([{k: t[k] for k in ("scrapeUrl", "health", "lastError")} for t in targets]))
        render(json.loads(DASHBOARD.read_text()), prometheus, start - 60, end, 10.0, args.out)
        print(f"wrote {args.out} from --start {start - 60:.0f} --end {end:.0f}; Prometheus data, logs and locust "
              f"reports in {work} (render again: prometheus --storage.tsdb.path={work / 'tsdb'} ..., then render.py)")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


if __name__ == "__main__":
    main()
