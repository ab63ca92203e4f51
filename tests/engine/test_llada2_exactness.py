"""The engine reproduces LLaDA2.0's generate (its model's own, greedy at temperature 0) token for
token for every refdata-llada2 case (block 16 and 32, thresholds 0.5 to 1.0, prompts that fill
blocks or end inside one, answers cut by EOS or by gen_length, both eos_early_stop paths): alone,
all in one batch, and joining a running batch.

Forwards: the engine stops once no forward can change the answer (its first EOS has no mask
before it, or every returned position is decided), where the reference may go on (to the end of
the block, or through the last block past P + G). `reference_generate` below is the reference's
loop written out from refdata-llada2/README.md on our plain (recompute-everything) forward: it
reproduces every vector's output and forward count, and also records after which forward our
rule would stop; the engine's forwards must equal that count exactly, hence never more than
the reference's, and the same wherever the reference stops at the same point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastdllm_ray import GenerationParams, generate, load_model
from fastdllm_ray.decoding import num_to_commit
from fastdllm_ray.engine import Engine, EngineConfig
from tests.engine.test_engine_scheduling import run_joining

REFDATA = Path(__file__).parents[1] / "fixtures" / "refdata-llada2"
REFERENCE = json.loads((REFDATA / "reference.json").read_text())
CASES = REFERENCE["cases"]
MASK, EOS = REFERENCE["mask_id"], REFERENCE["eos_id"]


@pytest.fixture(scope="module")
def model():
    return load_model(REFDATA / "checkpoint")


def params_of(case: dict) -> GenerationParams:
    return GenerationParams(gen_length=case["gen_length"], block_length=case["block_length"],
                            threshold=case["threshold"], steps_per_block=case["effective_steps"])


def answer_of(case: dict) -> list[int]:
    """The vector's answer without the prompt (one eos_early_stop path returns prompt + answer)."""
    return case["output"][case["prompt_length"]:] if case["output_includes_prompt"] else case["output"]


@dataclass
class Run:
    output: list[int]  # what the reference returns
    forwards: int  # the reference's forwards
    final_after: int  # the forward after which no later forward can change the answer (our stop)
    computed: int  # positions the reference ran through the network
    computed_to_final: int  # of them, in its first `final_after` forwards


def _answer_final(x: list[int], prompt_len: int, gen_length: int) -> bool:
    for token in x[prompt_len:prompt_len + gen_length]:
        if token == MASK:
            return False
        if token == EOS:
            return True
    return True


@torch.inference_mode()
def reference_generate(model, case: dict) -> Run:
    """LLaDA2.0's generate (batch 1, no cache, greedy at temperature 0), step by step as the README says."""
    x = list(case["prompt"])
    P, G, B, S, t = len(x), case["gen_length"], case["block_length"], case["effective_steps"], case["threshold"]
    n_blocks = -(-(P + G) // B)
    x += [MASK] * (n_blocks * B - P)
    forwards, computed, final_after, computed_to_final = 0, 0, None, 0
    for block in range(P // B, n_blocks):
        start, end = block * B, (block + 1) * B
        for step in range(S):
            masked = torch.tensor(x[start:end]) == MASK
            if not masked.any():
                break
            logits = model(torch.tensor([x[:end]]), causal_block=B)[0, start:end]
            forwards, computed = forwards + 1, computed + end
            x0 = logits.argmax(dim=-1)
            confidence = torch.softmax(logits, dim=-1).gather(-1, x0[:, None])[:, 0]
            confidence = torch.where(masked, confidence, float("-inf"))
            quota = num_to_commit(step, B, S)
            above = confidence > t  # a float32 tensor against a Python float, as the reference compares
            chosen = above if int(above.sum()) >= quota else torch.zeros_like(masked).index_fill_(
                0, confidence.topk(min(quota, int(masked.sum()))).indices, True)
            for i in torch.nonzero(chosen).flatten().tolist():
                x[start + i] = int(x0[i])
            if final_after is None and _answer_final(x, P, G):
                final_after, computed_to_final = forwards, computed
            if case["eos_early_stop"] and EOS in [x[start + i] for i in torch.nonzero(chosen).flatten().tolist()]:
                eos = x.index(EOS)
                if MASK not in x[P:eos]:
                    return Run(x[:eos + 1], forwards, final_after, computed, computed_to_final)
        if EOS in x[P:end]:
            break
    answer = x[P:P + G]
    return Run(answer[:answer.index(EOS) + 1] if EOS in answer else answer, forwards, final_after, computed,
               computed_to_final)


@pytest.fixture(scope="module")
def reference_runs(model) -> list[Run]:
    return [reference_generate(model, case) for case in CASES]


def test_the_written_out_reference_reproduces_every_vector(reference_runs):
    assert [run.output for run in reference_runs] == [case["output"] for case in CASES]
    assert [run.forwards for run in reference_runs] == [case["forwards"] for case in CASES]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c["id"] for c in CASES])
