"""OpenAI request and response bodies (the subset we serve), plus the Fast-dLLM extra fields.

Requests are strict: a wrong JSON type is an error, not a coercion ("5" is no integer),
NaN and infinities are refused, and unknown fields are refused so that a misspelt
setting cannot be silently ignored. The fields are the LLaDA OpenAI server's (NeMo-RL's
xp/llada_api, the Fast-dLLM seed server) and OpenAI's; what a field we cannot honour accepts
is its "off" value only (convert.py).
"""

from __future__ import annotations

import time
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class FastDLLMFields(BaseModel):
    """Decoding settings common to both endpoints (OpenAI fields, then the diffusion extras).

    A family's own settings default to None, "not sent": the model's family fills in its
    default, and refuses by name one it does not use (decoding/policy.py).
    """

    model_config = _STRICT

    model: str
    max_tokens: Optional[int] = Field(
        None, description="answer tokens; default: the model's generation_config max_new_tokens, else 128")
    temperature: float = 0.0
    stop: Optional[Union[str, list[str]]] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, description="only 1 is supported")
    top_p: Optional[float] = Field(None, description="nucleus of each position's tempered distribution: Dream "
                                   "(its candidates), LLaDA (sampled draws only: no effect at temperature 0), "
                                   "Fast-dLLM v2 (sampled draws)")
    seed: Optional[int] = Field(None, description="accepted for compatibility; decoding uses the engine's seed")
    user: Optional[str] = None
    ignore_eos: bool = Field(False, description="vLLM's field: true decodes every block up to max_tokens, past the "
                             "end token (finish_reason length); the text keeps what the model wrote after it")
    presence_penalty: Optional[float] = Field(
        None, description="not applied: only 0, and the 1.0 NeMo-Skills sends for its neutral repetition_penalty")
    # the diffusion extras
    use_cache: Optional[bool] = Field(None, description="LLaDA, Dream: K/V cache (default true)")
    use_dual_cache: Optional[bool] = Field(None, description="LLaDA, Dream: with use_cache, the dual cache "
                                           "(default true); false: the prefix cache")
    generation_algorithm: Optional[str] = Field(
        None, description="the LLaDA OpenAI server's name for the cache fields: basic (no_cache, simple), "
        "prefix_cache (prefix, cache), dual_cache (dual, double_cache); Fast-dLLM v2: basic, block_cache "
        "(GET /generation/algorithms lists each model's)")
    threshold: Optional[float] = Field(None, description="commit every position at least this confident")
    factor: Optional[float] = Field(None, description="LLaDA: Fast-dLLM factor rule")
    steps: Optional[int] = Field(None, description="LLaDA, Dream: forwards spread over the blocks (default 128)")
    block_length: int = 32
    remasking: Optional[Literal["low_confidence", "random"]] = Field(
        None, description="LLaDA: low_confidence (default) or random")
    cfg_scale: Optional[float] = Field(None, description="classifier-free guidance: only 0 (off) is supported")
    stream_steps: bool = Field(
        False, description="with stream: also one chunk per engine step whose `step` field lists the answer "
        "positions that step committed and their tokens (for drawing the answer as it unmasks)")
    alg: Optional[str] = Field(None, description="Dream models' choice rule: entropy, maskgit_plus, topk_margin or "
                                                 "confidence_threshold (default: entropy, or confidence_threshold "
                                                 "with a threshold)")
    top_k: Optional[int] = Field(None, description="candidates kept per position: Dream (default 50, as the "
                                 "reference), LLaDA (sampled draws only); -1: not set")
    sub_block_length: Optional[int] = Field(None, description="Fast-dLLM v2: sub-block size (default 8)")
    block_cache: Optional[bool] = Field(None, description="Fast-dLLM v2: keep the block's own K/V between "
                                        "forwards (default false)")
    steps_per_block: Optional[int] = Field(None, description="LLaDA2.0: steps per block")


class CompletionRequest(FastDLLMFields):
    prompt: Union[str, list[str], list[int], list[list[int]]] = Field(
        description="text, a list holding one text, token ids, or a list holding one list of token ids"
    )
    echo: bool = False


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "user", "assistant"]
    content: str
    name: Optional[str] = None


class ChatCompletionRequest(FastDLLMFields):
    messages: list[ChatMessage]
    max_completion_tokens: Optional[int] = Field(None, description="newer name of max_tokens")
    logprobs: Optional[bool] = Field(None, description="only false: no per-token log-probabilities")
    top_logprobs: Optional[int] = Field(None, description="only null")


# ---- responses ----------------------------------------------------------------------------
class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(0, description="prompt tokens whose K/V came from the prefix cache (models that "
                                              "share prefixes: Fast-dLLM v2); always 0 on LLaDA and Dream")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    nfe: Optional[int] = Field(None, description="forward evaluations spent on this request")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Optional[str] = None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: Optional[str] = None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Optional[Usage] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "fastdllm-ray"
    max_model_len: Optional[int] = None
    family: Optional[str] = Field(None, description="the model's decoding family: LLaDA, Dream, Fast-dLLM v2, LLaDA2.0")
    settings: Optional[list[str]] = Field(
        None, description="the request fields of the family's own decoding settings, beside those every model takes "
        "(max_tokens, block_length, threshold, temperature, generation_algorithm); another family's are refused")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
