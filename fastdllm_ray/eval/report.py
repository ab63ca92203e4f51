"""An evaluation's outputs: a text table, a Markdown table (for BENCHMARKS.md), a CSV and a
PNG of accuracy against NFE."""

from __future__ import annotations

import csv
from pathlib import Path

from fastdllm_ray.eval.run import ConfigResult

COLUMNS = ("cache", "schedule", "block", "accuracy %", "mean NFE", "tokens/forward", "tokens/s", "seconds")


def rows(results: list[ConfigResult]) -> list[list[str]]:
    return [[r.config.cache, r.config.name.split(", ")[1], str(r.config.block_length),
             f"{100 * r.accuracy:.1f}", f"{r.mean_nfe:.1f}", f"{r.tokens_per_forward:.2f}",
             f"{r.tokens_per_second:.0f}", f"{r.seconds:.1f}"] for r in results]


def text_table(results: list[ConfigResult]) -> str:
    table = [list(COLUMNS)] + rows(results)
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table)


def markdown_table(results: list[ConfigResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)


def write_csv(results: list[ConfigResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cache", "schedule", "block_length", "gen_length", "num_problems", "correct",
                         "accuracy", "mean_nfe", "tokens_per_forward", "tokens_per_second", "seconds"])
        for r in results:
            writer.writerow([r.config.cache, r.config.schedule, r.config.block_length, r.config.gen_length,
                             r.num_problems, r.correct, f"{r.accuracy:.4f}", f"{r.mean_nfe:.2f}",
                             f"{r.tokens_per_forward:.3f}", f"{r.tokens_per_second:.1f}", f"{r.seconds:.2f}"])


def write_plot(results: list[ConfigResult], path: Path, title: str) -> None:
    """Accuracy against mean NFE: marker = cache mode, colour = commit rule."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    markers = {"none": "o", "prefix": "s", "dual": "^"}
    colours = {"fixed": "tab:blue", "threshold": "tab:orange", "factor": "tab:green"}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in results:
        ax.scatter(r.mean_nfe, 100 * r.accuracy, marker=markers[r.config.cache],
                   color=colours[r.config.schedule], s=60, alpha=0.85)
        ax.annotate(str(r.config.block_length), (r.mean_nfe, 100 * r.accuracy), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    for cache, marker in markers.items():
        ax.scatter([], [], marker=marker, color="grey", label=f"{cache} cache")
    for schedule, colour in colours.items():
        ax.scatter([], [], marker="o", color=colour, label=schedule)
    ax.set_xlabel("mean forwards per problem (NFE)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
