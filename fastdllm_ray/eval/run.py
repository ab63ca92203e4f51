"""Runs held-out problems under one decoding configuration, through the engine in this
process or through a running server's OpenAI API, and scores the answers."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastdllm_ray.engine import Engine, EngineConfig
from fastdllm_ray.eval.configs import DecodingConfig
from fastdllm_ray.train.data import Problem

_ANSWER = re.compile(r"The answer is\s*(-?\d+)")


def extract_answer(text: str) -> int | None:
    """The number after the last "The answer is", or None when there is none."""
    found = _ANSWER.findall(text)
    return int(found[-1]) if found else None


@dataclass
class ConfigResult:
    config: DecodingConfig
    num_problems: int
    correct: int
    nfe: int  # forwards summed over problems
    answer_tokens: int  # tokens handed back (cut at the end token), summed
    committed_tokens: int  # tokens committed by the decoder, padding after the end included
    seconds: float
    failures: list[tuple[str, str]]  # (question, answer text) of the first few wrong answers

    @property
    def accuracy(self) -> float:
        return self.correct / self.num_problems if self.num_problems else 0.0

    @property
    def mean_nfe(self) -> float:
        return self.nfe / self.num_problems if self.num_problems else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Decoding parallelism: tokens committed per sequence-forward (1.0 = one per step)."""
        return self.committed_tokens / self.nfe if self.nfe else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Answer tokens handed back per second of wall time."""
        return self.answer_tokens / self.seconds if self.seconds else 0.0


def chat_prompt_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def _score(result: ConfigResult, problem: Problem, text: str) -> None:
    if extract_answer(text) == problem.value:
        result.correct += 1
    elif len(result.failures) < 5:
        result.failures.append((problem.question, text))


def run_engine(model, tokenizer, problems: list[Problem], config: DecodingConfig,
               batch_size: int = 64, progress=None, eager: bool = False) -> ConfigResult:
    """All problems as one continuous batch of at most batch_size live sequences.

    eager=True turns off the engine's CUDA graphs and compiled blocks (no effect on the CPU)."""
    params = config.params()
    prompts = [chat_prompt_ids(tokenizer, p.question) for p in problems]
    longest = max(len(p) for p in prompts) + params.padded_gen_length
    engine = Engine(model, EngineConfig(max_num_seqs=batch_size, max_model_len=longest,
                                        max_queue=max(1, len(problems)),
                                        cuda_graphs=not eager, compile_blocks=not eager))
    result = ConfigResult(config, len(problems), 0, 0, 0, 0, 0.0, [])
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, params, request_id=str(i))
    while engine.has_unfinished():
        for out in engine.step():
            if not out.finished:
                continue
            if out.result.error:
                raise RuntimeError(f"problem {out.request_id}: {out.result.error}")
            problem = problems[int(out.request_id)]
            _score(result, problem, tokenizer.decode(out.result.token_ids, skip_special_tokens=True))
            result.nfe += out.result.nfe
            result.answer_tokens += len(out.result.token_ids)
            if progress is not None:
                progress.update(1)
    result.seconds = time.perf_counter() - started
    result.committed_tokens = engine.stats.committed_tokens
    return result


def run_server(base_url: str, model_name: str, problems: list[Problem], config: DecodingConfig,
               api_key: str = "none", concurrency: int = 16, progress=None) -> ConfigResult:
    """The same problems through /v1/chat/completions with the Fast-dLLM extra fields.

    The server reports NFE in `usage.nfe`; committed tokens are not visible from outside,
    so tokens per forward here is answer tokens / NFE.
    """
    from openai import OpenAI

    client = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key, max_retries=3, timeout=600)
    params = config.params()
    extra = {"use_cache": config.cache != "none", "use_dual_cache": config.cache == "dual",
             "steps": params.steps, "block_length": params.block_length}
    if params.threshold is not None:
        extra["threshold"] = params.threshold
    if params.factor is not None:
        extra["factor"] = params.factor

    def ask(problem: Problem):
        response = client.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": problem.question}],
            max_tokens=params.gen_length, temperature=0.0, extra_body=extra)
        usage = response.usage
        nfe = ((usage.model_extra or {}).get("nfe") or 0) if usage is not None else 0
        return problem, response.choices[0].message.content or "", nfe, usage.completion_tokens if usage else 0

    result = ConfigResult(config, len(problems), 0, 0, 0, 0, 0.0, [])
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for problem, text, nfe, tokens in pool.map(ask, problems):
            _score(result, problem, text)
            result.nfe += nfe
            result.answer_tokens += tokens
            if progress is not None:
                progress.update(1)
    result.seconds = time.perf_counter() - started
    result.committed_tokens = result.answer_tokens
    return result
