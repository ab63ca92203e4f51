"""Runs held-out problems (single questions, or conversations turn by turn: eval/turns.py)
under one decoding configuration, through the engine in this process or through a running
server's OpenAI API, and scores the answers."""

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


Conversation = list[dict[str, str]]  # chat messages, the last one the question to answer


@dataclass
class Reply:
    text: str
    nfe: int
    tokens: int  # answer tokens handed back (cut at the end token)


@dataclass
class Replies:
    replies: list[Reply]
    committed_tokens: int  # committed by the decoder, padding after the end included
    seconds: float


def single_question(problem: Problem) -> Conversation:
    return [{"role": "user", "content": problem.question}]


def chat_prompt_ids(tokenizer, question: str | Conversation) -> list[int]:
    messages = [{"role": "user", "content": question}] if isinstance(question, str) else question
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def score(config: DecodingConfig, problems: list[Problem], replies: Replies) -> ConfigResult:
    """The replies to `problems` (in order) scored by the number after "The answer is"."""
    result = ConfigResult(config, len(problems), 0, 0, 0, replies.committed_tokens, replies.seconds, [])
    for problem, reply in zip(problems, replies.replies, strict=True):
        if extract_answer(reply.text) == problem.value:
            result.correct += 1
        elif len(result.failures) < 5:
            result.failures.append((problem.question, reply.text))
        result.nfe += reply.nfe
        result.answer_tokens += reply.tokens
    return result


def engine_replies(model, tokenizer, conversations: list[Conversation], config: DecodingConfig,
                   batch_size: int = 64, progress=None, eager: bool = False) -> Replies:
    """All conversations as one continuous batch of at most batch_size live sequences.

    eager=True turns off the engine's CUDA graphs and compiled blocks (no effect on the CPU)."""
    params = config.params()
    prompts = [chat_prompt_ids(tokenizer, c) for c in conversations]
    longest = max(len(p) for p in prompts) + params.padded_gen_length
    engine = Engine(model, EngineConfig(max_num_seqs=batch_size, max_model_len=longest,
                                        max_queue=max(1, len(prompts)),
                                        cuda_graphs=not eager, compile_blocks=not eager))
    replies: list[Reply | None] = [None] * len(prompts)
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, params, request_id=str(i))
    while engine.has_unfinished():
        for out in engine.step():
            if not out.finished:
                continue
            if out.result.error:
                raise RuntimeError(f"problem {out.request_id}: {out.result.error}")
            text = tokenizer.decode(out.result.token_ids, skip_special_tokens=True)
            replies[int(out.request_id)] = Reply(text, out.result.nfe, len(out.result.token_ids))
            if progress is not None:
                progress.update(1)
    return Replies(replies, engine.stats.committed_tokens, time.perf_counter() - started)


def run_engine(model, tokenizer, problems: list[Problem], config: DecodingConfig,
               batch_size: int = 64, progress=None, eager: bool = False) -> ConfigResult:
    """Single questions through the engine in this process (see engine_replies)."""
    replies = engine_replies(model, tokenizer, [single_question(p) for p in problems], config, batch_size,
                             progress, eager)
    return score(config, problems, replies)


def server_replies(base_url: str, model_name: str, conversations: list[Conversation], config: DecodingConfig,
                   api_key: str = "none", concurrency: int = 16, progress=None) -> Replies:
    """The conversations through /v1/chat/completions with the Fast-dLLM extra fields.

    The server reports NFE in `usage.nfe`; committed tokens are not visible from outside,
    so they are counted as the answer tokens (tokens per forward = answer tokens / NFE).
    """
    from openai import OpenAI

    client = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key, max_retries=3, timeout=600)
    extra = config.request_fields()

    def ask(messages: Conversation) -> Reply:
        response = client.chat.completions.create(model=model_name, messages=messages,
                                                  max_tokens=config.gen_length, temperature=0.0, extra_body=extra)
        usage = response.usage
        nfe = ((usage.model_extra or {}).get("nfe") or 0) if usage is not None else 0
        if progress is not None:
            progress.update(1)
        return Reply(response.choices[0].message.content or "", nfe, usage.completion_tokens if usage else 0)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        replies = list(pool.map(ask, conversations))
    return Replies(replies, sum(r.tokens for r in replies), time.perf_counter() - started)


def run_server(base_url: str, model_name: str, problems: list[Problem], config: DecodingConfig,
               api_key: str = "none", concurrency: int = 16, progress=None) -> ConfigResult:
    """Single questions through a running server (see server_replies)."""
    replies = server_replies(base_url, model_name, [single_question(p) for p in problems], config, api_key,
                             concurrency, progress)
    return score(config, problems, replies)
