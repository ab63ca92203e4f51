"""Fast-dLLM v2's settings and where we differ from its reference on purpose: other families'
fields and bad values refused by name; a prompt exactly one block long is prefilled (the
reference ignores it); a sampled request beside greedy ones leaves them as they were; step events
add up to the answer."""

from __future__ import annotations

import pytest

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.engine import Engine, EngineConfig
from tests.engine.test_step_events import run_pair

PROMPT = [393, 303, 216, 388, 336, 17, 42]


@pytest.mark.parametrize("changes, field", [
    (dict(steps=64), "steps"),
    (dict(cache="dual"), "cache"),
    (dict(factor=1.0), "factor"),
    (dict(remasking="random"), "remasking"),
    (dict(alg="entropy"), "alg"),
    (dict(top_k=5), "top_k"),
    (dict(steps_per_block=4), "steps_per_block"),
    (dict(gen_length=16), "gen_length"),  # less than one block: no block would be decoded
])
def test_fields_that_do_not_apply_are_refused_by_name(v2_model, changes, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        generate(v2_model, [PROMPT], GenerationParams(**{"gen_length": 64, **changes}))


@pytest.mark.parametrize("changes, field", [
    (dict(sub_block_length=12), "sub_block_length"),  # does not divide the block of 32
    (dict(sub_block_length=0), "sub_block_length"),
    (dict(threshold=0.0), "threshold"),
    (dict(threshold=1.5), "threshold"),
    (dict(block_cache="yes"), "block_cache"),
])
def test_bad_values_are_refused_by_name(changes, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        GenerationParams(gen_length=64, **changes)


@pytest.mark.parametrize("field, value", [("sub_block_length", 8), ("block_cache", True)])
def test_v2_fields_are_refused_on_other_families(ref_model, dream_model, field, value):
    for model in (ref_model, dream_model):
        with pytest.raises(ValueError, match=f"^{field}: applies to Fast-dLLM v2 models"):
            generate(model, [[1, 2, 3]], GenerationParams(gen_length=16, block_length=8, **{field: value}))


def test_a_prompt_exactly_one_block_long_is_read(v2_model):
    # the reference skips the prefill when the prompt is exactly one block: every such prompt would
    # get the same continuation; we prefill it and carry the next id, as for any multiple of the block
    params = GenerationParams(gen_length=64, threshold=0.9, stop_at_eos=False)
    first, second = generate(v2_model, [list(range(1, 33)), list(range(101, 133))], params)
    assert first.token_ids != second.token_ids
    assert len(first.token_ids) == 2 * 32 + 1  # the prefill's carried id, two blocks of 31, their carried ids
    two_blocks = generate(v2_model, [list(range(1, 65))], params)[0]
    assert len(two_blocks.token_ids) == 65


def test_a_sampled_request_leaves_its_greedy_neighbours_unchanged(v2_model):
    params = GenerationParams(gen_length=64, threshold=0.9, block_cache=True)
    alone = generate(v2_model, [PROMPT], params)[0]
    hot = params.with_changes(temperature=0.8, top_p=0.9)
    batch = generate(v2_model, [PROMPT, PROMPT, PROMPT], [params, hot, params], seed=3)
    assert batch[0].token_ids == batch[2].token_ids == alone.token_ids
    assert batch[0].nfe == alone.nfe
    assert 500 not in batch[1].token_ids  # the mask id is never drawn
    again = generate(v2_model, [PROMPT, PROMPT, PROMPT], [params, hot, params], seed=3)
    assert again[1].token_ids == batch[1].token_ids  # seeded


@pytest.mark.parametrize("block_cache", [False, True])
def test_step_events_add_up_to_the_answer_and_change_nothing(v2_model, block_cache):
    prompt = list(range(1, 41))  # a prefill, then a first block holding the prompt's tail
    params = GenerationParams(gen_length=96, threshold=0.7, sub_block_length=8, block_cache=block_cache,
                              stop_at_eos=False)
    with_steps, plain = run_pair(v2_model, params, prompt)
    result = with_steps[-1].result
    assert (result.token_ids, result.nfe) == (plain[-1].result.token_ids, plain[-1].result.nfe)
    events = [o.step for o in with_steps]
    assert None not in events and len(events) == result.nfe
    committed = {}
    for event in events:
        for position, token in zip(event.positions, event.token_ids, strict=True):
            assert position not in committed
            committed[position] = token
    assert [committed[i] for i in range(len(result.token_ids))] == result.token_ids
    assert [e.block for e in events] == sorted(e.block for e in events)  # blocks in order


def test_pool_exhaustion_holds_requests_back_and_each_decodes_as_alone(v2_model):
    # pages are reserved at admission (prompt's whole blocks + the blocks asked for): a small pool
    # seats what fits, the rest wait, nothing is lost or mixed up
    params = GenerationParams(gen_length=96, threshold=0.9)
    prompts = [[i + 1] * (20 + 30 * i) for i in range(4)]
    alone = [generate(v2_model, [p], params)[0].token_ids for p in prompts]
    engine = Engine(v2_model, EngineConfig(max_num_seqs=4, max_model_len=256, page_size=16, num_pages=16))
    for i, p in enumerate(prompts):
        engine.add_request(p, params, request_id=str(i))
    results, most_running = {}, 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                results[int(out.request_id)] = out.result.token_ids
        most_running = max(most_running, engine.num_running)
    assert [results[i] for i in range(4)] == alone
    assert most_running < 4
