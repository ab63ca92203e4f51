"""build_app's Serve options come from AppConfig: one GPU per replica on cuda, none on the CPU,
admission sized from the engine's capacity, autoscaling or a fixed replica count."""

from __future__ import annotations

from ray.serve import Application

from fastdllm_ray.serve.builder import build_app, ingress_options, replica_options, resolve_placement
from fastdllm_ray.serve.config import AppConfig


def test_cuda_replicas_take_one_gpu_and_cpu_replicas_none():
    assert replica_options(resolve_placement(AppConfig(device="cuda")))["ray_actor_options"]["num_gpus"] == 1
    assert replica_options(resolve_placement(AppConfig(device="cpu")))["ray_actor_options"]["num_gpus"] == 0
    explicit = resolve_placement(AppConfig(device="cuda", num_gpus_per_replica=0.5))
    assert replica_options(explicit)["ray_actor_options"]["num_gpus"] == 0.5


def test_admission_and_autoscaling_follow_the_engine_capacity():
    config = resolve_placement(AppConfig(device="cpu", engine={"max_num_seqs": 8, "max_queue": 24},
                                         autoscaling={"min_replicas": 0, "max_replicas": 4}))
    options = replica_options(config)
    assert (options["max_ongoing_requests"], options["max_queued_requests"]) == (32, 24)
    assert options["autoscaling_config"] == {"min_replicas": 0, "initial_replicas": 1, "max_replicas": 4,
                                             "target_ongoing_requests": 8}
    assert "num_replicas" not in options
    assert ingress_options(config)["max_ongoing_requests"] >= 4 * (32 + 24)


def test_explicit_settings_win():
    config = resolve_placement(AppConfig(device="cpu", num_replicas=3, max_ongoing_requests=5,
                                         max_queued_requests=2, autoscaling={"target_ongoing_requests": 3}))
    options = replica_options(config)
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert (options["max_ongoing_requests"], options["max_queued_requests"]) == (5, 2)


def test_build_app_accepts_the_config_file_args_form():
    app = build_app({"model_name": "tiny", "device": "cpu", "engine": {"max_num_seqs": 4}})
    assert isinstance(app, Application)
