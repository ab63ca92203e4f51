"""One streamed completion over HTTP, as the serving benchmarks read it: when the first
chunk came and how many completion tokens the final usage chunk counts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx


@dataclass
class Streamed:
    status: int
    error: bytes  # the start of the body when status is not 200
    first: float | None  # perf_counter() at the first chunk (None: no chunk came)
    done: float  # perf_counter() when the stream ended
    tokens: int  # completion tokens from the usage chunk


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict) -> Streamed:
    first, tokens = None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            return Streamed(response.status_code, (await response.aread())[:200], None, time.perf_counter(), 0)
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None:
                first = time.perf_counter()
    return Streamed(200, b"", first, time.perf_counter(), tokens)
