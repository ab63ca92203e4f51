"""`fastdllm-ray loadtest`: runs locust headless (loadtest/locustfile.py) against a running
server for a duration or a number of requests, and writes its CSV tables, HTML report and a
summary.json (RPS, latency and time-to-first-chunk percentiles, tokens/s, failures,
refusals) into --out; --benchmarks also writes the `loadtest` section of BENCHMARKS.md.

Locust runs as a child process: its gevent monkey-patching must not reach this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO_LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"
SECTION = "loadtest"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("loadtest", help="load-test a running server with locust (headless)",
                                   description=__doc__)
    parser.add_argument("--base-url", required=True, help="server root, e.g. http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--spawn-rate", type=float, help="clients started per second (default: all at once)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--run-time", default=None, help="duration, e.g. 60s or 5m (default 60s)")
    length.add_argument("--requests", type=int, help="stop after this many answers instead of a duration")
    parser.add_argument("--out", required=True, type=Path, help="report directory")
    parser.add_argument("--scenarios", type=Path, default=REPO_LOADTEST / "scenarios.yaml")
    parser.add_argument("--locustfile", type=Path, default=REPO_LOADTEST / "locustfile.py")
    parser.add_argument("--api-key", help="bearer key (default $FASTDLLM_API_KEY)")
    parser.add_argument("--model", help="model name to send (default: the server's first model)")
    parser.add_argument("--stop-timeout", type=int, default=60,
                        help="seconds the requests in flight at the end of --run-time get to finish")
    parser.add_argument("--benchmarks", type=Path, help="also write the `loadtest` section of this BENCHMARKS.md")
    parser.add_argument("--note", default="", help="a line for that section: how the server was started")
    parser.set_defaults(func=run)


def locust_command(args: argparse.Namespace) -> list[str]:
    """The headless locust command line the flags describe (also what loadtest/README shows)."""
    out: Path = args.out
    cmd = [sys.executable, "-m", "locust", "-f", str(args.locustfile), "--headless", "--only-summary",
           "-H", args.base_url, "-u", str(args.users), "-r", str(args.spawn_rate or args.users),
           "--csv", str(out / "locust"), "--html", str(out / "report.html"),
           "--summary-json", str(out / "summary.json"), "--scenarios", str(args.scenarios),
           "--stop-timeout", str(args.stop_timeout), "--loglevel", "WARNING"]
    if args.requests:
        cmd += ["--max-requests", str(args.requests)]
    else:
        cmd += ["--run-time", args.run_time or "60s"]
    if args.model:
        cmd += ["--model", args.model]
    return cmd


def markdown(summary: dict, args: argparse.Namespace, command: str) -> str:
    def ms(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.0f}"

    refusals = summary["refused"]
    load = os.getloadavg()[0]  # the client shares the machine with the server: say how busy it was
    return "\n".join([
        "## Load test (locust, headless)",
        "",
        f"`{command}` against `{args.base_url}`; {args.users} concurrent clients, scenario mix "
        f"`{Path(args.scenarios).name}` (loadtest/README.md says how to read the report). "
        f"Machine: {os.cpu_count()} CPUs, 1-minute load average {load:.1f} at the end of the run.",
        *([f"Server: {args.note}"] if args.note else []),
        "",
        "| duration s | answers | RPS | p50 ms | p95 ms | TTFC p50 ms | TTFC p95 ms | tokens/s | failed | refused |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {summary['duration_s']:.0f} | {summary['accepted_ok']} | {summary['rps']:.2f} | "
        f"{ms(summary['latency_p50_ms'])} | {ms(summary['latency_p95_ms'])} | {ms(summary['ttfc_p50_ms'])} | "
        f"{ms(summary['ttfc_p95_ms'])} | {summary['tokens_per_s']:.1f} | {summary['failed']} | {refusals} |",
    ])


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.api_key:  # through the environment, so the key never shows in a process list
        env["FASTDLLM_API_KEY"] = args.api_key
    cmd = locust_command(args)
    print("running:", " ".join(cmd[1:]), flush=True)
    code = subprocess.run(cmd, env=env).returncode
    summary_path = args.out / "summary.json"
    if not summary_path.exists():
        print(f"locust exited with {code} and wrote no summary", file=sys.stderr)
        return code or 1
    summary = json.loads(summary_path.read_text())
    print(json.dumps(summary, indent=2))
    print(f"report: {args.out / 'report.html'}, tables: {args.out}/locust_*.csv")
    if args.benchmarks:
        from fastdllm_ray.commands.sections import update_section

        shown = (f"fastdllm-ray loadtest --base-url URL --users {args.users} "
                 + (f"--requests {args.requests}" if args.requests else f"--run-time {args.run_time or '60s'}")
                 + f" --out {args.out}")
        update_section(args.benchmarks, SECTION, markdown(summary, args, shown))
    # locust exits 1 when any request failed: the same meaning here
    return code
