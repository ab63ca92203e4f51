"""lm-evaluation-harness integration: the `fastdllm` model backend (backend.py), its settings,
engine-driven generation with stop strings, LLaDA's Monte Carlo log-likelihood, accelerate data
parallelism, and a small local task made from the shipped model's held-out problems.

Importing this package does not import lm_eval; `fastdllm_ray.lmeval.backend` does.
"""

from pathlib import Path

MODEL_NAME = "fastdllm"  # what `lm_eval --model` takes (registered by fastdllm_ray_lmeval_hook)
TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # for lm-eval's --include_path
LOCAL_TASKS = ("tiny_arith", "tiny_arith_mc")

__all__ = ["LOCAL_TASKS", "MODEL_NAME", "TASKS_DIR"]
