"""The engine reproduces Fast-dLLM v2's generate (its model's own, temperature 0) token for token
and in forwards for every refdata-v2 case (both block sizes, every sub-block size and threshold,
with and without the block cache, 12 stopping on the stop id): alone, all in one batch, and
joining a running batch; a request decodes as if alone whatever its neighbours. Forwards: those
run plus those spared (a prefill that predicts nothing runs inside the first block's first forward,
or the prefix cache holds it whole), which together are the reference's."""

from __future__ import annotations

import pytest

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.engine import Engine, EngineConfig
from tests.engine.test_engine_scheduling import run_joining


def params_of(case: dict) -> GenerationParams:
    return GenerationParams(gen_length=case["max_new_tokens"], block_length=case["block_size"],
                            sub_block_length=case["small_block_size"], threshold=case["threshold"],
                            block_cache=case["use_block_cache"])


def case_id(case: dict) -> str:
    return (f"L{len(case['prompt'])}-bs{case['block_size']}-sbs{case['small_block_size']}-t{case['threshold']}"
            f"-new{case['max_new_tokens']}{'-blockcache' if case['use_block_cache'] else ''}")


def _cases():
    import json
    from tests.conftest import V2_REFDATA

    return json.loads((V2_REFDATA / "reference.json").read_text())["cases"]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_case_matches_reference_tokens_and_forwards(v2_model, case):
    result = generate(v2_model, [case["prompt"]], params_of(case))[0]
    assert result.token_ids == case["output"]
    assert result.nfe + result.forwards_saved == case["forwards"]
    assert result.finish_reason == ("stop" if case["stopped"] else "length")


def test_all_cases_in_one_batch_decode_as_alone(v2_model):
    batched = generate(v2_model, [c["prompt"] for c in CASES], [params_of(c) for c in CASES])
    assert [r.token_ids for r in batched] == [c["output"] for c in CASES]
    assert [r.nfe + r.forwards_saved for r in batched] == [c["forwards"] for c in CASES]


def test_requests_joining_a_running_batch_match_reference(v2_model):
    engine = Engine(v2_model, EngineConfig(max_num_seqs=4, max_model_len=256, page_size=16, prefix_sharing=False))
    results = run_joining(engine, [(str(i), c["prompt"], params_of(c)) for i, c in enumerate(CASES)])
    results = [results[str(i)] for i in range(len(CASES))]
    assert [r.token_ids for r in results] == [c["output"] for c in CASES]
    assert [r.nfe + r.forwards_saved for r in results] == [c["forwards"] for c in CASES]


def test_streamed_outputs_add_up_to_the_answer(v2_model):
    # the carried ids and each finished block come out as they become final
    case = next(c for c in CASES if len(c["prompt"]) == 70 and not c["stopped"] and c["block_size"] == 32)
    engine = Engine(v2_model, EngineConfig(max_num_seqs=1))
    engine.add_request(case["prompt"], params_of(case), request_id="r")
    pieces = []
    while engine.has_unfinished():
        pieces += [out.token_ids for out in engine.step() if out.token_ids]
    assert sum(pieces, []) == case["output"]
    assert len(pieces) > case["max_new_tokens"] // case["block_size"]  # blocks and carried ids, not one piece
