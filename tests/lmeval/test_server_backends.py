"""lm-eval's own OpenAI-compatible backends, unchanged, against our server (one Serve app for
the module): local-completions (token-id prompts, chat template applied by lm-eval) and
local-chat-completions (messages, template applied by the server), the Fast-dLLM settings as
extra body fields through --gen_kwargs. They score every document as the backend in-process
does. Also `fastdllm-ray eval --base-url` with the server-script flags."""

from __future__ import annotations

import csv

import httpx
import pytest
from harness_run import ANSWERS_BOUND, FAST, GEN_DOCS, answers, evaluate

from fastdllm_ray.cli import build_parser, main
from fastdllm_ray.commands.serve import config_from_args
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME, default_model_path
from tests.serve.serve_harness import running_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def base_url():
    args = build_parser().parse_args(["serve", "--max-num-seqs", "16", "--max-queue", "64"])
    with running_app(config_from_args(args)) as (url, _):
        yield url


@pytest.mark.parametrize("backend, route, extra", [
    ("local-completions", "completions", f",tokenizer={default_model_path()}"),  # sends [[token ids]]
    ("local-chat-completions", "chat/completions", ""),
])
def test_lm_eval_openai_backend_scores_every_document_as_the_backend_does(base_url, direct_generation, backend,
                                                                           route, extra):
    model_args = f"model={DEFAULT_MODEL_NAME},base_url={base_url}/v1/{route},num_concurrent=8,max_retries=1{extra}"
    results = evaluate(backend, model_args, ["tiny_arith"], GEN_DOCS, gen_kwargs=FAST)
    assert answers(results) == answers(direct_generation)
    assert results["results"]["tiny_arith"]["exact_match,answer"] >= ANSWERS_BOUND


def test_likelihood_requests_get_a_400_naming_the_field(base_url):
    # what local-completions sends for loglikelihood: a diffusion LM has no per-token prompt logprobs
    reply = httpx.post(f"{base_url}/v1/completions", timeout=60, json={
        "model": DEFAULT_MODEL_NAME, "prompt": [[5, 6, 7]], "max_tokens": 1, "logprobs": 1, "echo": True})
    assert reply.status_code == 400
    assert "logprobs" in (reply.json()["error"]["param"] or "") + reply.json()["error"]["message"]


def test_eval_command_with_server_script_flags_runs_one_configuration(base_url, tmp_path, capsys):
    rc = main(["eval", "--base-url", base_url, "--use-cache", "--use-dual-cache", "--threshold", "0.9",
               "--quick-test", "--out-dir", str(tmp_path), "--no-progress"])
    assert rc == 0
    [row] = list(csv.DictReader((tmp_path / "eval.csv").open()))
    assert (row["cache"], row["schedule"], row["block_length"], row["num_problems"]) == ("dual", "threshold", "32", "20")
    assert float(row["accuracy"]) >= ANSWERS_BOUND
    assert "threshold 0.9" in capsys.readouterr().out
