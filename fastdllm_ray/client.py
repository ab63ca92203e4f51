"""A small client for a running fastdllm-ray server's OpenAI API, on the standard library only
(so `fastdllm-ray chat` needs nothing that the server does not): list the models, and stream
a chat completion chunk by chunk. Every failure is an APIError holding a message for people:
the server's own error message when it sent one."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Optional


class APIError(Exception):
    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def models(self) -> list[str]:
        with self._open("GET", "/v1/models") as response:
            return [card["id"] for card in json.load(response)["data"]]

    def stream_chat(self, body: dict) -> Iterator[dict]:
        """POSTs a chat completion with stream: true; yields each chunk as a dict. Closing the
        iterator early closes the connection, which cancels the request on the server."""
        with self._open("POST", "/v1/chat/completions", {**body, "stream": True}) as response:
            try:
                for data in _event_data(response):
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:  # a failure after the stream began
                        raise APIError(chunk["error"].get("message") or "the server failed mid-answer")
                    yield chunk
            except (http.client.HTTPException, OSError) as exc:
                raise APIError(f"the connection broke mid-answer ({type(exc).__name__})") from None
        raise APIError("the answer stream ended early (the server went away?)")

    def _open(self, method: str, path: str, body: Optional[dict] = None):
        headers = {"Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise APIError(_error_message(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise APIError(f"cannot reach {self.base_url}: {reason}") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The server's OpenAI-style error message, else the status line and the start of the body."""
    text = exc.read().decode("utf-8", "replace")
    try:
        return json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}: {text[:300]}".rstrip(": ")


def _event_data(response) -> Iterator[str]:
    """The data of each server-sent event (lines `data: ...`, events separated by a blank line)."""
    lines: list[str] = []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line:
            if line.startswith("data:"):
                lines.append(line[5:].lstrip())
            continue
        if lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)
