"""OpenAI-compatible ingress: FastAPI routes under `@serve.ingress`, in front of the engine
replicas of one or more models (routed by the request's `model`, models.py). It validates and
tokenizes (convert.py), sends token ids + GenerationParams to a replica through a streaming
handle, and turns the blocks that come back into text: a whole response, or server-sent events
with one chunk per finished block. Every generation request's fate is counted once (fates.py).
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

from fastdllm_ray.serve import fates
from fastdllm_ray.serve import protocol as p
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.convert import EngineRequest, RequestError, chat_request, completion_request
from fastdllm_ray.serve.errors import GuardMiddleware, install_error_handlers, sse
from fastdllm_ray.serve.health import algorithms_body, health_body
from fastdllm_ray.serve.metrics import IngressMetrics, RequestFateMetrics
from fastdllm_ray.serve.metrics_proxy import metrics_response
from fastdllm_ray.serve.models import ModelRouter, ServedModel
from fastdllm_ray.serve.playground import playground_file
from fastdllm_ray.serve.steps import StepChunks
from fastdllm_ray.serve.text import TextAssembler

RETRY_AFTER_S = "1"
API_KEYS_ENV = "FASTDLLM_API_KEYS"

app = FastAPI(title="fastdllm-ray", description="OpenAI-compatible Fast-dLLM serving")
_guard_settings: dict = {}  # filled by the ingress replica that owns this process's app
app.add_middleware(GuardMiddleware, settings=_guard_settings)
app.add_middleware(fates.FateMiddleware, settings=_guard_settings)  # outermost: sees the guard's refusals
install_error_handlers(app)


def api_keys_of(config: AppConfig) -> list[str]:
    """Configured keys plus those in $FASTDLLM_API_KEYS (comma separated)."""
    from_env = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    return list(dict.fromkeys(list(config.api_keys) + from_env))


def _app_name() -> str:
    try:
        return serve.get_replica_context().app_name
    except Exception:  # constructed outside Serve (a script or a test)
        return "local"


def _overloaded(message: str, fate: str) -> RequestError:
    fates.current().mark(fate)
    return RequestError(message, code="overloaded", status=503, type="server_error",
                        headers={"Retry-After": RETRY_AFTER_S})


class _Answer:
    """One request's answer as it arrives: text deltas, usage, finish reason."""

    def __init__(self, tokenizer, req: EngineRequest) -> None:
        self.text = TextAssembler(tokenizer, req.stop)
        self.prompt_tokens = len(req.prompt_ids)
        self.params = req.params
        self.finish_reason: Optional[str] = None
        self.nfe: Optional[int] = None
        self.cached_tokens = 0  # prompt tokens the prefix cache served (known from the engine's first output)
        self.engine_done = False  # the replica sent its last block (else it may still be working)

    def add(self, out) -> str:
        delta = self.text.add(out.token_ids, final=out.finished)
        if out.finished:
            self.engine_done = True
            if out.result.finish_reason == "error":
                fates.current().mark("error")
                raise RequestError(f"engine failed on this request: {out.result.error}", status=500,
                                   type="server_error", code="engine_error")
            self.finish_reason = out.result.finish_reason
            self.nfe = out.result.nfe
        self.cached_tokens = max(self.cached_tokens, out.cached_tokens)  # known from the first block on
        if self.text.stopped:
            self.finish_reason = "stop"
        if self.finish_reason is not None:
            fates.current().mark(self.finish_reason)
        return delta

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def usage(self) -> p.Usage:
        n = len(self.text.token_ids)
        return p.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=n,
                       total_tokens=self.prompt_tokens + n, nfe=self.nfe,
                       prompt_tokens_details=p.PromptTokensDetails(cached_tokens=self.cached_tokens))


