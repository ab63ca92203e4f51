"""Many prompts through one continuously batched engine, each answer cut at its first stop
string. A request whose text already holds a stop string is aborted at once, so the blocks
after it are never computed (lm-eval's 5-shot prompts invite the model to write the next
"Question:"; this is where that costs nothing)."""

from __future__ import annotations

from dataclasses import dataclass

from fastdllm_ray.engine import Engine, EngineConfig
from fastdllm_ray.params import GenerationParams
from fastdllm_ray.serve.text import TextAssembler


@dataclass(frozen=True)
class Job:
    prompt_ids: list[int]
    params: GenerationParams
    stops: tuple[str, ...] = ()


@dataclass
class Completion:
    text: str  # cut before the first stop string, special tokens dropped
    token_ids: list[int]  # every token the engine handed back (up to its end token or the abort)
    nfe: int


def run_jobs(model, tokenizer, jobs: list[Job], max_num_seqs: int, seed: int = 0, progress=None) -> list[Completion]:
    """Decodes every job; returns one Completion per job, in order. `progress` (a tqdm bar or
    None) advances by one per finished job."""
    if not jobs:
        return []
    longest = max(len(j.prompt_ids) + j.params.padded_gen_length for j in jobs)
    engine = Engine(model, EngineConfig(max_num_seqs=max(1, min(max_num_seqs, len(jobs))), max_model_len=longest,
                                        max_queue=len(jobs), seed=seed))
    for job in jobs:  # every prompt checked before any runs
        engine.validate(job.prompt_ids, job.params)
    texts = [TextAssembler(tokenizer, job.stops) for job in jobs]
    done: list[Completion | None] = [None] * len(jobs)
    for i, job in enumerate(jobs):
        engine.add_request(job.prompt_ids, job.params, request_id=str(i))
    while engine.has_unfinished():
        for out in engine.step():
            i = int(out.request_id)
            if not texts[i].stopped:
                texts[i].add(out.token_ids, final=out.finished)
                if texts[i].stopped and not out.finished:
                    engine.abort(out.request_id)  # the answer is complete: free the slot now
            if out.finished:
                if out.result.finish_reason == "error":
                    raise RuntimeError(f"request {i}: the engine failed: {out.result.error}")
                done[i] = Completion(texts[i].text, list(out.result.token_ids), out.result.nfe)
                if progress is not None:
                    progress.update(1)
    return done  # type: ignore[return-value]
