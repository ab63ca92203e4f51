"""The web playground: one static page (HTML, CSS and a little JavaScript, no build step)
that the ingress serves at /playground. It talks to the same /v1 API as any client, with
`stream_steps` on, and draws the answer as a grid of masked cells that fill in step by step.

The page itself holds nothing (no data, no key), so it is served like /health; everything it
does goes through /v1 with the API key typed into it, so it is behind the same keys.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from fastapi.responses import Response
from starlette.exceptions import HTTPException

PAGE = "playground.html"
_MEDIA_TYPES = {PAGE: "text/html; charset=utf-8", "playground.css": "text/css; charset=utf-8",
                "playground.js": "text/javascript; charset=utf-8"}
# the page runs only its own files and talks only to its own origin
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=len(_MEDIA_TYPES))
def _read(name: str) -> bytes:
    return files("fastdllm_ray.serve").joinpath("static", name).read_bytes()


def playground_file(enabled: bool, name: str = PAGE) -> Response:
    """The page or one of its files; 404 when the playground is off or the file is unknown."""
    if not enabled:
        raise HTTPException(404, detail="the playground is off (set playground: true in the app config)")
    if name not in _MEDIA_TYPES:
        raise HTTPException(404, detail=f"no playground file {name!r}")
    return Response(_read(name), media_type=_MEDIA_TYPES[name], headers=_HEADERS)
