"""Every generation request's fate, counted once: what became of each request the ingress
received, so that `ray_fastdllm_requests_total` summed over its statuses equals
`ray_fastdllm_requests_received_total` (once nothing is in flight).

An outer ASGI middleware opens a `Fate` for each request to a generation route and settles
it when the route returns, raises or is cancelled. The route code marks what only it knows
(which model, which engine replica, a router refusal, a timeout); whatever it left unmarked
is read off the HTTP status, and a request that ended with no answer sent, or with an
answer cut short, was cancelled by its client. Statuses:

  stop, length   answered in full (the answer's finish_reason)
  cancelled      the client left before the answer ended (a dropped stream, a client timeout)
  timeout        request_timeout_s passed (504, or an error event in a stream)
  error          the engine failed on it, or an unexpected server error (500)
  failed         the engine replica died or could not be reached (503 replica_failed)
  rejected       the engine replica's queue was full (503 + Retry-After)
  refused        Serve's router refused it: every replica held max_ongoing + max_queued (503)
  invalid        a bad request (400: a field, the JSON, an unknown model)
  unauthorized   a missing or wrong API key (401)
  too_large      a body over max_body_bytes (413)
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Optional

from ray.exceptions import TaskCancelledError

from fastdllm_ray.serve.errors import route_path

GENERATION_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions"})
NO_MODEL = NO_REPLICA = "none"  # label values when a request never reached a model / a replica
# how a client's leaving reaches the route: asyncio's cancellation, or Ray's when it lands while
# the route awaits a replica (Serve's RequestCancelledError is a TaskCancelledError)
CANCELLED = (asyncio.CancelledError, TaskCancelledError)
_STATUS_BY_CODE = {400: "invalid", 401: "unauthorized", 403: "unauthorized", 404: "invalid", 405: "invalid",
                   413: "too_large", 422: "invalid", 429: "refused", 503: "refused", 504: "timeout"}


class Fate:
    """One request's outcome as the route learns it; the first status marked wins."""

    __slots__ = ("model", "replica", "status")

    def __init__(self) -> None:
        self.model = NO_MODEL
        self.replica = NO_REPLICA
        self.status: Optional[str] = None

    def mark(self, status: str) -> None:
        if self.status is None:
            self.status = status

    def settle(self, http_status: Optional[int]) -> str:
        """The final status: the one marked, else what the HTTP status says."""
        if self.status is None:
            if http_status is None or http_status == 200:  # no answer sent, or a stream cut off
                self.status = "cancelled"
            else:
                self.status = _STATUS_BY_CODE.get(http_status, "error" if http_status >= 500 else "invalid")
        return self.status


_current: ContextVar[Optional[Fate]] = ContextVar("fastdllm_fate", default=None)


def current() -> Fate:
    """The running request's fate (a detached one outside a request, e.g. in unit code)."""
    return _current.get() or Fate()


class FateMiddleware:
    """Opens and settles a Fate around each generation request. Outermost, so that it also
    sees the refusals of the middlewares inside it (401, 413)."""

    def __init__(self, app, settings: dict) -> None:
        self.app = app
        self.settings = settings  # the ingress puts its RequestFateMetrics under "fates"

    async def __call__(self, scope, receive, send) -> None:
        metrics = self.settings.get("fates")
        route = route_path(scope)
        if scope["type"] != "http" or route not in GENERATION_ROUTES or metrics is None:
            return await self.app(scope, receive, send)
        metrics.receive(route)
        fate, sent = Fate(), {}
        token = _current.set(fate)

        async def send_and_record(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except CANCELLED:  # Serve cancels a request whose client disconnected
            fate.mark("cancelled")
            raise
        except Exception:
            fate.mark("error")
            raise
        finally:
            _current.reset(token)
            metrics.settle(fate.model, fate.replica, fate.settle(sent.get("status")))
