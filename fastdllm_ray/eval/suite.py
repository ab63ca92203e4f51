"""An evaluation over many decoding configurations, and the two figures the project
promises about them (baseline accuracy; dual cache + threshold against it)."""

from __future__ import annotations

from collections.abc import Callable

from fastdllm_ray.eval.configs import DecodingConfig
from fastdllm_ray.eval.run import ConfigResult
from fastdllm_ray.train.data import Problem

Runner = Callable[[list[Problem], DecodingConfig, object], ConfigResult]


def evaluate(problems: list[Problem], configs: list[DecodingConfig], runner: Runner,
             show_progress: bool = True) -> list[ConfigResult]:
    """Runs every configuration over every problem, with one progress bar for all of them."""
    from tqdm import tqdm

    results = []
    with tqdm(total=len(problems) * len(configs), unit="problem", disable=not show_progress,
              dynamic_ncols=True) as bar:
        for config in configs:
            bar.set_description(config.name)
            results.append(runner(problems, config, bar))
    return results


def find(results: list[ConfigResult], cache: str, schedule: str, block_length: int) -> ConfigResult | None:
    for r in results:
        if (r.config.cache, r.config.schedule, r.config.block_length) == (cache, schedule, block_length):
            return r
    return None


def headline(results: list[ConfigResult], block_length: int = 32) -> list[str]:
    """The baseline (no cache, one token per step) and dual cache + threshold 0.9 beside it."""
    lines = []
    if results and results[0].config.v2:  # Fast-dLLM v2: each threshold, without the block cache
        return [f"{r.config.rule} (block {r.config.block_length}): accuracy {100 * r.accuracy:.1f}% over "
                f"{r.num_problems} problems, mean NFE {r.mean_nfe:.1f}, {r.tokens_per_forward:.2f} tokens/forward"
                for r in results if not r.config.block_cache]
    base = find(results, "none", "fixed", block_length)
    fast = find(results, "dual", "threshold", block_length)
    if base is not None:
        lines.append(f"baseline (no cache, {base.config.rule}, block {block_length}): "
                     f"accuracy {100 * base.accuracy:.1f}% over {base.num_problems} problems, "
                     f"mean NFE {base.mean_nfe:.1f}")
    if base is not None and fast is not None and fast.nfe:
        lines.append(f"dual cache + {fast.config.rule} (block {block_length}): "
                     f"accuracy {100 * fast.accuracy:.1f}% "
                     f"({100 * (fast.accuracy - base.accuracy):+.1f} points), mean NFE {fast.mean_nfe:.1f} "
                     f"({base.nfe / fast.nfe:.1f}x fewer forwards)")
    return lines
