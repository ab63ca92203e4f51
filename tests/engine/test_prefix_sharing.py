"""Prefix sharing: requests whose prompts begin alike hold the same K/V pages for their common
whole blocks (block-diffusion families only, where a finished block's K/V depend on nothing after
it). Outputs with sharing equal outputs without it token for token, and forwards that decode are
the same (a prefill the cache holds whole is counted apart); a page held by a running request is
never evicted; idle cached pages go least recently released first; LLaDA and Dream never share."""

from __future__ import annotations

import pytest

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.engine import Engine, EngineConfig
from fastdllm_ray.engine.page_pool import PagePool, prefix_keys
from tests.engine.test_engine_scheduling import run_joining
from tests.engine.test_fast_dllm_v2_exactness import CASES, params_of


def run(engine: Engine, requests, join_every_step: bool = False) -> dict:
    """(request_id, prompt, params) all at once, or one per step (each joining mid-run)."""
    return run_joining(engine, requests, join_every_step)


# ---- the pool ---------------------------------------------------------------------------------
def test_keys_chain_every_token_up_to_the_end_of_the_block_a_page_depends_on():
    tokens = list(range(100, 230))
    keys = prefix_keys(tokens, page_size=16, block=32)
    assert [end for _, end in keys] == [32, 32, 64, 64, 96, 96, 128, 128]  # a page of 16 depends on its block of 32
    assert prefix_keys(tokens[:70], 16, 32) == keys[:4]  # a prefix has the prefix's keys
    changed = tokens[:40] + [7] + tokens[41:]
    assert prefix_keys(changed, 16, 32)[:2] == keys[:2] and prefix_keys(changed, 16, 32)[2] != keys[2]
    assert prefix_keys(tokens, 16, 16)[0] != keys[0]  # other block sizes attend otherwise: other keys


def test_held_pages_are_never_evicted_and_idle_ones_go_least_recently_released_first():
    # a sequence releases its pages last to first, so a prefix loses its tail before its head
    # (a lookup walks from the head: a lost head would strand the rest)
    pool = PagePool(num_pages=6, page_size=16)
    a, b = pool.allocate(32), pool.allocate(32)  # two sequences, two pages each
    for page, key in zip(a + b, [b"a0", b"a1", b"b0", b"b1"]):
        pool.register(page, key)
    pool.free(b)  # b's pages are idle (released first), a's still held
    pool.free(a)
    c = pool.allocate(48)  # 2 free pages + 1 eviction: b's last page (the least recently released)
    assert pool.evictions == 1 and pool.lookup([(b"b1", 0)]) == [] and pool.lookup([(b"b0", 0)]) == [b[0]]
    shared = pool.lookup([(b"a0", 0), (b"a1", 0)])
    assert shared == a and pool.can_allocate(64, shared) is False  # 2 shared + 2 new > 1 free + 1 idle
    d = pool.allocate(32, shared)  # holding a's pages takes them out of the idle set
    assert d == a and pool.num_free == 1
    with pytest.raises(RuntimeError):
        pool.allocate(48)
    pool.free(c)
    pool.free(d)
    assert pool.num_free == 6 and pool.num_cached == 3  # a0, a1, b0 stay findable


def test_a_key_registered_twice_keeps_its_first_page():
    pool = PagePool(num_pages=4, page_size=16)
    first, second = pool.allocate(16), pool.allocate(16)
    pool.register(first[0], b"k")
    pool.register(second[0], b"k")
    assert pool.lookup([(b"k", 0)]) == first
    pool.free(second)  # never registered: back to the free list at once
    assert pool.num_cached == 1 and pool.num_free == 3


