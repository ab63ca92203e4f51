"""OpenAI-shaped error responses, and the ASGI guard in front of every route: the body size
limit (413) and the optional bearer keys (401), checked before a body is parsed."""

from __future__ import annotations

import hmac
import logging
import json
from typing import Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fastdllm_ray.serve.convert import RequestError, error_body

KNOWN_ROUTES = {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/playground",
                "/generation/algorithms"}
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def error_response(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                   type: str = "invalid_request_error", headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse(error_body(message, param, code, type), status_code=status, headers=headers)


def _param_of(loc: tuple) -> Optional[str]:
    """('body', 'messages', 0, 'content') -> 'messages.0.content'; union type tags dropped."""
    parts = [str(p) for p in loc[1:] if not (isinstance(p, str) and ("[" in p or p.lower() in _TYPE_TAGS))]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            return error_response(400, f"request body is not valid JSON: {first.get('ctx', {}).get('error', '')}",
                                  code="invalid_json")
        param = _param_of(tuple(first.get("loc", ())))
        if first.get("type") == "missing" and param is None:
            return error_response(400, "request body is missing", code="invalid_json")
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return error_response(400, message, param=param, code=first.get("type"))

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.type, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # still an OpenAI body, without internals; the traceback goes to the replica's log
        logging.getLogger("ray.serve").exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__})", type="server_error",
                              code="internal_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return error_response(exc.status_code, str(exc.detail), code=code, type=kind,
                              headers=getattr(exc, "headers", None))


class GuardMiddleware:
    """Refuses oversized bodies (413) and, when keys are set, requests without a valid
    `Authorization: Bearer <key>` (401) on every route but /health. Keys are compared in
    constant time and never written anywhere."""

    def __init__(self, app, settings: dict) -> None:
        self.app = app
        self.settings = settings  # filled in by the ingress: api_keys, max_body_bytes, on_response

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = route_path(scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        status_seen = {}

        async def send_and_record(message) -> None:
            if message["type"] == "http.response.start":
                status_seen["code"] = message["status"]
            await send(message)

        refusal = self._refusal(path, headers)
        if refusal is not None:
            await refusal(scope, receive, send_and_record)
        else:
            limit = self.settings.get("max_body_bytes")
            seen = 0

            async def receive_limited():
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if limit and seen > limit:
                        # FastAPI passes an HTTPException raised while reading the body through
                        raise HTTPException(413, detail=f"request body exceeds {limit} bytes")
                return message

            await self.app(scope, receive_limited, send_and_record)
        on_response = self.settings.get("on_response")
        if on_response is not None and "code" in status_seen:
            # unknown paths share one label, so scanners cannot grow the metric without bound
            on_response(path if path in KNOWN_ROUTES else "other", status_seen["code"])

    def _refusal(self, path: str, headers: dict):
        limit = self.settings.get("max_body_bytes")
        length = headers.get("content-length")
        if limit and length is not None and length.isdigit() and int(length) > limit:
            return _too_large(limit)
        keys = self.settings.get("api_keys") or ()
        if keys and path.startswith("/v1"):
            auth = headers.get("authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
                message = "invalid API key" if token else "missing API key: send Authorization: Bearer <key>"
                return error_response(401, message, code="invalid_api_key", type="authentication_error",
                                      headers={"WWW-Authenticate": "Bearer"})
        return None


def route_path(scope) -> str:
    """The request's path inside the app: under a Serve route prefix (`/<app>/v1/...`) the
    scope's path still holds the prefix, which `root_path` names (FastAPI's routing drops it too)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root):]
    return path


def _too_large(limit: int) -> JSONResponse:
    return error_response(413, f"request body exceeds {limit} bytes", code="request_too_large")


def sse(data) -> str:
    """One server-sent event holding a JSON document (or the literal [DONE])."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"
