"""The one place an OpenAI request becomes what the engine runs: prompt token ids and one
GenerationParams (plus the stop strings the ingress applies to the text). No later layer
re-reads the request. Every refusal is a RequestError naming the request field.

GenerationParams carries only the family settings the client sent (None: the family's
default), so the model's decoding policy, checked here, refuses by name a field its family
does not use, and `generation_algorithm` can be told apart from the cache fields it names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Optional

from fastdllm_ray.decoding.policy import DecodingPolicy
from fastdllm_ray.params import GenerationParams
from fastdllm_ray.serve.algorithms import algorithms_of
from fastdllm_ray.serve.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, FastDLLMFields

DEFAULT_MAX_TOKENS = 128
MAX_STOP_STRINGS = 4
MAX_TEMPERATURE = 2.0  # OpenAI's bound; far beyond it Gumbel noise overflows float64
# GenerationParams field -> the request field a client set
_REQUEST_FIELD = {"gen_length": "max_tokens", "cache": "use_cache", "prompt": "prompt"}


def error_body(message: str, param: Optional[str] = None, code: Optional[str] = None,
               type: str = "invalid_request_error") -> dict:
    """OpenAI's error shape, for a response body or an error event in a stream."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI error body with this HTTP status."""

    def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 status: int = 400, type: str = "invalid_request_error",
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code
        self.status, self.type, self.headers = status, type, headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.param, self.code, self.type)


@dataclass(frozen=True)
class EngineRequest:
    prompt_ids: list[int]
    params: GenerationParams
    stop: tuple[str, ...]
    stream_steps: bool = False  # stream a chunk per engine step (serve/steps.py)


