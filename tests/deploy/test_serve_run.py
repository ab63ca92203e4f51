"""`serve run deployments/tiny-cpu.yaml` starts the app on a real Ray and it answers."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def test_tiny_cpu_deployment_answers_a_chat_completion(tiny_cpu_app):
    response = httpx.post(f"{tiny_cpu_app.base_url}/v1/chat/completions", timeout=60, json={
        "model": tiny_cpu_app.model_name,
        "messages": [{"role": "user", "content": "12+7="}],
        "max_tokens": 16,
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == tiny_cpu_app.model_name
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] > 0


def test_tiny_cpu_deployment_lists_its_model(tiny_cpu_app):
    models = httpx.get(f"{tiny_cpu_app.base_url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [tiny_cpu_app.model_name]
