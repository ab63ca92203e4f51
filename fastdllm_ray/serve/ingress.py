"""OpenAI-compatible ingress: FastAPI routes under `@serve.ingress`, in front of the engine
replicas. It validates and tokenizes (convert.py), sends token ids + GenerationParams to a
replica through a streaming handle, and turns the blocks that come back into text: a whole
response, or server-sent events with one chunk per finished block.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from fastdllm_ray.model import load_tokenizer
from fastdllm_ray.model.checkpoint import generation_config, load_config, resolve_checkpoint
from fastdllm_ray.serve import protocol as p
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.convert import (DEFAULT_MAX_TOKENS, EngineRequest, PromptEncoder, RequestError,
                                        chat_request, completion_request)
from fastdllm_ray.serve.errors import GuardMiddleware, install_error_handlers, sse
from fastdllm_ray.serve.metrics import IngressMetrics
from fastdllm_ray.serve.replica import resolve_model, served_model_name
from fastdllm_ray.serve.text import TextAssembler

RETRY_AFTER_S = "1"
API_KEYS_ENV = "FASTDLLM_API_KEYS"

app = FastAPI(title="fastdllm-ray", description="OpenAI-compatible Fast-dLLM serving")
_guard_settings: dict = {}  # filled by the ingress replica that owns this process's app
app.add_middleware(GuardMiddleware, settings=_guard_settings)
install_error_handlers(app)


def api_keys_of(config: AppConfig) -> list[str]:
    """Configured keys plus those in $FASTDLLM_API_KEYS (comma separated)."""
    from_env = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    return list(dict.fromkeys(list(config.api_keys) + from_env))


def _overloaded(message: str) -> RequestError:
    return RequestError(message, code="overloaded", status=503, type="server_error",
                        headers={"Retry-After": RETRY_AFTER_S})


class _Answer:
    """One request's answer as it arrives: text deltas, usage, finish reason."""

    def __init__(self, tokenizer, req: EngineRequest) -> None:
        self.text = TextAssembler(tokenizer, req.stop)
        self.prompt_tokens = len(req.prompt_ids)
        self.finish_reason: Optional[str] = None
        self.nfe: Optional[int] = None
        self.engine_done = False  # the replica sent its last block (else it may still be working)

    def add(self, out) -> str:
        delta = self.text.add(out.token_ids, final=out.finished)
        if out.finished:
            self.engine_done = True
            if out.result.finish_reason == "error":
                raise RequestError(f"engine failed on this request: {out.result.error}", status=500,
                                   type="server_error", code="engine_error")
            self.finish_reason = out.result.finish_reason
            self.nfe = out.result.nfe
        if self.text.stopped:
            self.finish_reason = "stop"
        return delta

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def usage(self) -> p.Usage:
        n = len(self.text.token_ids)
        return p.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=n,
                       total_tokens=self.prompt_tokens + n, nfe=self.nfe)