class PromptEncoder:
    """Chat messages or text -> token ids, with user text always encoded as plain text.

    A user who types `<|mdm_mask|>` or `<|eot_id|>` gets those characters, never the special
    token: the chat template is rendered around placeholders, its own pieces are encoded
    with special tokens recognised, and each message's content with them split.
    """

    def __init__(self, tokenizer, vocab_size: int, mask_token_id: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self._nonce = uuid.uuid4().hex[:12]
        self._trims = self._template_trims_content()

    def _mark(self, i: int) -> str:
        return f"@@FASTDLLM{self._nonce}MSG{i}@@"

    def _template_trims_content(self) -> bool:
        probe = f" {self._mark(0)} "
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": probe}], add_generation_prompt=True, tokenize=False)
        return probe not in rendered

    def _plain(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def _template(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat(self, messages: list[ChatMessage]) -> list[int]:
        placeholders = [{"role": m.role, "content": self._mark(i)} for i, m in enumerate(messages)]
        rendered = self.tokenizer.apply_chat_template(placeholders, add_generation_prompt=True, tokenize=False)
        pieces = re.split(f"@@FASTDLLM{self._nonce}MSG(\\d+)@@", rendered)
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                ids += self._template(piece) if piece else []
            else:
                content = messages[int(piece)].content
                ids += self._plain(content.strip() if self._trims else content)
        return ids

    def text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"])

    def token_ids(self, ids: list[int]) -> list[int]:
        if any(not 0 <= t < self.vocab_size for t in ids):
            raise RequestError(f"prompt: token ids must be in [0, {self.vocab_size})", param="prompt")
        if self.mask_token_id in ids:
            raise RequestError("prompt: the mask token id cannot be part of a prompt", param="prompt")
        return list(ids)


def _check_text(text: str, param: str) -> None:
    """JSON can carry lone UTF-16 surrogates ("\\ud800") that no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{param}: is not valid Unicode text (lone surrogate)", param=param) from None


def _stop_strings(stop) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > MAX_STOP_STRINGS:
        raise RequestError(f"stop: at most {MAX_STOP_STRINGS} stop strings", param="stop")
    if any(s == "" for s in stops):
        raise RequestError("stop: stop strings must not be empty", param="stop")
    return stops


def _refuse_unsupported(req: FastDLLMFields) -> None:
    """Fields the LLaDA OpenAI server or OpenAI clients send that we cannot honour: their "off"
    value is accepted, any other refused by name with the reason."""
    if req.cfg_scale:
        raise RequestError(f"cfg_scale: {req.cfg_scale} is not supported: classifier-free guidance needs an "
                           "unconditional forward beside every step's conditional one, which this engine does not "
                           "run; 0 (off) is accepted", param="cfg_scale")
    if req.presence_penalty not in (None, 0.0, 1.0):
        raise RequestError(f"presence_penalty: {req.presence_penalty} is not supported: a diffusion model commits "
                           "tokens in parallel, with no text before them to penalise; 0 is accepted, and 1.0 (what "
                           "NeMo-Skills sends for its neutral repetition_penalty)", param="presence_penalty")
    for field in ("logprobs", "top_logprobs"):
        if getattr(req, field, None):
            raise RequestError(f"{field}: per-token log-probabilities are not available: a diffusion model has no "
                               "left-to-right factorisation to take them from", param=field)


def _family_fields(req: FastDLLMFields, max_tokens: int, policy: Optional[DecodingPolicy]) -> dict:
    """The family-specific GenerationParams fields the request sets (None: not sent)."""
    cache = None
    if req.use_cache is not None or req.use_dual_cache is not None:  # an unsent flag is the seed's default, true
        cache = "none" if req.use_cache is False else ("prefix" if req.use_dual_cache is False else "dual")
    top_k = req.top_k
    if top_k is not None and top_k < 1:
        if top_k != -1:
            raise RequestError(f"top_k: {top_k} must be >= 1, or -1 for not set", param="top_k")
        top_k = None
    steps = req.steps
    if steps is not None:
        if steps < 1:
            raise RequestError(f"steps: {steps} must be >= 1", param="steps")
        # more steps than answer tokens would only run forwards that commit nothing
        steps = min(steps, -(-max_tokens // req.block_length) * req.block_length)
    fields = dict(steps=steps, cache=cache, factor=req.factor, remasking=req.remasking, alg=req.alg,
                  top_p=req.top_p, top_k=top_k, sub_block_length=req.sub_block_length, block_cache=req.block_cache,
                  steps_per_block=req.steps_per_block)
    if req.generation_algorithm is not None:
        if policy is None:
            raise RequestError("generation_algorithm: the model's family, which names the algorithms, is not known "
                               "here", param="generation_algorithm")
        try:
            fields = algorithms_of(policy).apply(req.generation_algorithm, fields)
        except ValueError as exc:
            raise RequestError(str(exc), param="generation_algorithm") from None
    return fields


def _generation_params(req: FastDLLMFields, max_tokens: Optional[int], max_model_len: int,
                       default_max_tokens: int, policy: Optional[DecodingPolicy]) -> GenerationParams:
    if req.n != 1:
        raise RequestError("n: only n=1 is supported", param="n")
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    if max_tokens < 1:
        raise RequestError(f"max_tokens: {max_tokens} must be >= 1", param="max_tokens")
    if max_tokens >= max_model_len:
        raise RequestError(f"max_tokens: {max_tokens} is beyond the model's context of {max_model_len} tokens",
                           param="max_tokens", code="context_length_exceeded")
    if not 1 <= req.block_length <= max_model_len:
        raise RequestError(f"block_length: {req.block_length} is outside [1, {max_model_len}]", param="block_length")
    if req.stream_steps and not req.stream:
        raise RequestError("stream_steps: needs stream: true (step events only exist in a stream)",
                           param="stream_steps")
    if req.temperature > MAX_TEMPERATURE:
        raise RequestError(f"temperature: {req.temperature} must be <= {MAX_TEMPERATURE}", param="temperature")
    _refuse_unsupported(req)
    family = _family_fields(req, max_tokens, policy)
    try:
        params = GenerationParams(gen_length=max_tokens, block_length=req.block_length, threshold=req.threshold,
                                  temperature=req.temperature, stop_at_eos=not req.ignore_eos, **family)
        if policy is not None:  # else the engine's policy checks it
            policy.validate(params)  # a field this model's family does not use, by name
            policy.effective(params)  # and the family's defaults fit the request (steps against its blocks)
    except ValueError as exc:
        raise _named_by_request(exc) from None
    return params


def _named_by_request(exc: ValueError) -> RequestError:
    """A GenerationParams refusal ("gen_length: ...") in the names the client sent ("max_tokens: ...")."""
    message = str(exc)
    field = message.split(":", 1)[0].split(" ")[0]
    sent = _REQUEST_FIELD.get(field, field)
    if sent != field and message.startswith(field + ":"):
        message = sent + message[len(field):]
    return RequestError(message, param=sent)


def _check_context(prompt_ids: list[int], params: GenerationParams, policy: Optional[DecodingPolicy],
                   max_model_len: int, param: str) -> None:
    if not prompt_ids:
        raise RequestError(f"{param}: is empty", param=param)
    if policy is None:  # the canvas families' length, the longest any family takes
        total = len(prompt_ids) + params.padded_gen_length
    else:
        total = policy.total_len(len(prompt_ids), policy.effective(params))
    if total > max_model_len:
        raise RequestError(
            f"{param}: {len(prompt_ids)} prompt tokens + {total - len(prompt_ids)} answer tokens exceed "
            f"the model's context of {max_model_len} tokens", param=param, code="context_length_exceeded")


def chat_request(req: ChatCompletionRequest, encoder: PromptEncoder, max_model_len: int,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS,
                 policy: Optional[DecodingPolicy] = None) -> EngineRequest:
    """The engine request of a chat request; `policy`: the model's family (None: its fields go
    unchecked to the engine, which checks them, and generation_algorithm is refused)."""
    if not req.messages:
        raise RequestError("messages: must hold at least one message", param="messages")
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise RequestError("max_tokens: set max_tokens or max_completion_tokens, not both", param="max_tokens")
    for i, message in enumerate(req.messages):
        _check_text(message.content, f"messages.{i}.content")
        if message.role == "user" and not message.content.strip():
            raise RequestError(f"messages.{i}.content: a user message must not be empty",
                               param=f"messages.{i}.content")
    max_tokens = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
    params = _generation_params(req, max_tokens, max_model_len, default_max_tokens, policy)
    stop = _stop_strings(req.stop)
    prompt_ids = encoder.chat(req.messages)
    _check_context(prompt_ids, params, policy, max_model_len, "messages")
    return EngineRequest(prompt_ids, params, stop, req.stream_steps)


def completion_request(req: CompletionRequest, encoder: PromptEncoder, max_model_len: int,
                       default_max_tokens: int = DEFAULT_MAX_TOKENS,
                       policy: Optional[DecodingPolicy] = None) -> EngineRequest:
    params = _generation_params(req, req.max_tokens, max_model_len, default_max_tokens, policy)
    stop = _stop_strings(req.stop)
    prompt = req.prompt
    # a batch of one (lm-eval's local-completions sends [[ids]] or [text]) is that one prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        if len(prompt) != 1:
            raise RequestError("prompt: only one prompt per request is supported", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        _check_text(prompt, "prompt")
        prompt_ids = encoder.text(prompt) if prompt else []
    else:
        prompt_ids = encoder.token_ids(prompt)
    _check_context(prompt_ids, params, policy, max_model_len, "prompt")
    return EngineRequest(prompt_ids, params, stop, req.stream_steps)