@serve.deployment
@serve.ingress(app)
class OpenAIIngress:
    def __init__(self, config: dict, engines: dict[str, DeploymentHandle],
                 devices: Optional[dict[str, str]] = None) -> None:
        self.config = AppConfig.model_validate(config)
        self.models = ModelRouter(self.config, engines, devices)
        self.metrics = IngressMetrics("+".join(model.name for model in self.models))
        self.steps = {model.name: StepChunks(model.tokenizer) for model in self.models}  # stream_steps
        _guard_settings.update(api_keys=api_keys_of(self.config), max_body_bytes=self.config.max_body_bytes,
                               on_response=self.metrics.observe, fates=RequestFateMetrics(_app_name()))

    # ---- routes ---------------------------------------------------------------------------
    @app.get("/health")
    async def health(self) -> dict:
        """Always 200 while the ingress runs (probes); the LLaDA OpenAI server's fields, of the
        first model, and the same for each model under `models`."""
        return health_body(list(self.models), await self.models.loaded())

    @app.get("/generation/algorithms")
    async def generation_algorithms(self) -> dict:
        """Each served model's generation_algorithm names, as the LLaDA OpenAI server lists its own."""
        return algorithms_body(list(self.models), await self.models.loaded())

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text(self):  # every node's ray_fastdllm_* and ray_serve_* series (metrics_proxy.py)
        return await metrics_response()

    @app.get("/v1/models", response_model=p.ModelList)
    async def models(self) -> p.ModelList:
        return p.ModelList(data=[p.ModelCard(id=name, max_model_len=model.max_model_len, family=model.policy.family,
                                             settings=model.settings)
                                 for name, model in self.models.names.items()])

    @app.get("/playground", include_in_schema=False)
    async def playground(self):
        return playground_file(self.config.playground)

    @app.get("/playground/{name}", include_in_schema=False)
    async def playground_asset(self, name: str):
        return playground_file(self.config.playground, name)

    @app.post("/v1/completions", response_model=p.CompletionResponse)
    async def completions(self, body: p.CompletionRequest):
        model = self._route(body.model)
        req = completion_request(body, model.encoder, model.max_model_len, model.default_max_tokens, model.policy)
        echo = body.prompt if body.echo and isinstance(body.prompt, str) else ""
        return await self._respond(model, req, body, chat=False, echo=echo)

    @app.post("/v1/chat/completions", response_model=p.ChatCompletionResponse)
    async def chat_completions(self, body: p.ChatCompletionRequest):
        model = self._route(body.model)
        req = chat_request(body, model.encoder, model.max_model_len, model.default_max_tokens, model.policy)
        return await self._respond(model, req, body, chat=True)

    # ---- plumbing -------------------------------------------------------------------------
    def _route(self, name: str) -> ServedModel:
        model = self.models.route(name)  # 400 model_not_found, counted as invalid under model "none"
        fates.current().model = model.name
        return model

    async def _submit(self, model: ServedModel, req: EngineRequest):
        """Starts the request on a replica; refusals become 400/503 before any byte is sent."""
        stream = model.engine.options(stream=True).generate.remote(req.prompt_ids, req.params, uuid.uuid4().hex,
                                                                    req.stream_steps)
        try:
            admission = await stream.__anext__()
        except BackPressureError:
            raise _overloaded("server overloaded: every engine replica's queue is full; retry later",
                              "refused") from None
        except fates.CANCELLED:  # the client left while its request waited for a replica
            stream.cancel()
            raise
        except Exception as exc:  # a replica died or is restarting: worth a retry
            stream.cancel()
            raise _overloaded(f"engine replica unavailable ({type(exc).__name__}); retry later", "failed") from None
        fates.current().replica = admission.get("replica", fates.NO_REPLICA)
        if admission["status"] == "rejected":
            raise _overloaded(f"server overloaded: {admission['message']}; retry later", "rejected")
        if admission["status"] == "invalid":
            message = admission["message"]
            fates.current().mark("invalid")
            raise RequestError(message, param=message.split(":", 1)[0])
        return stream

    async def _next(self, stream, deadline: float, timeout_s: float):
        try:
            return await asyncio.wait_for(stream.__anext__(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            fates.current().mark("timeout")
            raise RequestError(f"request timed out after {timeout_s:g} s", status=504,
                               type="server_error", code="timeout") from None
        except (StopAsyncIteration, RequestError, *fates.CANCELLED):
            raise
        except Exception as exc:
            fates.current().mark("failed")
            raise RequestError(f"engine replica failed mid-request ({type(exc).__name__}); retry", status=503,
                               type="server_error", code="replica_failed",
                               headers={"Retry-After": RETRY_AFTER_S}) from None

    async def _respond(self, model: ServedModel, req: EngineRequest, body: p.FastDLLMFields, chat: bool,
                       echo: str = ""):
        deadline = time.monotonic() + model.request_timeout_s
        stream = await self._submit(model, req)
        answer = _Answer(model.tokenizer, req)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = self._events(model, body.model, stream, answer, deadline, chat, include_usage)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            while not answer.done:
                answer.add(await self._next(stream, deadline, model.request_timeout_s))
        finally:
            if not answer.engine_done:  # a stop string, a timeout or the client leaving
                stream.cancel()
        usage = answer.usage()
        if chat:
            message = p.ChatResponseMessage(content=answer.text.text)
            response = p.ChatCompletionResponse(model=body.model, usage=usage, choices=[
                p.ChatChoice(message=message, finish_reason=answer.finish_reason)])
        else:
            response = p.CompletionResponse(model=body.model, usage=usage, choices=[
                p.CompletionChoice(text=echo + answer.text.text, finish_reason=answer.finish_reason)])
        return JSONResponse(response.model_dump())

    async def _events(self, model: ServedModel, name: str, stream, answer: _Answer, deadline: float, chat: bool,
                      include_usage: bool) -> AsyncIterator[str]:
        kind = "chatcmpl" if chat else "cmpl"
        head = {"id": p.new_id(kind), "created": int(time.time()), "model": name,
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
                out = await self._next(stream, deadline, model.request_timeout_s)
                if out.step is not None:  # only with stream_steps
                    yield sse(self.steps[model.name].chunk(chunk("", None), out.step, answer.params))
                    if not out.token_ids and not out.finished:
                        continue
                delta = answer.add(out)
                yield sse(chunk(delta, answer.finish_reason))
            if include_usage:
                yield sse({**head, "choices": [], "usage": answer.usage().model_dump()})
        except RequestError as exc:
            yield sse(exc.body())
        finally:
            if not answer.engine_done:  # the client left, a stop string or a timeout
                stream.cancel()
        yield sse("[DONE]")
