"""The synchronous engine: bounded slots and queue, aborts that free their slot, blocks
streamed as they become final, and counters that move with the work done."""

from __future__ import annotations

import pytest

from fastdllm_ray import Engine, EngineConfig, GenerationParams, generate
from fastdllm_ray.engine import QueueFullError

PARAMS = GenerationParams(steps=8, gen_length=16, block_length=8, cache="dual", stop_at_eos=False)


def prompts(reference: dict, n: int) -> list[list[int]]:
    return [reference["cases"][i % 45]["prompt"][: 5 + 3 * i] for i in range(n)]


def run_to_end(engine: Engine) -> dict[str, object]:
    results = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out.result
    return results


def run_joining(engine: Engine, requests, join_every_step: bool = True) -> dict[str, object]:
    """Adds each (request_id, prompt, params) when no request waits, one per step, so each joins
    mid-run of the others (or all at once); steps to the end; returns the results by id."""
    results, pending = {}, list(requests)
    while pending or engine.has_unfinished():
        if pending and (not join_every_step or engine.num_waiting == 0):
            batch = pending[:1] if join_every_step else pending
            for rid, prompt, params in batch:
                engine.add_request(prompt, params, request_id=rid)
            pending = pending[len(batch):]
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out.result
    return results


def test_requests_beyond_max_num_seqs_wait_then_run(ref_model, reference):
    engine = Engine(ref_model, EngineConfig(max_num_seqs=2))
    ids = [engine.add_request(p, PARAMS) for p in prompts(reference, 5)]
    assert (engine.num_running, engine.num_waiting) == (0, 5)
    engine.step()
    assert (engine.num_running, engine.num_waiting) == (2, 3)
    results = run_to_end(engine)
    assert engine.stats.max_batch_size == 2
    assert (engine.num_running, engine.num_waiting) == (0, 0)
    alone = generate(ref_model, prompts(reference, 5), PARAMS)
    assert [(results[i].token_ids, results[i].nfe) for i in ids] == [(r.token_ids, r.nfe) for r in alone]


def test_beyond_the_free_seats_and_max_queue_the_request_is_refused(ref_model, reference):
    engine = Engine(ref_model, EngineConfig(max_num_seqs=1, max_queue=2))
    first, second, third, fourth = prompts(reference, 4)
    engine.add_request(first, PARAMS, request_id="first")  # for the free seat
    engine.add_request(second, PARAMS)
    engine.add_request(third, PARAMS)  # two queued
    with pytest.raises(QueueFullError):
        engine.add_request(fourth, PARAMS)
    engine.step()  # the first takes the seat: the queue is still full
    with pytest.raises(QueueFullError):
        engine.add_request(fourth, PARAMS)
    engine.abort("first")
    engine.step()  # the second takes the seat: one place in the queue frees up
    engine.add_request(fourth, PARAMS)
    assert len(run_to_end(engine)) == 3  # the second, third and fourth (the first ended cancelled)


def test_a_seat_freed_before_the_next_step_counts_as_room(ref_model, reference):
    # what the Serve router assumes: it allows max_num_seqs + max_queue requests in flight, and
    # one finished leaves room at once, not only after the engine's next step seats the queue
    engine = Engine(ref_model, EngineConfig(max_num_seqs=1, max_queue=1))
    first, second, third = prompts(reference, 3)
    engine.add_request(first, PARAMS, request_id="first")
    engine.step()
    engine.add_request(second, PARAMS)  # the queue is full
    while not any(out.finished and out.request_id == "first" for out in engine.step()):
        pass
    assert (engine.num_running, engine.num_waiting) == (0, 1)  # the second not seated yet
    engine.add_request(third, PARAMS)
    with pytest.raises(QueueFullError):
        engine.add_request(first, PARAMS)  # but only that seat


def test_abort_frees_the_slot_for_the_next_request(ref_model, reference):
    engine = Engine(ref_model, EngineConfig(max_num_seqs=1))
    first, second = prompts(reference, 2)
    engine.add_request(first, PARAMS, request_id="a")
    engine.step()
    engine.add_request(second, PARAMS, request_id="b")
    engine.step()
    assert (engine.num_running, engine.num_waiting) == (1, 1)
    engine.abort("a")
    outputs = engine.step()
    cancelled = [o.result for o in outputs if o.finished]
    assert [(r.request_id, r.finish_reason, r.nfe) for r in cancelled] == [("a", "cancelled", 2)]
    assert (engine.num_running, engine.num_waiting) == (1, 0)  # "b" took the freed slot at once
    results = run_to_end(engine)
    # the reused slot's stale cache and canvas do not leak into "b"
    alone = generate(ref_model, [second], PARAMS)[0]
    assert (results["b"].token_ids, results["b"].nfe) == (alone.token_ids, alone.nfe)
    assert engine.stats.finished == {"cancelled": 1, "length": 1}


def test_abort_of_a_waiting_request_runs_nothing(ref_model, reference):
    engine = Engine(ref_model, EngineConfig(max_num_seqs=1))
    first, second = prompts(reference, 2)
    engine.add_request(first, PARAMS, request_id="a")
    engine.add_request(second, PARAMS, request_id="b")
    engine.abort("b")
    results = run_to_end(engine)
    assert results["b"].finish_reason == "cancelled" and results["b"].nfe == 0
    assert results["a"].finish_reason == "length"