# ---- exact with sharing -----------------------------------------------------------------------
@pytest.mark.parametrize("page_size", [16, 32, 64])
def test_every_case_decodes_as_without_sharing_joining_mid_run_under_eviction(v2_model, page_size):
    # each refdata-v2 prompt has four cases; run them twice, in an order that mixes prompts, through
    # a pool too small to keep every prompt cached: pages are shared, evicted and computed again
    order = [i for _ in range(2) for i in range(len(CASES))]
    requests = [(f"{n}:{i}", CASES[i]["prompt"], params_of(CASES[i])) for n, i in enumerate(order)]
    engine = Engine(v2_model, EngineConfig(max_num_seqs=3, max_model_len=256, page_size=page_size,
                                           num_pages=3 * 256 // page_size))
    results = run(engine, requests, join_every_step=True)
    for n, i in enumerate(order):
        result = results[f"{n}:{i}"]
        assert result.token_ids == CASES[i]["output"], (n, i)
        assert result.nfe + result.forwards_saved == CASES[i]["forwards"], (n, i)
    assert engine.stats.cached_prompt_tokens > 0 and engine.stats.forwards_saved > 0
    assert engine.pool.evictions > 0
    assert engine.pool.num_free == engine.pool.num_pages  # every page came back (held by nobody)


def test_long_shared_prefix_is_computed_once_and_answers_do_not_change(v2_model):
    system = [(7 * i) % 480 + 10 for i in range(150)]  # a 150-token "system prompt": 4 whole blocks
    prompts = [system + [200 + q, 201 - q, 300 + 2 * q] for q in range(6)]
    params = GenerationParams(gen_length=64, threshold=0.9, stop_at_eos=False)
    plain = Engine(v2_model, EngineConfig(max_num_seqs=6, prefix_sharing=False))
    without = run(plain, [(str(i), p, params) for i, p in enumerate(prompts)])
    shared = Engine(v2_model, EngineConfig(max_num_seqs=6, page_size=32))
    first = run(shared, [("0", prompts[0], params)])
    rest = run(shared, [(str(i), p, params) for i, p in enumerate(prompts) if i])
    results = {**first, **rest}
    assert [results[str(i)].token_ids for i in range(6)] == [without[str(i)].token_ids for i in range(6)]
    assert [results[str(i)].nfe for i in range(6)] == [without[str(i)].nfe for i in range(6)]  # the question's
    # blocks run in the first block's forward either way: no forward of their own to save
    assert first["0"].cached_tokens == 0 and all(rest[str(i)].forwards_saved == 1 for i in range(1, 6))
    assert all(rest[str(i)].cached_tokens == 128 for i in range(1, 6))  # the 4 whole blocks of the system prompt
    assert shared.stats.computed_positions < plain.stats.computed_positions


def test_the_next_turn_reuses_the_last_turns_prompt_and_answer_blocks(v2_model):
    params = GenerationParams(gen_length=96, threshold=0.9, stop_at_eos=False)
    engine = Engine(v2_model, EngineConfig(max_num_seqs=2, page_size=32))
    turn1 = list(range(10, 80))  # 70 tokens: 2 whole blocks, then its tail opens the first block
    answer = run(engine, [("1", turn1, params)])["1"]
    turn2 = turn1 + answer.token_ids + [33, 44, 55]
    second = run(engine, [("2", turn2, params)])["2"]
    # every block turn 1 finished: its prefill's 64 positions and its three stored blocks (to 160)
    assert second.cached_tokens == 160
    alone = Engine(v2_model, EngineConfig(max_num_seqs=1, prefix_sharing=False))
    assert second.token_ids == run(alone, [("2", turn2, params)])["2"].token_ids


def test_canvas_families_never_share(ref_model, dream_model):
    for model in (ref_model, dream_model):
        engine = Engine(model, EngineConfig(max_num_seqs=2, page_size=16))
        params = GenerationParams(steps=16, gen_length=16, block_length=8, stop_at_eos=False)
        prompt = list(range(1, 70))
        results = run(engine, [("a", prompt, params)])
        results.update(run(engine, [("b", prompt, params)]))
        assert not engine.sharing and engine.pool.num_cached == 0
        assert results["b"].cached_tokens == 0
        assert results["a"].token_ids == results["b"].token_ids == generate(model, [prompt], params)[0].token_ids


def test_llada2_requests_share_their_prompt_blocks_and_decode_as_without(llada2_model):
    from tests.engine.test_llada2_exactness import CASES as LLADA2_CASES
    from tests.engine.test_llada2_exactness import answer_of
    from tests.engine.test_llada2_exactness import params_of as llada2_params

    order = [i for i in range(len(LLADA2_CASES)) for _ in range(2)]  # each case twice in a row
    requests = [(f"{n}:{i}", LLADA2_CASES[i]["prompt"], llada2_params(LLADA2_CASES[i])) for n, i in enumerate(order)]
    shared = run(Engine(llada2_model, EngineConfig(max_num_seqs=3, max_model_len=256, page_size=16)), requests,
                 join_every_step=True)
    alone = run(Engine(llada2_model, EngineConfig(max_num_seqs=3, max_model_len=256, page_size=16,
                                                  prefix_sharing=False)), requests, join_every_step=True)
    for n, i in enumerate(order):
        key = f"{n}:{i}"
        assert shared[key].token_ids == alone[key].token_ids == answer_of(LLADA2_CASES[i]), key
        assert shared[key].nfe == alone[key].nfe, key
    assert sum(r.cached_tokens for r in shared.values()) > 0
