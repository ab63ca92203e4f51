"""16 concurrent requests with different prompts and settings all finish, each with the text
it gets alone, batched in the engine; Ray's Prometheus endpoint shows the metrics move."""

from __future__ import annotations

import asyncio
import time

import pytest
from openai import AsyncOpenAI

from fastdllm_ray import generate, load_model, load_tokenizer
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME, default_model_path
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.convert import PromptEncoder, completion_request
from fastdllm_ray.serve.protocol import CompletionRequest
from serve_harness import replica_stats, running_app, scrape, total

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

SETTINGS = [  # cache modes x decoding rules x lengths; block lengths shared so rows batch
    {"max_tokens": 16, "block_length": 8, "steps": 16},
    {"max_tokens": 24, "block_length": 8, "steps": 12, "threshold": 0.7},
    {"max_tokens": 16, "block_length": 8, "steps": 16, "use_dual_cache": False},
    {"max_tokens": 32, "block_length": 8, "steps": 32, "use_cache": False, "factor": 1.0},
    {"max_tokens": 16, "block_length": 16, "steps": 8},
    {"max_tokens": 32, "block_length": 16, "steps": 32, "threshold": 0.9, "use_dual_cache": False},
    {"max_tokens": 20, "block_length": 8, "steps": 24},
    {"max_tokens": 16, "block_length": 8, "steps": 8, "use_cache": False},
]
REQUESTS = [{"prompt": f"{a}*{b}=", **SETTINGS[i % len(SETTINGS)]}
            for i, (a, b) in enumerate((i + 2, 3 * i + 1) for i in range(16))]


@pytest.fixture(scope="module")
def app():
    config = AppConfig(engine={"max_num_seqs": 16, "max_queue": 16})
    with running_app(config) as urls:
        yield urls


@pytest.fixture(scope="module")
def served(app):
    """The 16 answers, requested all at once."""
    client = AsyncOpenAI(base_url=f"{app[0]}/v1", api_key="unused", max_retries=0, timeout=180)

    async def ask(req: dict):
        fields = {k: v for k, v in req.items() if k not in ("prompt", "max_tokens")}
        return await client.completions.create(model=DEFAULT_MODEL_NAME, prompt=req["prompt"],
                                               max_tokens=req["max_tokens"], extra_body=fields)

    async def ask_all():
        return await asyncio.gather(*(ask(req) for req in REQUESTS))

    return asyncio.run(ask_all())


def test_concurrent_requests_each_get_the_text_they_get_alone(served):
    model, tokenizer = load_model(default_model_path()), load_tokenizer(default_model_path())
    encoder = PromptEncoder(tokenizer, model.config.embedding_size, model.config.mask_token_id)
    for req, reply in zip(REQUESTS, served):
        converted = completion_request(CompletionRequest(model=DEFAULT_MODEL_NAME, **req), encoder, 512)
        alone = generate(model, [converted.prompt_ids], converted.params)[0]
        assert reply.choices[0].text == tokenizer.decode(alone.token_ids, skip_special_tokens=True)
        assert reply.choices[0].finish_reason == alone.finish_reason
        assert (reply.usage.completion_tokens, reply.usage.nfe) == (len(alone.token_ids), alone.nfe)
    assert len({r.choices[0].text for r in served}) > 1  # different prompts, different answers


def test_requests_were_batched(served):
    stats = replica_stats()
    assert stats["max_batch_size"] > 1
    assert sum(stats["finished"].values()) >= len(REQUESTS) and stats["running"] == 0


def test_prometheus_endpoint_serves_the_metrics_with_moved_values(app, served):
    metrics_url, answered = app[1], len(REQUESTS)
    deadline, samples = time.monotonic() + 60, {}
    while time.monotonic() < deadline:  # Ray's agent exports every few seconds
        samples = scrape(metrics_url)
        done = (total(samples, "ray_fastdllm_requests_total", status="stop")
                + total(samples, "ray_fastdllm_requests_total", status="length"))
        answered_http = total(samples, "ray_fastdllm_http_requests_total", route="/v1/completions", code="200")
        # the ingress and the replica export from different processes, each on its own clock
        if done >= answered and answered_http >= answered and total(samples, "ray_fastdllm_peak_batch_size") > 1:
            break
        time.sleep(2)
    model = {"model": DEFAULT_MODEL_NAME}
    assert total(samples, "ray_fastdllm_request_latency_seconds_count", **model) >= answered
    assert total(samples, "ray_fastdllm_time_to_first_block_seconds_count", **model) >= answered
    assert total(samples, "ray_fastdllm_generated_tokens_total", **model) >= answered
    assert total(samples, "ray_fastdllm_prompt_tokens_total", **model) >= answered
    assert total(samples, "ray_fastdllm_nfe_total", **model) >= answered
    assert total(samples, "ray_fastdllm_forwards_total", kind="dual") > 0
    assert total(samples, "ray_fastdllm_tokens_per_forward", **model) > 0
    assert 0 < total(samples, "ray_fastdllm_cache_hit_rate", **model) < 1
    assert total(samples, "ray_fastdllm_peak_batch_size", **model) > 1
    assert "ray_fastdllm_queue_length" in samples and "ray_fastdllm_batch_size" in samples
    assert total(samples, "ray_fastdllm_http_requests_total", route="/v1/completions", code="200") >= answered
    assert all(s.labels.get("replica") for s in samples["ray_fastdllm_requests_total"])
