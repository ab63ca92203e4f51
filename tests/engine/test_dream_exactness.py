"""The engine reproduces Fast-dLLM's Dream decoding (generation_utils.py without a cache,
generation_utils_block.py with the prefix or dual cache) token for token and in forwards,
for every refdata-dream case: alone, in one batch, and joining a running batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.engine import Engine, EngineConfig
from tests.engine.test_engine_scheduling import run_joining

CASES = json.loads((Path(__file__).parents[1] / "fixtures/refdata-dream/reference.json").read_text())["cases"]


def case_id(case: dict) -> str:
    prompts = list(dict.fromkeys(tuple(c["prompt"]) for c in CASES))
    rule = f"{case['alg']}{case.get('threshold', '')}"
    return (f"prompt{prompts.index(tuple(case['prompt']))}-{case['cache']}-{rule}-steps{case['steps']}"
            f"-gen{case['gen_length']}-block{case.get('block_length', case['gen_length'])}")


def params_of(case: dict) -> GenerationParams:
    return GenerationParams(steps=case["steps"], gen_length=case["gen_length"],
                            block_length=case.get("block_length", case["gen_length"]),
                            threshold=case.get("threshold"), alg=case["alg"], cache=case["cache"], stop_at_eos=False)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_dream_case_matches_reference_tokens_and_forwards(dream_model, case):
    result = generate(dream_model, [case["prompt"]], params_of(case))[0]
    assert result.token_ids == case["output"]
    assert result.nfe == case["forwards"]
    assert result.finish_reason == "length"


def test_all_dream_cases_in_one_batch_decode_as_alone(dream_model):
    alone = [generate(dream_model, [c["prompt"]], params_of(c))[0] for c in CASES]
    batched = generate(dream_model, [c["prompt"] for c in CASES], [params_of(c) for c in CASES])
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [r.nfe for r in batched] == [c["forwards"] for c in CASES]
    assert [r.token_ids for r in batched] == [c["output"] for c in CASES]


def test_dream_requests_joining_a_running_batch_match_reference(dream_model):
    engine = Engine(dream_model, EngineConfig(max_num_seqs=4, max_model_len=64))
    results = run_joining(engine, [(str(i), c["prompt"], params_of(c)) for i, c in enumerate(CASES)])
    for i, case in enumerate(CASES):
        assert results[str(i)].token_ids == case["output"], i
        assert results[str(i)].nfe == case["forwards"], i
