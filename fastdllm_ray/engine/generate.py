"""generate(): many prompts, each with its own parameters, through one batched engine."""

from __future__ import annotations

from collections.abc import Sequence as Seq

from fastdllm_ray.engine.engine import Engine, EngineConfig, as_token_ids
from fastdllm_ray.engine.outputs import GenerationResult
from fastdllm_ray.model import LLaDAModel
from fastdllm_ray.params import GenerationParams


def generate(
    model: LLaDAModel,
    prompts: Seq[Seq[int]],
    params: GenerationParams | Seq[GenerationParams] | None = None,
    max_batch_size: int = 64,
    seed: int = 0,
) -> list[GenerationResult]:
    """Decodes every prompt (token ids); returns one result per prompt, in order.

    `params` is one GenerationParams for all prompts or one per prompt. Prompts run as one
    continuous batch of at most `max_batch_size` live sequences.
    """
    prompts = [as_token_ids(p) for p in prompts]
    if params is None:
        params = GenerationParams()
    per_prompt = [params] * len(prompts) if isinstance(params, GenerationParams) else list(params)
    if len(per_prompt) != len(prompts):
        raise ValueError(f"params: {len(per_prompt)} given for {len(prompts)} prompts")
    if not prompts:
        return []
    if not all(isinstance(p, GenerationParams) for p in per_prompt):
        raise ValueError("params: must be GenerationParams, one for all prompts or one per prompt")
    longest = max(len(p) + q.padded_gen_length for p, q in zip(prompts, per_prompt))
    config = EngineConfig(
        max_num_seqs=max(1, min(max_batch_size, len(prompts))),
        max_model_len=min(longest, model.config.max_sequence_length),
        max_queue=len(prompts),
        seed=seed,
    )
    engine = Engine(model, config)
    for prompt, p in zip(prompts, per_prompt):  # every prompt checked before any runs
        engine.validate(prompt, p)
    ids = [engine.add_request(prompt, p, request_id=str(i)) for i, (prompt, p) in enumerate(zip(prompts, per_prompt))]
    results: dict[str, GenerationResult] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out.result
    return [results[i] for i in ids]
