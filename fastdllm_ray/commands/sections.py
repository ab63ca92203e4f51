"""Sections of a shared markdown file (BENCHMARKS.md) that a command (`eval --benchmarks`, `loadtest`)
or a benchmark script rewrites on its own."""

from __future__ import annotations

from pathlib import Path


def update_section(path: Path, name: str, body: str) -> None:
    """Replaces the text between <!-- BEGIN name --> and <!-- END name --> (appends if absent),
    leaving every other section as it is."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
