"""The local lm-eval tasks' data: held-out problems of the shipped model (the same ones, in the
same order, as `fastdllm-ray eval`), each with its worked answer, its value, and, for the
multiple-choice variant, three wrong worked answers beside the right one.

    python -m fastdllm_ray.lmeval.taskdata   # rewrites tasks/tiny_arith/tiny_arith.jsonl
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastdllm_ray.lmeval import TASKS_DIR
from fastdllm_ray.train.data import Problem, problems

DATA_FILE = TASKS_DIR / "tiny_arith" / "tiny_arith.jsonl"
NUM_PROBLEMS = 200
SEED = 1234  # `fastdllm-ray eval`'s default held-out seed: the first N problems are the same


def wrong_values(value: int) -> list[int]:
    """Three near misses: what an arithmetic slip would give."""
    return [value + 1, value - 1 if value > 0 else value + 2, value + 10]


def with_value(problem: Problem, wrong: int) -> str:
    """The worked answer with its result (last step and final sentence) changed to `wrong`."""
    right = f"The answer is {problem.value}."
    steps = problem.answer[: -len(right)]
    head, sep, tail = steps.rpartition(f"{problem.value}.")
    steps = head + f"{wrong}." + tail if sep else steps
    return steps + f"The answer is {wrong}."


def row(problem: Problem) -> dict:
    choices = [problem.answer] + [with_value(problem, v) for v in wrong_values(problem.value)]
    # the right answer's place follows from the question, so it is fixed but not always first
    gold = int.from_bytes(hashlib.sha1(problem.question.encode()).digest()[:2], "big") % len(choices)
    choices[0], choices[gold] = choices[gold], choices[0]
    return {"question": problem.question, "answer": problem.answer, "value": problem.value, "task": problem.task,
            "choices": choices, "gold": gold}


def rows(count: int = NUM_PROBLEMS, seed: int = SEED) -> list[dict]:
    return [row(p) for p in problems(count, seed, "eval")]


def write(path: Path = DATA_FILE) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()))


if __name__ == "__main__":
    write()
    print(f"wrote {DATA_FILE}")
