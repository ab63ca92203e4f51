"""The prefix router's parts on their own: its keys are the engine's (a replica's pool finds the
pages a routed prompt's keys name), its memory of holders is bounded and least-recently-routed
first out, the busy rule's numbers, it applies only while every replica says it shares, and the
builder installs it where the engines share (Fast-dLLM v2) or may (a hub id it cannot read
offline), with Serve's own router for LLaDA and Dream. The router at work across replicas:
tests/scaleout/test_prefix_routing.py."""

from __future__ import annotations

import asyncio

import pytest
from ray.serve._private.common import RequestMetadata
from ray.serve.request_router import PendingRequest

from fastdllm_ray import GenerationParams
from fastdllm_ray.engine import Engine, EngineConfig
from fastdllm_ray.model import load_model
from fastdllm_ray.serve.builder import replica_options, routes_by_prefix
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.prefix_router import (
    PrefixAffinityRouter,
    PrefixTable,
    choose_holder,
    imbalance_for,
    request_keys,
    shared_page_size,
)
from tests.conftest import TINY_DREAM, TINY_V2, V2_CHECKPOINT
from tests.engine.test_prefix_sharing import run



def generate_call(prompt, params, method: str = "generate") -> PendingRequest:
    """A pending request as the ingress's handle makes it: EngineReplica.generate's arguments (made
    in an event loop, as the handle does: its future needs one)."""
    async def make() -> PendingRequest:
        return PendingRequest(args=[prompt, params, "rid", False], kwargs={},
                              metadata=RequestMetadata(request_id="r", internal_request_id="i", call_method=method))

    return asyncio.run(make())


def test_routed_keys_name_the_pages_a_replica_registered_for_that_prefix():
    engine = Engine(load_model(V2_CHECKPOINT), EngineConfig(max_num_seqs=2, page_size=32))
    params = GenerationParams(gen_length=32, threshold=0.9, stop_at_eos=False)
    system = [(7 * i) % 480 + 10 for i in range(150)]  # 4 whole blocks of 32, then 22 tokens
    run(engine, [("a", system + [200, 201], params)])
    keys = request_keys(generate_call(system + [300, 301, 302], params), page_size=32)
    assert len(keys) == 4  # one per page of the whole blocks
    assert len(engine.pool.lookup([(key, 0) for key in keys])) == 4  # the replica holds all of them
    other = request_keys(generate_call([11] + system[1:], params), page_size=32)
    assert engine.pool.lookup([(key, 0) for key in other]) == []


def test_only_generate_calls_with_a_whole_block_have_keys():
    params = GenerationParams(block_length=32)
    assert request_keys(None, 64) == []
    assert request_keys(generate_call(list(range(31)), params), 64) == []  # no whole block
    assert request_keys(generate_call(list(range(64)), params, method="stats"), 64) == []
    assert len(request_keys(generate_call(list(range(130)), params), 64)) == 2  # 128 positions, pages of 64


def test_the_longest_held_prefix_wins_and_dead_replicas_hold_nothing():
    table = PrefixTable()
    table.record([b"s0", b"s1"], "A")  # a system prompt sent to A
    table.record([b"s0", b"s1", b"t2"], "B")  # the same system prompt and more sent to B
    assert table.longest_holders([b"s0", b"s1", b"t2", b"x3"], alive={"A", "B"}) == ["B"]
    assert table.longest_holders([b"s0", b"s1", b"y2"], alive={"A", "B"}) == ["A", "B"]
    assert table.longest_holders([b"s0", b"s1", b"t2"], alive={"A"}) == ["A"]  # B is gone
    table.forget("A")
    assert table.longest_holders([b"s0"], alive={"A", "B"}) == ["B"]
    assert table.longest_holders([b"z0"], alive={"A", "B"}) == []


def test_memory_is_bounded_and_forgets_the_least_recently_routed_keys_first():
    table = PrefixTable(max_keys=3)
    table.record([b"a0", b"a1"], "A")
    table.record([b"b0"], "B")
    table.record([b"a0"], "A")  # a0 routed again: the oldest now is a1
    table.record([b"c0"], "C")
    assert len(table) == 3
    assert table.longest_holders([b"a0", b"a1"], alive={"A"}) == ["A"]  # a0 still known
    assert table.longest_holders([b"a1"], alive={"A"}) == []
    with pytest.raises(ValueError, match="max_keys"):
        PrefixTable(max_keys=0)


def test_a_holder_keeps_its_prefix_until_it_has_imbalance_more_ongoing_than_the_least_busy():
    assert [imbalance_for(seats) for seats in (1, 2, 4, 16, 32)] == [1, 1, 2, 8, 16]
    ongoing = {"A": 5, "B": 3, "C": 0}
    assert choose_holder(["A", "B"], ongoing, imbalance=4) == "B"  # the least busy holder: 3 - 0 < 4
    assert choose_holder(["A", "B"], ongoing, imbalance=3) is None  # 3 - 0 >= 3: power of two choices
    assert choose_holder(["A"], {"A": 7, "B": 0}, imbalance=8) == "A"
    assert choose_holder(["A"], {"B": 0}, imbalance=8) is None  # the holder's load is unknown


def test_the_rule_applies_only_while_every_replica_says_it_shares_with_one_page_size():
    v2 = {"prefix_sharing": True, "page_size": 64}
    assert shared_page_size([v2, v2]) == 64
    assert shared_page_size([v2, {"prefix_sharing": False, "page_size": 64}]) is None  # LLaDA, Dream
    assert shared_page_size([v2, {}]) is None  # a replica that said nothing
    assert shared_page_size([v2, {"prefix_sharing": True, "page_size": 32}]) is None  # mid rolling update
    assert shared_page_size([]) is None


def test_the_router_refuses_bad_settings_by_name():
    router = object.__new__(PrefixAffinityRouter)  # initialize_state only reads its kwargs
    with pytest.raises(ValueError, match="imbalance"):
        router.initialize_state(imbalance=0)
    with pytest.raises(ValueError, match="max_keys"):
        router.initialize_state(imbalance=2, max_keys=0)


def test_builder_gives_the_prefix_router_to_engines_that_share_or_may():
    v2 = AppConfig(model=str(TINY_V2), device="cpu", engine={"max_num_seqs": 4, "page_size": 32})
    router = replica_options(v2)["request_router_config"]
    assert router.request_router_class == "fastdllm_ray.serve.prefix_router.PrefixAffinityRouter"
    assert router.request_router_kwargs == {"imbalance": 2}
    for config in (AppConfig(device="cpu"), AppConfig(model=str(TINY_DREAM), device="cpu"),  # LLaDA, Dream
                   v2.model_copy(update={"prefix_routing": False}),
                   AppConfig(model=str(TINY_V2), device="cpu", engine={"prefix_sharing": False})):
        assert "request_router_config" not in replica_options(config)  # Serve's power of two choices
    # a hub id whose config.json is not on this machine: nothing is downloaded, the replicas will say
    assert routes_by_prefix(AppConfig(model="some-org/not-cached-here"))
