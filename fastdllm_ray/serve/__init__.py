"""Serving layer: Ray Serve deployments, the OpenAI-compatible ingress, protocol and metrics.

`build_app` is imported lazily so that reading `serve.config` does not start importing Ray.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "build_app":
        from fastdllm_ray.serve.builder import build_app

        return build_app
    raise AttributeError(name)


__all__ = ["build_app"]