def test_case_matches_reference_tokens_and_forwards(model, reference_runs, index):
    case, run = CASES[index], reference_runs[index]
    result = generate(model, [case["prompt"]], params_of(case))[0]
    assert result.token_ids == answer_of(case)
    assert result.nfe == run.final_after <= case["forwards"]
    assert result.finish_reason == ("stop" if case["stopped_on_eos"] else "length")


def test_forwards_equal_the_reference_where_it_stops_as_soon_as_the_answer_is_final(reference_runs):
    # the savings are real but not everywhere: most cases stop exactly where the reference does
    same = [case["id"] for case, run in zip(CASES, reference_runs) if run.final_after == case["forwards"]]
    fewer = [case["id"] for case, run in zip(CASES, reference_runs) if run.final_after < case["forwards"]]
    assert len(same) >= 12 and fewer  # 15 and 9 on these vectors
    assert {"public-21", "public-22"} <= set(fewer)  # EOS decided while masks were before it


def test_all_cases_in_one_batch_decode_as_alone(model, reference_runs):
    batched = generate(model, [c["prompt"] for c in CASES], [params_of(c) for c in CASES])
    assert [r.token_ids for r in batched] == [answer_of(c) for c in CASES]
    assert [r.nfe for r in batched] == [run.final_after for run in reference_runs]


def test_requests_joining_a_running_batch_match_reference(model, reference_runs):
    engine = Engine(model, EngineConfig(max_num_seqs=4, max_model_len=256, page_size=16))
    results = run_joining(engine, [(str(i), c["prompt"], params_of(c)) for i, c in enumerate(CASES)])
    assert [results[str(i)].token_ids for i in range(len(CASES))] == [answer_of(c) for c in CASES]
    assert [results[str(i)].nfe for i in range(len(CASES))] == [run.final_after for run in reference_runs]


def test_kept_kv_computes_a_fraction_of_the_positions_the_reference_recomputes(model, reference_runs):
    # the same forwards (the reference's first `final_after`), positions run through the network:
    # the reference feeds the whole canvas up to the current block every time (the same within a
    # first block that starts at position 0)
    engine = Engine(model, EngineConfig(max_num_seqs=1, max_model_len=256, page_size=16))
    for i, case in enumerate(CASES):
        before = engine.stats.computed_positions
        engine.add_request(case["prompt"], params_of(case), request_id=str(i))
        while engine.has_unfinished():
            engine.step()
        assert engine.stats.computed_positions - before <= reference_runs[i].computed_to_final, case["id"]
    same_forwards = sum(run.computed_to_final for run in reference_runs)
    assert engine.stats.computed_positions < same_forwards / 2.5  # 27,536 of 76,832 on these vectors


def test_streamed_blocks_add_up_to_the_answer(model):
    case = next(c for c in CASES if c["id"] == "public-16")  # 5 blocks of 16, not cut by EOS
    engine = Engine(model, EngineConfig(max_num_seqs=1))
    engine.add_request(case["prompt"], params_of(case), request_id="r")
    pieces = []
    while engine.has_unfinished():
        pieces += [out.token_ids for out in engine.step() if out.token_ids]
    assert sum(pieces, []) == answer_of(case)
    assert [len(p) for p in pieces] == [11, 16, 16, 16, 5]  # the first block holds the prompt's 5 tokens
