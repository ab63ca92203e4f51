"""Accuracy against speed of decoding configurations on held-out arithmetic chat problems."""

from fastdllm_ray.eval.configs import DecodingConfig, grid
from fastdllm_ray.eval.run import ConfigResult, extract_answer, run_engine, run_server
from fastdllm_ray.eval.suite import evaluate, headline

__all__ = ["ConfigResult", "DecodingConfig", "evaluate", "extract_answer", "grid", "headline", "run_engine",
           "run_server"]
