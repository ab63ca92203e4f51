"""The engine decoding a model with FP8 weights on the CPU (the emulated path): the shipped
trained model answers held-out problems as well as in float, and EngineConfig(dtype="fp8")
quantizes the model it is given."""

from __future__ import annotations

import pytest

from fastdllm_ray import Engine, EngineConfig, GenerationParams, generate, load_model
from fastdllm_ray.eval import DecodingConfig, run_engine
from fastdllm_ray.model import default_model_path, fp8, load_tokenizer
from fastdllm_ray.train.data import problems
from tests.conftest import REF_CHECKPOINT
from tests.engine.test_engine_scheduling import run_to_end

HELD_OUT = problems(24, seed=1234, split="eval")  # the eval command's seed


@pytest.fixture(scope="module")
def shipped():
    path = default_model_path()
    return load_model(path), load_model(path, dtype="fp8"), load_tokenizer(path)


@pytest.mark.parametrize("config", [DecodingConfig("dual", "threshold", 32), DecodingConfig("prefix", "fixed", 16)],
                         ids=lambda c: c.name)
def test_shipped_model_in_fp8_answers_held_out_problems_as_in_float(shipped, config):
    full, quantized, tokenizer = shipped
    a = run_engine(full, tokenizer, HELD_OUT, config, batch_size=8)
    b = run_engine(quantized, tokenizer, HELD_OUT, config, batch_size=8)
    assert a.correct >= len(HELD_OUT) - 1  # the float model is right: the comparison means something
    assert b.correct >= a.correct - 1


def test_engine_config_dtype_fp8_quantizes_the_model_it_is_given():
    model = load_model(REF_CHECKPOINT)
    model.end_token_ids = ()
    params = GenerationParams(steps=8, gen_length=16, block_length=8, cache="dual", stop_at_eos=False)
    prompt = list(range(3, 20))
    engine = Engine(model, EngineConfig(max_num_seqs=2, dtype="fp8"))
    assert fp8.is_quantized(model)
    request = engine.add_request(prompt, params)
    result = run_to_end(engine)[request]
    assert result.error is None and len(result.token_ids) == 16
    # the same tokens as generate() on the quantized model, with no further quantization
    assert generate(model, [prompt], params)[0].token_ids == result.token_ids


@pytest.mark.parametrize("field, value, message", [
    ("dtype", "bfloat16", "dtype: 'bfloat16' is not 'fp8'"),
    ("gpu_memory_utilization", 0.0, r"gpu_memory_utilization: 0.0 is outside \(0, 1\]"),
    ("gpu_memory_utilization", 1.5, r"gpu_memory_utilization: 1.5 is outside \(0, 1\]"),
])
def test_engine_config_refuses_bad_dtype_and_memory_fraction_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**{field: value})
