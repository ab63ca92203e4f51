"""K/V pool sizing: by default, and always on the CPU, the pool is max_num_seqs sequences of
max_model_len (or num_pages); on CUDA with gpu_memory_utilization set (opt-in) it is what the memory left after the weights, graphs and measured activations holds,
capped by what the seats can use, and an engine that cannot hold one max-length sequence is
refused at start with the figures. The CUDA arithmetic is checked here with given figures (a
profile as an H100 with LLaDA-8B loaded would measure it); the measuring probes run on every family."""

from __future__ import annotations

import pytest

from fastdllm_ray import Engine, EngineConfig, load_model
from fastdllm_ray.engine.memory import GIB, MemoryProfile, plan_from_profile, probe_decide, probe_forward
from tests.conftest import DREAM_CHECKPOINT, REF_CHECKPOINT

# LLaDA-8B on an 80 GB H100: 16.5 GiB in use with bf16 weights; 512 KiB of K/V per position
H100_LLADA = MemoryProfile(total=int(79.2 * GIB), in_use=int(16.5 * GIB), activation_per_token=150 * 1024,
                           decide_per_position=0.5 * 2**20, sampling_per_position=2.5 * 2**20,
                           kv_per_token=512 * 1024, hidden_bytes=8192)


def test_cpu_pool_is_max_num_seqs_sequences_of_max_model_len(ref_model):
    engine = Engine(ref_model, EngineConfig(max_num_seqs=3, max_model_len=200, page_size=64))
    assert engine.pool.num_pages == 3 * 4 and engine.memory.profile is None
    assert Engine(ref_model, EngineConfig(num_pages=5)).pool.num_pages == 5
    with pytest.raises(ValueError, match="gpu_memory_utilization: 1.5 is outside"):
        EngineConfig(gpu_memory_utilization=1.5)


def test_gpu_pool_takes_what_the_seats_need_when_the_memory_holds_it():
    plan = plan_from_profile(H100_LLADA, EngineConfig(max_num_seqs=4, max_model_len=4096, gpu_memory_utilization=0.9),
                             4096)
    assert plan.num_pages == 4 * 64 and plan.pages_fit > plan.num_pages


def test_gpu_pool_is_what_the_memory_holds_when_the_seats_would_need_more():
    config = EngineConfig(max_num_seqs=64, max_model_len=8192, gpu_memory_utilization=0.9)
    plan = plan_from_profile(H100_LLADA, config, 8192)
    p = H100_LLADA
    graphs = max(4096 * p.activation_per_token, 64 * 64 * p.decide_per_position)
    reserved = graphs + 64 * 64 * p.sampling_per_position + 64 * 8194 * 8 + 4096 * p.hidden_bytes
    expected = int((0.9 * p.total - p.in_use - reserved) // ((p.kv_per_token + p.activation_per_token) * 64))
    assert plan.num_pages == plan.pages_fit == expected < 64 * 128
    assert plan.seats_fit(8192) == expected // 128
    # a smaller share of the GPU holds fewer pages; fp8's smaller weights leave more
    assert plan_from_profile(p, EngineConfig(max_num_seqs=64, max_model_len=8192, gpu_memory_utilization=0.6),
                             8192).num_pages < expected
    lighter = MemoryProfile(**{**p.__dict__, "in_use": int(8.5 * GIB)})
    assert plan_from_profile(lighter, config, 8192).num_pages > expected


def test_engine_that_cannot_hold_one_max_length_sequence_is_refused_with_the_figures():
    config = EngineConfig(max_num_seqs=1, max_model_len=65536, gpu_memory_utilization=0.3)
    with pytest.raises(ValueError, match=r"gpu_memory_utilization: 0.3 of the GPU's 79.2 GiB leaves .* one sequence "
                                         r"of max_model_len 65536 needs .* or load the model with dtype 'fp8'"):
        plan_from_profile(H100_LLADA, config, 65536)
    with pytest.raises(ValueError, match=r"raise gpu_memory_utilization$"):  # already fp8: no such advice
        plan_from_profile(H100_LLADA, config, 65536, quantized=True)


@pytest.mark.parametrize("path", [REF_CHECKPOINT, DREAM_CHECKPOINT], ids=["llada", "dream"])
def test_memory_probes_run_the_family_forward_and_decision(path):
    model = load_model(path)
    probe_forward(model, 64)
    probe_decide(model, 128, sampling=False)
    probe_decide(model, 128, sampling=True)
