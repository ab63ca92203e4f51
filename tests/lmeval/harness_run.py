"""Runs lm-eval on the local tiny_arith tasks in this process and reads back per-document
results, so the three paths (backend, accelerate, server) can be compared document by document."""

from __future__ import annotations

GEN_DOCS = 16  # generate_until problems every path runs (the first ones of the task)
MC_DOCS = 8  # multiple-choice problems (4 log-likelihoods each)
FAST = "use_cache=True,use_dual_cache=True,threshold=0.9,block_length=32"  # server field names
MC_ARGS = {"mc_num": 8, "mc_batch_size": 8}  # few samples: a CPU budget, still far above chance
# the least accuracy a path may show on these few documents: the shipped model answers 99% of
# held-out single questions at dual cache + threshold 0.9 (BENCHMARKS.md `eval`), and every one
# of the first 20 of this task
ANSWERS_BOUND = 0.95


def evaluate(model: str, model_args, tasks: list[str], limit: int, gen_kwargs: str | None = None,
             batch_size: int = 1) -> dict:
    """simple_evaluate over our task directory only (lm-eval's ~15k built-in tasks take tens of
    seconds to index), chat template on, samples logged. batch_size: the fastdllm backend's live
    sequences; lm-eval's API backends would send that many prompts per request (our server takes
    one: they run requests side by side with num_concurrent instead)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from fastdllm_ray.lmeval import TASKS_DIR

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=tasks, task_manager=manager,
                                   apply_chat_template=True, limit=limit, gen_kwargs=gen_kwargs, batch_size=batch_size,
                                   log_samples=True)


def answers(results: dict, task: str = "tiny_arith") -> dict[int, str]:
    """doc id -> the answer extracted by the task's filter (generate_until)."""
    return {s["doc_id"]: s["filtered_resps"][0] for s in results["samples"][task]}


def choices(results: dict, task: str = "tiny_arith_mc") -> dict[int, int]:
    """doc id -> the index of the highest-scoring choice (multiple choice)."""
    picked = {}
    for s in results["samples"][task]:
        scores = [r[0] for r in s["filtered_resps"]]
        picked[s["doc_id"]] = scores.index(max(scores))
    return picked


def accuracy(results: dict, task: str, docs: int) -> float:
    """The task's accuracy over its first `docs` documents, from logged samples."""
    from fastdllm_ray.lmeval.taskdata import rows

    expected = rows(docs)
    if task == "tiny_arith":
        got = answers(results, task)
        return sum(got[i] == str(row["value"]) for i, row in enumerate(expected)) / docs
    got = choices(results, task)
    return sum(got[i] == row["gold"] for i, row in enumerate(expected)) / docs
