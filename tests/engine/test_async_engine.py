"""AsyncEngine: a background thread drives the Engine; asyncio callers stream their blocks."""

from __future__ import annotations

import asyncio
import time

import pytest

from fastdllm_ray import Engine, EngineConfig, GenerationParams, generate
from fastdllm_ray.engine import QueueFullError
from fastdllm_ray.engine.async_engine import AsyncEngine, EngineLoopError

PROMPTS = [[5, 17, 42, 9], [100, 3, 250, 7, 8, 19], [33, 44]]
PARAMS = [
    GenerationParams(steps=8, gen_length=16, block_length=8, cache="dual"),
    GenerationParams(steps=12, gen_length=24, block_length=8, cache="prefix", threshold=0.5),
    GenerationParams(steps=8, gen_length=8, block_length=4, cache="none", factor=1.0),
]


@pytest.fixture
def async_engine(ref_model):
    engine = AsyncEngine(Engine(ref_model, EngineConfig(max_num_seqs=4, max_queue=8)))
    yield engine
    engine.shutdown()


async def collect(engine: AsyncEngine, prompt, params, request_id=None):
    return [out async for out in engine.generate(prompt, params, request_id)]


def test_streamed_blocks_add_up_to_the_direct_generate_result(async_engine, ref_model):
    expected = generate(ref_model, PROMPTS[:1], PARAMS[0])[0]
    outs = asyncio.run(collect(async_engine, PROMPTS[0], PARAMS[0]))
    assert [o.finished for o in outs] == [False, True]  # one output per block of 8
    assert sum((o.token_ids for o in outs), []) == expected.token_ids
    assert outs[-1].result.token_ids == expected.token_ids
    assert outs[-1].result.nfe == expected.nfe


def test_concurrent_requests_each_get_their_own_answer(async_engine, ref_model):
    expected = generate(ref_model, PROMPTS, PARAMS)

    async def main():
        return await asyncio.gather(*(collect(async_engine, p, q) for p, q in zip(PROMPTS, PARAMS)))

    results = asyncio.run(main())
    assert [r[-1].result.token_ids for r in results] == [e.token_ids for e in expected]
    assert async_engine.engine.stats.max_batch_size > 1


def test_bad_request_and_full_queue_raise_at_submit(ref_model):
    engine = AsyncEngine(Engine(ref_model, EngineConfig(max_num_seqs=1, max_queue=1)))
    long = GenerationParams(steps=64, gen_length=64, block_length=8, cache="none")

    async def main():
        with pytest.raises(ValueError, match="prompt"):
            engine.generate([], long)
        streams = []
        with pytest.raises(QueueFullError):
            for _ in range(3):  # one slot + one queue place: the third cannot fit
                streams.append(engine.generate(PROMPTS[0], long))
        for stream in streams:
            await stream.aclose()  # never started: closing is harmless

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()


def test_cancelled_consumer_aborts_its_request_and_frees_the_slot(async_engine):
    long = GenerationParams(steps=64, gen_length=64, block_length=8, cache="none")

    async def main():
        first_block = asyncio.Event()

        async def consume():
            async for _ in async_engine.generate(PROMPTS[0], long):
                first_block.set()

        task = asyncio.create_task(consume())
        await first_block.wait()  # 1 of 8 blocks done: the request is mid-flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):  # the abort takes effect at the engine's next step
            if not async_engine.engine.has_unfinished():
                break
            await asyncio.sleep(0.01)
        return await collect(async_engine, PROMPTS[1], PARAMS[1])

    outs = asyncio.run(main())
    assert async_engine.engine.stats.finished["cancelled"] == 1
    assert outs[-1].result.finish_reason == "length"
    assert async_engine.engine.num_running == 0 and async_engine.num_streams == 0


def test_a_failing_step_fails_live_requests_but_not_the_loop(async_engine, ref_model):
    real_step = async_engine.engine.step
    failures = iter([RuntimeError("injected fault")])

    def step_that_fails_once():
        fault = next(failures, None)
        if fault is not None:
            raise fault
        return real_step()

    async_engine.engine.step = step_that_fails_once

    async def main():
        with pytest.raises(EngineLoopError, match="injected fault"):
            await collect(async_engine, PROMPTS[0], PARAMS[0])
        return await collect(async_engine, PROMPTS[0], PARAMS[0])

    outs = asyncio.run(main())
    assert async_engine.loop_failures == 1 and async_engine.is_running
    assert outs[-1].result.token_ids == generate(ref_model, PROMPTS[:1], PARAMS[0])[0].token_ids


def test_idle_loop_sleeps_instead_of_stepping(async_engine):
    calls = []
    real_step = async_engine.engine.step
    async_engine.engine.step = lambda: calls.append(1) or real_step()
    asyncio.run(collect(async_engine, PROMPTS[0], PARAMS[0]))
    busy = len(calls)
    time.sleep(0.3)
    assert busy > 0 and len(calls) == busy
    assert async_engine.is_running