def test_each_block_is_streamed_when_final_and_adds_up_to_the_result(ref_model, reference):
    engine = Engine(ref_model)
    params = PARAMS.with_changes(steps=24, gen_length=20)  # 3 blocks, the last cut to 4 tokens
    engine.add_request(prompts(reference, 1)[0], params, request_id="r")
    blocks = []
    while engine.has_unfinished():
        blocks.extend(engine.step())
    assert [len(b.token_ids) for b in blocks] == [8, 8, 4]
    assert [b.finished for b in blocks] == [False, False, True]
    result = blocks[-1].result
    assert sum((b.token_ids for b in blocks), []) == result.token_ids
    assert len(result.block_times) == 3 and result.time_to_first_block is not None


def test_duplicate_or_invalid_request_is_refused_and_not_queued(ref_model):
    engine = Engine(ref_model)
    engine.add_request([1, 2, 3], PARAMS, request_id="x")
    with pytest.raises(ValueError, match="request_id"):
        engine.add_request([4, 5], PARAMS, request_id="x")
    with pytest.raises(ValueError, match="prompt"):
        engine.add_request([], PARAMS)
    with pytest.raises(ValueError, match="params"):
        engine.add_request([1, 2], {"steps": 8})
    assert engine.num_waiting == 1


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_stats_count_forwards_tokens_and_cache_hits(ref_model, reference, cache):
    engine = Engine(ref_model)
    params = PARAMS.with_changes(cache=cache, gen_length=32, steps=32)
    for p in prompts(reference, 3):
        engine.add_request(p, params)
    results = run_to_end(engine).values()
    stats = engine.stats
    assert stats.rows == sum(r.nfe for r in results) == 3 * 32
    assert stats.committed_tokens == 3 * 32 and stats.tokens_per_forward == 1.0
    assert stats.max_batch_size == 3 and stats.finished == {"length": 3}
    assert stats.model_forwards == 32  # the three sequences share every forward
    if cache == "none":
        assert set(stats.forwards) == {"full"} and stats.cache_hit_rate == 0.0
    else:  # one refresh per block per sequence, block steps served from the cache in between
        assert stats.forwards["full"] == 3 * 4 and stats.forwards[cache] == 3 * 4 * 7
        assert stats.cache_hit_rate > (0.5 if cache == "dual" else 0.05)


def test_dual_cache_hits_more_than_prefix(ref_model, reference):
    rates = {}
    for cache in ("prefix", "dual"):
        engine = Engine(ref_model)
        engine.add_request(prompts(reference, 1)[0], PARAMS.with_changes(cache=cache))
        run_to_end(engine)
        rates[cache] = engine.stats.cache_hit_rate
    assert 0.0 < rates["prefix"] < rates["dual"] < 1.0


def test_sampling_is_reproducible_for_a_seed(ref_model, reference):
    params = PARAMS.with_changes(temperature=1.0, remasking="random")
    prompt = prompts(reference, 1)
    first = generate(ref_model, prompt, params, seed=3)[0].token_ids
    assert generate(ref_model, prompt, params, seed=3)[0].token_ids == first
    assert generate(ref_model, prompt, params, seed=4)[0].token_ids != first


def test_abort_hits_only_the_request_it_named_not_a_later_one_with_its_id(ref_model, reference):
    engine = Engine(ref_model, EngineConfig(max_num_seqs=2))
    first, second = prompts(reference, 2)
    engine.add_request(first, PARAMS, request_id="x")
    engine.step()
    engine.abort("x")
    cancelled = [out for out in engine.step() if out.finished]
    assert [out.result.finish_reason for out in cancelled] == ["cancelled"]
    engine.abort("x")  # already gone: a no-op
    engine.add_request(second, PARAMS, request_id="x")
    results = run_to_end(engine)
    assert results["x"].finish_reason == "length"
    assert results["x"].token_ids == generate(ref_model, [second], PARAMS)[0].token_ids


@pytest.mark.parametrize("max_num_seqs", [1, 4])
def test_warm_up_leaves_no_trace(ref_model, reference, max_num_seqs):
    config = EngineConfig(max_num_seqs=max_num_seqs, max_model_len=64, seed=5)
    params = GenerationParams(steps=8, gen_length=16, block_length=8, cache="dual", stop_at_eos=False,
                              temperature=0.5)
    cold = Engine(ref_model, config)
    warm = Engine(ref_model, config)
    assert warm.warm_up(block_length=8) > 0
    assert not warm.has_unfinished() and warm.num_running == 0
    assert warm.stats.rows == 0 and not warm.stats.forwards and not warm.stats.finished
    for engine in (cold, warm):
        for p in prompts(reference, 3):
            engine.add_request(p, params, request_id=f"r{len(p)}")
    cold_results, warm_results = run_to_end(cold), run_to_end(warm)
    # same tokens: the warm-up drew nothing from the generator and left the canvas clean
    assert {k: r.token_ids for k, r in warm_results.items()} == {k: r.token_ids for k, r in cold_results.items()}
    assert warm.stats.rows == cold.stats.rows > 0
    warm.add_request(prompts(reference, 1)[0], params)
    with pytest.raises(RuntimeError, match="warm_up"):
        warm.warm_up()
