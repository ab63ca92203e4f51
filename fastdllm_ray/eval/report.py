"""An evaluation's outputs: a text table, a Markdown table (for BENCHMARKS.md), a CSV and a
PNG of accuracy against NFE."""

from __future__ import annotations

import csv
from pathlib import Path

from fastdllm_ray.eval.run import ConfigResult

COLUMNS = ("cache", "schedule", "block", "accuracy %", "mean NFE", "tokens/forward", "tokens/s", "seconds")
TURN_COLUMNS = COLUMNS[:3] + ("turn", "conversations") + COLUMNS[3:]

Turn = tuple[int, ConfigResult]  # (turn number, its result)


def flatten(turn_results: list[list[ConfigResult]]) -> list[Turn]:
    """Per-configuration lists of per-turn results as (turn, result) rows."""
    return [(i + 1, r) for per_turn in turn_results for i, r in enumerate(per_turn)]


def _row(r: ConfigResult, turn: int | None = None) -> list[str]:
    head = [r.config.cache, r.config.rule, str(r.config.block_length)]
    if turn is not None:
        head += [str(turn), str(r.num_problems)]
    return head + [f"{100 * r.accuracy:.1f}", f"{r.mean_nfe:.1f}", f"{r.tokens_per_forward:.2f}",
                   f"{r.tokens_per_second:.0f}", f"{r.seconds:.1f}"]


def rows(results: list[ConfigResult] | list[Turn], turns: bool = False) -> list[list[str]]:
    return [_row(item[1], item[0]) if turns else _row(item) for item in results]


def text_table(results: list[ConfigResult] | list[Turn], turns: bool = False) -> str:
    columns = TURN_COLUMNS if turns else COLUMNS
    table = [list(columns)] + rows(results, turns)
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table)


def markdown_table(results: list[ConfigResult] | list[Turn], turns: bool = False) -> str:
    columns = TURN_COLUMNS if turns else COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results, turns)]
    return "\n".join(lines)


def write_csv(results: list[ConfigResult] | list[Turn], path: Path, turns: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cache", "schedule", "alg", "block_length", "gen_length"] + (["turn"] if turns else [])
                        + ["num_problems", "correct", "accuracy", "mean_nfe", "tokens_per_forward",
                           "tokens_per_second", "seconds"])
        for item in results:
            turn, r = item if turns else (None, item)
            writer.writerow([r.config.cache, r.config.schedule, r.config.alg or "", r.config.block_length,
                             r.config.gen_length] + ([turn] if turns else [])
                            + [r.num_problems, r.correct, f"{r.accuracy:.4f}", f"{r.mean_nfe:.2f}",
                               f"{r.tokens_per_forward:.3f}", f"{r.tokens_per_second:.1f}", f"{r.seconds:.2f}"])


def benchmarks_section(command: str, day: str, title: str, summary: list[str], results: list[ConfigResult],
                       turn_results: list[list[ConfigResult]], num_chats: int, num_turns: int) -> str:
    """The BENCHMARKS.md section of an evaluation: the command, the headline, the
    single-question table and, with conversations, their per-turn rows."""
    first = results[0].config if results else None
    model, suffix = (("Dream", "-dream") if first and first.alg else ("Fast-dLLM v2", "-v2") if first and first.v2
                     else ("LLaDA", ""))
    lines = [f"## eval{suffix}: accuracy against speed of the decoding configurations ({model})", "",
             f"`{command}` ({day}): {title}; answers of up to 64 tokens; tokens/forward counts committed tokens "
             "per sequence-forward, tokens/s the answer tokens (cut at the end token) per second of wall time.", "",
             *[f"- {line}" for line in summary], "", "Single questions (every task):", "", markdown_table(results)]
    if turn_results:
        lines += ["", f"Conversations ({num_chats} held-out, {num_turns} turns; problems and phrasings never in "
                  "training): turn k is asked with the model's own earlier answers in the history and scored "
                  "against the conversation's arithmetic.", "", markdown_table(flatten(turn_results), turns=True)]
    return "\n".join(lines)


def write_plot(results: list[ConfigResult], path: Path, title: str) -> None:
    """Accuracy against mean NFE: marker = cache mode, colour = commit rule."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    markers = {"none": "o", "prefix": "s", "dual": "^", "block": "D"}
    colours = {"fixed": "tab:blue", "threshold": "tab:orange", "factor": "tab:green"}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in results:
        ax.scatter(r.mean_nfe, 100 * r.accuracy, marker=markers[r.config.cache],
                   color=colours[r.config.schedule], s=60, alpha=0.85)
        ax.annotate(str(r.config.block_length), (r.mean_nfe, 100 * r.accuracy), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    for cache, marker in markers.items():
        if any(r.config.cache == cache for r in results):
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
