"""The K/V page pool: a full pool holds requests back (seats free or not) instead of letting a
sequence write into pages another holds, neighbours decode exactly what they decode alone, and
a request that could never fit is refused when it is added."""

from __future__ import annotations

import pytest

from fastdllm_ray import Engine, EngineConfig, GenerationParams, generate
from fastdllm_ray.engine.page_pool import PagePool

from tests.engine.test_engine_scheduling import prompts, run_to_end

PARAMS = GenerationParams(steps=8, gen_length=16, block_length=8, cache="dual", stop_at_eos=False)


def test_pool_hands_out_each_page_once_and_takes_it_back():
    pool = PagePool(num_pages=5, page_size=16)
    a, b = pool.allocate(33), pool.allocate(16)  # 3 pages, 1 page
    assert (len(a), len(b)) == (3, 1) and not set(a) & set(b)
    assert not pool.can_allocate(17) and pool.can_allocate(16)
    with pytest.raises(RuntimeError, match="2 pages asked for, 1 free"):
        pool.allocate(20)
    pool.free(a)
    assert pool.num_free == 4 and sorted(pool.allocate(64)) == sorted(set(range(5)) - set(b))


def test_full_pool_holds_requests_back_and_neighbours_decode_as_alone(ref_model, reference):
    # 4 seats but 5 pages of 16 positions: every sequence (21-36 positions) needs 2-3 pages,
    # so at most two run at once and the others wait for pages, not for seats
    engine = Engine(ref_model, EngineConfig(max_num_seqs=4, page_size=16, num_pages=5))
    batch = prompts(reference, 6)
    ids = [engine.add_request(p, PARAMS) for p in batch]
    held_by_pages, results = 0, {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out.result
        assert engine.pool.num_free >= 0 and engine.stats.kv_cache_usage <= 1
        if engine.num_waiting and engine.num_running < 4:
            held_by_pages += 1
    assert held_by_pages > 0 and engine.stats.max_batch_size <= 2
    assert engine.pool.num_free == 5  # every page came back
    alone = generate(ref_model, batch, PARAMS)
    assert [(results[i].token_ids, results[i].nfe) for i in ids] == [(r.token_ids, r.nfe) for r in alone]


def test_request_larger_than_the_pool_is_refused_by_name(ref_model, reference):
    engine = Engine(ref_model, EngineConfig(max_num_seqs=4, page_size=16, num_pages=2))
    long_prompt = reference["cases"][0]["prompt"][:20]  # 20 + 16 positions: 3 pages
    with pytest.raises(ValueError, match="prompt"):
        engine.add_request(long_prompt, PARAMS)
    assert (engine.num_waiting, engine.pool.num_free) == (0, 2)
    fits = engine.add_request(long_prompt[:10], PARAMS)  # 26 positions: 2 pages
    assert run_to_end(engine)[fits].token_ids == generate(ref_model, [long_prompt[:10]], PARAMS)[0].token_ids
