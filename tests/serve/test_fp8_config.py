"""dtype fp8 and gpu_memory_utilization from the serve flags and config files to the replica's
engine: `--dtype fp8 --gpu-memory-utilization 0.8` become AppConfig fields, bad values are refused
naming the field, and a replica built from such a config runs its engine on FP8 weights."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fastdllm_ray.cli import build_parser
from fastdllm_ray.commands.serve import config_from_args
from fastdllm_ray.model import fp8
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.replica import EngineReplica


def test_serve_flags_set_dtype_fp8_and_the_memory_share():
    args = build_parser().parse_args(["serve", "--dtype", "fp8", "--gpu-memory-utilization", "0.8"])
    config = config_from_args(args)
    assert config.dtype == "fp8" and config.engine.gpu_memory_utilization == 0.8
    assert AppConfig().engine.gpu_memory_utilization is None  # opt-in until measured on a GPU


@pytest.mark.parametrize("settings, field", [({"dtype": "fp4"}, "dtype"),
                                             ({"engine": {"gpu_memory_utilization": 1.2}}, "gpu_memory_utilization"),
                                             ({"engine": {"gpu_memory_utilization": 0}}, "gpu_memory_utilization")])
def test_bad_dtype_or_memory_share_is_refused_naming_the_field(settings, field):
    with pytest.raises(ValidationError, match=field):
        AppConfig.model_validate(settings)


def test_replica_from_an_fp8_config_runs_its_engine_on_fp8_weights():
    config = AppConfig(device="cpu", dtype="fp8", engine={"max_num_seqs": 2, "warm_up": False})
    replica = EngineReplica.func_or_class(config.model_dump())  # the class Serve would construct
    try:
        engine = replica.engine.engine
        assert fp8.is_quantized(engine.model)
        assert replica.stats()["running"] == 0 and engine.pool.num_pages == 2 * -(-engine.max_model_len // 64)
    finally:
        replica.engine.shutdown(timeout=5)
