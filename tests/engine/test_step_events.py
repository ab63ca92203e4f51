"""Step events (`stream_steps`): one per forward, saying which answer positions it committed
with which tokens. They add up to the answer, change nothing in decoding, and requests that
do not ask for them get none."""

from __future__ import annotations

import asyncio

import pytest

from fastdllm_ray import Engine, EngineConfig, GenerationParams
from fastdllm_ray.engine.async_engine import AsyncEngine

PROMPT = [5, 17, 42, 9, 100, 3]
RULES = {"fixed": {}, "threshold": {"threshold": 0.5}, "factor": {"factor": 1.0}}


def run_pair(model, params: GenerationParams, prompt: list[int] = PROMPT, **config) -> tuple[list, list]:
    """The same prompt twice in one batch, once with step events and once without."""
    engine = Engine(model, EngineConfig(max_num_seqs=2, **config))
    engine.add_request(prompt, params, request_id="steps", stream_steps=True)
    engine.add_request(prompt, params, request_id="plain")
    outs: dict[str, list] = {"steps": [], "plain": []}
    while engine.has_unfinished():
        for out in engine.step():
            outs[out.request_id].append(out)
    return outs["steps"], outs["plain"]


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_step_events_add_up_to_the_answer_and_change_nothing(ref_model, cache, rule):
    params = GenerationParams(steps=16, gen_length=24, block_length=8, cache=cache, **RULES[rule])
    with_steps, plain = run_pair(ref_model, params)
    result, plain_result = with_steps[-1].result, plain[-1].result
    assert (result.token_ids, result.nfe) == (plain_result.token_ids, plain_result.nfe)
    assert all(o.step is None for o in plain)  # not asked for: none
    assert [o.token_ids for o in with_steps if o.token_ids] == [o.token_ids for o in plain if o.token_ids]

    events = [o.step for o in with_steps]
    assert None not in events and len(events) == result.nfe  # one per forward
    committed = {}
    for event in events:
        for position, token in zip(event.positions, event.token_ids, strict=True):
            assert position not in committed, "a position is committed once"
            assert position // params.block_length == event.block
            committed[position] = token
    assert [committed[i] for i in range(len(result.token_ids))] == result.token_ids
    mask = ref_model.config.mask_token_id
    assert mask not in committed.values()


def test_a_fixed_schedule_commits_its_count_per_step_in_order(ref_model):
    # 16 steps over 16 tokens in 2 blocks: one position per forward, blocks left to right
    params = GenerationParams(steps=16, gen_length=16, block_length=8, cache="dual")
    with_steps, _ = run_pair(ref_model, params)
    events = [o.step for o in with_steps]
    assert [len(e.positions) for e in events] == [1] * 16
    assert [(e.block, e.step, e.remaining) for e in events] == (
        [(0, s, 8 - s) for s in range(1, 9)] + [(1, s, 8 - s) for s in range(1, 9)])
    # the block becomes final with its last step: the two ride on the same output
    assert [bool(o.token_ids) for o in with_steps] == [False] * 7 + [True] + [False] * 7 + [True]
    assert with_steps[-1].finished and with_steps[-1].step is events[-1]


def test_positions_past_the_requested_length_are_not_reported(ref_model):
    # 10 answer tokens decode as two blocks of 8; the 6 padding positions are never shown
    params = GenerationParams(steps=16, gen_length=10, block_length=8, cache="prefix")
    with_steps, _ = run_pair(ref_model, params)
    positions = sorted(p for o in with_steps for p in o.step.positions)
    assert positions == list(range(10))
    assert with_steps[-1].result.token_ids == [t for o in with_steps for t in o.token_ids]


def test_the_async_engine_streams_step_events_of_the_requests_that_ask(ref_model):
    params = GenerationParams(steps=8, gen_length=16, block_length=8, cache="dual", threshold=0.5)
    engine = AsyncEngine(Engine(ref_model, EngineConfig(max_num_seqs=4)))

    async def both():
        async def collect(stream_steps: bool):
            return [o async for o in engine.generate(PROMPT, params, stream_steps=stream_steps)]
        return await asyncio.gather(collect(True), collect(False))

    try:
        with_steps, plain = asyncio.run(both())
    finally:
        engine.shutdown()
    assert len(with_steps) == with_steps[-1].result.nfe and all(o.step for o in with_steps)
    assert len(plain) == 2 and all(o.step is None for o in plain)  # one output per block, as before