@serve.deployment
@serve.ingress(app)
class OpenAIIngress:
    def __init__(self, config: dict, engine: DeploymentHandle) -> None:
        self.config = AppConfig.model_validate(config)
        self.engine = engine
        checkpoint = resolve_checkpoint(resolve_model(self.config))
        model_config = load_config(checkpoint)
        self.model_name = served_model_name(self.config)
        self.max_model_len = min(self.config.engine.max_model_len or model_config.max_sequence_length,
                                 model_config.max_sequence_length)
        # a model may ask for another default answer length than the server's 128 (the shipped
        # one was trained on 64-token answers)
        self.default_max_tokens = int(generation_config(checkpoint).get("max_new_tokens", DEFAULT_MAX_TOKENS))
        self.tokenizer = load_tokenizer(checkpoint)
        self.encoder = PromptEncoder(self.tokenizer, model_config.embedding_size, model_config.mask_token_id)
        self.metrics = IngressMetrics(self.model_name)
        _guard_settings.update(api_keys=api_keys_of(self.config), max_body_bytes=self.config.max_body_bytes,
                               on_response=self.metrics.observe)

    # ---- routes ---------------------------------------------------------------------------
    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", response_model=p.ModelList)
    async def models(self) -> p.ModelList:
        return p.ModelList(data=[p.ModelCard(id=self.model_name, max_model_len=self.max_model_len)])

    @app.post("/v1/completions", response_model=p.CompletionResponse)
    async def completions(self, body: p.CompletionRequest):
        self._check_model(body.model)
        req = completion_request(body, self.encoder, self.max_model_len, self.default_max_tokens)
        echo = body.prompt if body.echo and isinstance(body.prompt, str) else ""
        return await self._respond(req, body, chat=False, echo=echo)

    @app.post("/v1/chat/completions", response_model=p.ChatCompletionResponse)
    async def chat_completions(self, body: p.ChatCompletionRequest):
        self._check_model(body.model)
        req = chat_request(body, self.encoder, self.max_model_len, self.default_max_tokens)
        return await self._respond(req, body, chat=True)

    # ---- plumbing -------------------------------------------------------------------------
    def _check_model(self, name: str) -> None:
        if name != self.model_name:
            raise RequestError(f"model: {name!r} is not served here (try {self.model_name!r})",
                               param="model", code="model_not_found")

    async def _submit(self, req: EngineRequest):
        """Starts the request on a replica; refusals become 400/503 before any byte is sent."""
        stream = self.engine.options(stream=True).generate.remote(req.prompt_ids, req.params, uuid.uuid4().hex)
        try:
            admission = await stream.__anext__()
        except BackPressureError:
            raise _overloaded("server overloaded: every engine replica's queue is full; retry later") from None
        except Exception as exc:  # a replica died or is restarting: worth a retry
            stream.cancel()
            raise _overloaded(f"engine replica unavailable ({type(exc).__name__}); retry later") from None
        if admission["status"] == "rejected":
            raise _overloaded(f"server overloaded: {admission['message']}; retry later")
        if admission["status"] == "invalid":
            message = admission["message"]
            raise RequestError(message, param=message.split(":", 1)[0])
        return stream

    async def _next(self, stream, deadline: float):
        try:
            return await asyncio.wait_for(stream.__anext__(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise RequestError(f"request timed out after {self.config.request_timeout_s:g} s", status=504,
                               type="server_error", code="timeout") from None
        except (StopAsyncIteration, RequestError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise RequestError(f"engine replica failed mid-request ({type(exc).__name__}); retry", status=503,
                               type="server_error", code="replica_failed",
                               headers={"Retry-After": RETRY_AFTER_S}) from None

    async def _respond(self, req: EngineRequest, body: p.FastDLLMFields, chat: bool, echo: str = ""):
        deadline = time.monotonic() + self.config.request_timeout_s
        stream = await self._submit(req)
        answer = _Answer(self.tokenizer, req)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = self._events(stream, answer, deadline, chat, include_usage)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            while not answer.done:
                answer.add(await self._next(stream, deadline))
        finally:
            if not answer.engine_done:  # a stop string, a timeout or the client leaving
                stream.cancel()
        usage = answer.usage()
        if chat:
            message = p.ChatResponseMessage(content=answer.text.text)
            response = p.ChatCompletionResponse(model=self.model_name, usage=usage, choices=[
                p.ChatChoice(message=message, finish_reason=answer.finish_reason)])
        else:
            response = p.CompletionResponse(model=self.model_name, usage=usage, choices=[
                p.CompletionChoice(text=echo + answer.text.text, finish_reason=answer.finish_reason)])
        return JSONResponse(response.model_dump())

    async def _events(self, stream, answer: _Answer, deadline: float, chat: bool,
                      include_usage: bool) -> AsyncIterator[str]:
        kind = "chatcmpl" if chat else "cmpl"
        head = {"id": p.new_id(kind), "created": int(time.time()), "model": self.model_name,
                "object": "chat.completion.chunk" if chat else "text_completion"}

        def chunk(text: Optional[str], finish: Optional[str], role: bool = False) -> dict:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else {"content": text}
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            return {**head, "choices": [choice]}

        try:
            if chat:
                yield sse(chunk(None, None, role=True))
            while not answer.done:
                delta = answer.add(await self._next(stream, deadline))
                yield sse(chunk(delta, answer.finish_reason))
            if include_usage:
                yield sse({**head, "choices": [], "usage": answer.usage().model_dump()})
        except RequestError as exc:
            yield sse(exc.body())
        finally:
            if not answer.engine_done:  # the client left, a stop string or a timeout
                stream.cancel()
        yield sse("[DONE]")
