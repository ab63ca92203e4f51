"""Ports for the servers the tests start."""

from __future__ import annotations

from fastdllm_ray.serve.local import free_port

__all__ = ["free_port"]
