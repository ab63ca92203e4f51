"""The scale-out results (benchmarks/scaleout.py --results FILE) as a BENCHMARKS.md table and a
plot, judged against issue 15: 2 replicas >= 1.8x the tokens/s of 1 with p50 latency no worse;
N replicas >= 0.9 N. Runs where the results are (the plot needs matplotlib, which the GPU image
lacks), so the GPU runs write only the JSON and the table:

    PYTHONPATH=. .venv/bin/python benchmarks/scaleout_report.py scaleout.json --out BENCHMARKS.md \
        --plot benchmarks/scaleout.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.serving import pct
from fastdllm_ray.commands.sections import update_section

SECTION = "scaleout-replicas"


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def tokens_per_s(run: dict) -> float:
    return run["tokens"] / run["seconds"]


def verdict(runs: dict[int, dict]) -> list[str]:
    """One line per replica count measured next to 1 replica: speed-up, efficiency, the target."""
    if 1 not in runs:
        return []
    base, base_p50 = tokens_per_s(runs[1]), pct(runs[1]["latencies"], .5)
    lines = []
    for n in sorted(r for r in runs if r > 1):
        speedup, p50 = tokens_per_s(runs[n]) / base, pct(runs[n]["latencies"], .5)
        if n == 2:
            target, met = ">= 1.8x and p50 no worse", speedup >= 1.8 and p50 <= base_p50
        else:
            target, met = f">= {0.9 * n:.1f}x (0.9 N)", speedup >= 0.9 * n
        lines.append(f"{n} replicas / 1: {speedup:.2f}x tokens/s ({speedup / n:.0%} of linear), p50 "
                     f"{p50:.2f} s vs {base_p50:.2f} s; issue 15 asks {target}: {'met' if met else 'NOT met'}.")
    return lines


def table(results: dict) -> str:
    runs = {int(n): run for n, run in results["runs"].items()}
    lines = [results.get("description", ""), "",
             "| replicas | concurrency | requests ok | seconds | req/s | tokens/s | x 1 replica | latency p50 (s) "
             "| latency p95 (s) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = tokens_per_s(runs[1]) if 1 in runs else None
    for n in sorted(runs):
        run = runs[n]
        speedup = f"{tokens_per_s(run) / base:.2f}" if base else "-"
        lines.append(f"| {n} | {run['concurrency']} | {run['ok']}/{run['requests']} | {run['seconds']:.1f} | "
                     f"{run['ok'] / run['seconds']:.2f} | {tokens_per_s(run):.1f} | {speedup} | "
                     f"{pct(run['latencies'], .5):.2f} | {pct(run['latencies'], .95):.2f} |")
    commands = results.get("commands", [])
    return "\n".join(lines + [""] + verdict(runs) + [""] + [f"`{c}`" for c in commands]) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {int(n): run for n, run in results["runs"].items()}
    counts = sorted(runs)
    fig, speed = plt.subplots(figsize=(6, 4))
    speed.plot(counts, [tokens_per_s(runs[n]) for n in counts], "o-", label="tokens/s (all replicas)")
    if 1 in runs:
        speed.plot(counts, [n * tokens_per_s(runs[1]) for n in counts], "--", color="grey", label="linear")
    speed.set_xlabel("engine replicas (one GPU each)")
    speed.set_ylabel("generated tokens / s")
    speed.set_xticks(counts)
    latency = speed.twinx()
    latency.plot(counts, [pct(runs[n]["latencies"], .5) for n in counts], "s:", color="tab:red", label="p50 latency")
    latency.set_ylabel("p50 latency (s)")
    handles = speed.get_legend_handles_labels()[0] + latency.get_legend_handles_labels()[0]
    speed.legend(handles, [h.get_label() for h in handles], loc="upper left")
    speed.set_title("Ray Serve app: scale-out over replicas")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_section(results: dict, benchmarks_md: Path, title: str) -> None:
    update_section(benchmarks_md, SECTION, f"## {title}\n\n" + table(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="the JSON that benchmarks/scaleout.py --results wrote")
    ap.add_argument("--out", type=Path, help="BENCHMARKS.md to write the `scaleout-replicas` section into")
    ap.add_argument("--title", default="Scale-out: the Serve app over replicas (GPU)")
    ap.add_argument("--plot", type=Path, help="PNG of tokens/s and p50 latency over replicas")
    args = ap.parse_args()
    results = load(args.results)
    print(table(results))
    if args.out:
        write_section(results, args.out, args.title)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
