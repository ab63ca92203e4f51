"""generate(): many prompts, each with its own parameters, through one batched engine."""

from __future__ import annotations

from collections.abc import Sequence as Seq

from fastdllm_ray.decoding import policy_for
from fastdllm_ray.engine.engine import Engine, EngineConfig, as_token_ids
from fastdllm_ray.engine.outputs import GenerationResult
from fastdllm_ray.model import DiffusionTransformer
from fastdllm_ray.params import GenerationParams


def generate(
    model: DiffusionTransformer,
    prompts: Seq[Seq[int]],
    params: GenerationParams | Seq[GenerationParams] | None = None,
    max_batch_size: int = 64,
    seed: int = 0,
) -> list[GenerationResult]:
    """Decodes every prompt (token ids); returns one result per prompt, in order.

    `params` is one GenerationParams for all prompts or one per prompt. Prompts run as one
    continuous batch of at most `max_batch_size` live sequences, on an engine that the model
    keeps between calls (see `_engine_for`).
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
    engine = _engine_for(model, prompts, per_prompt, max_batch_size)
    engine.runner.generator.manual_seed(seed)  # a call's draws do not depend on earlier calls
    for prompt, p in zip(prompts, per_prompt):  # every prompt checked before any runs
        engine.validate(prompt, p)
    ids = [engine.add_request(prompt, p, request_id=str(i)) for i, (prompt, p) in enumerate(zip(prompts, per_prompt))]
    results: dict[str, GenerationResult] = {}
    try:
        while engine.has_unfinished():
            for out in engine.step():
                if out.finished:
                    results[out.request_id] = out.result
    finally:  # interrupted: leave the kept engine empty for the next call
        if engine.has_unfinished():
            for i in ids:
                engine.abort(i)
            engine.step()
    return [results[i] for i in ids]


def _engine_for(model: DiffusionTransformer, prompts, per_prompt, max_batch_size: int) -> Engine:
    """The model's engine for generate(), kept on the model between calls (its compiled code,
    CUDA graphs and cache are reused); made anew, larger, only when a call needs more seats or
    a longer context than it has, or when another thread is using it."""
    policy = policy_for(model.config.model_type, model.config.mask_token_id)
    longest = min(max(policy.total_len(len(p), policy.effective(q)) for p, q in zip(prompts, per_prompt)),
                  model.config.max_sequence_length)
    seats = max(1, min(max_batch_size, len(prompts)))
    engine: Engine | None = getattr(model, "_generate_engine", None)
    busy = engine is not None and engine.has_unfinished()
    if engine is None or busy or engine.max_model_len < longest or engine.config.max_num_seqs < seats:
        if engine is not None and not busy:
            seats, longest = max(seats, engine.config.max_num_seqs), max(longest, engine.max_model_len)
        engine = Engine(model, EngineConfig(max_num_seqs=seats, max_model_len=longest, max_queue=len(prompts)))
        if not busy:
            model._generate_engine = engine
    engine.scheduler.max_running = seats
    engine.scheduler.max_queue = max(engine.scheduler.max_queue, len(prompts))
    return engine
