"""AppConfig.models: several models behind one ingress, each entry laid over the top-level
config; build_app makes one engine deployment per model. And the scale-out options: the
autoscaler's delays pass through, and replicas drain their requests before they stop."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fastdllm_ray.serve.builder import build_app, engine_deployment_name, ingress_options, replica_options
from fastdllm_ray.serve.config import AppConfig


def test_an_entry_overrides_the_top_level_key_by_key():
    config = AppConfig(device="cpu", num_replicas=2, engine={"max_num_seqs": 4, "max_queue": 9}, models=[
        {"model_name": "a"},
        {"model": "/ckpt/b", "model_name": "b", "engine": {"max_queue": 3}, "autoscaling": {"max_replicas": 3}},
    ])
    a, b = config.model_configs()
    assert (a.model_name, a.num_replicas, a.engine.max_num_seqs, a.engine.max_queue) == ("a", 2, 4, 9)
    assert (b.model, b.engine.max_num_seqs, b.engine.max_queue) == ("/ckpt/b", 4, 3)
    assert b.num_replicas is None and b.autoscaling.max_replicas == 3  # asked for autoscaling: autoscaled
    assert AppConfig(model_name="solo").model_configs()[0].model_name == "solo"


@pytest.mark.parametrize("entry, field", [
    ({"api_keys": ["k"]}, "models.0.api_keys"),
    ({"engine": {"max_num_seqs": 0}}, "models.0.engine.max_num_seqs"),
    ({"max_replicas": 3}, "models.0.max_replicas"),
])
def test_a_bad_entry_is_refused_naming_it(entry, field):
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        AppConfig(models=[entry])


def test_two_entries_serving_one_name_are_refused():
    with pytest.raises(ValueError, match=r"models\.1\.model_name: 'x'"):
        build_app({"device": "cpu", "models": [{"model_name": "x"}, {"model_name": "x", "num_replicas": 2}]})


@pytest.mark.parametrize("models, field", [
    ([{"model_name": "x", "model_aliases": ["y"]}, {"model_name": "y", "num_replicas": 2}],
     r"models\.1\.model_name: 'y'"),
    ([{"model_name": "x"}, {"model_name": "z", "model_aliases": ["x"]}], r"models\.1\.model_aliases: 'x'"),
])
def test_a_name_or_alias_served_by_two_entries_is_refused(models, field):
    with pytest.raises(ValueError, match=field):
        build_app({"device": "cpu", "models": models})


def test_name_repeated_on_the_command_line_serves_the_model_under_each():
    from fastdllm_ray.cli import build_parser
    from fastdllm_ray.commands.serve import config_from_args
    from fastdllm_ray.serve.replica import served_model_names

    args = build_parser().parse_args(["serve", "--name", "tiny", "--name", "llada-8b-instruct", "--name", "llada"])
    config = config_from_args(args)
    assert (config.model_name, config.model_aliases) == ("tiny", ["llada-8b-instruct", "llada"])
    assert served_model_names(config) == ["tiny", "llada-8b-instruct", "llada"]
    with pytest.raises(ValidationError, match="model_aliases"):
        AppConfig(model_aliases=[" "])


def test_each_model_gets_its_own_engine_deployment():
    config = {"device": "cpu", "models": [{"model_name": "a"}, {"model_name": "b", "num_replicas": 3}]}
    ingress = build_app(config)._bound_deployment
    engines = ingress.init_args[1]
    assert {name: bound._bound_deployment.name for name, bound in engines.items()} == {
        "a": "EngineReplica-a", "b": "EngineReplica-b"}
    assert engines["b"]._bound_deployment.num_replicas == 3
    assert engine_deployment_name("a", num_models=1) == "EngineReplica"  # one model: the name dashboards know
    # the ingress can hand every replica of every model its fill
    per_model = [replica_options(model) for model in AppConfig.model_validate(config).model_configs()]
    assert ingress_options(AppConfig.model_validate(config))["max_ongoing_requests"] >= 2 * sum(
        o["max_ongoing_requests"] + o["max_queued_requests"] for o in per_model)


def test_autoscaling_delays_pass_through_and_replicas_drain_before_stopping():
    config = AppConfig(device="cpu", request_timeout_s=120, autoscaling={
        "min_replicas": 1, "max_replicas": 4, "upscale_delay_s": 5, "downscale_delay_s": 300})
    options = replica_options(config)
    scaling = options["autoscaling_config"]
    assert (scaling["upscale_delay_s"], scaling["downscale_delay_s"]) == (5, 300)
    assert "look_back_period_s" not in scaling  # unset: Serve's default
    # a replica removed by the autoscaler finishes what it holds: up to a whole request
    assert options["graceful_shutdown_timeout_s"] >= 120
