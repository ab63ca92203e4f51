"""deployments/*.yaml are Ray Serve configs that Serve's own schema accepts and that our
builder turns into the app they describe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from fastdllm_ray.deploy import load_serve_config
from fastdllm_ray.deploy.serve_config import BUILDER_IMPORT_PATH, replica_shape
from fastdllm_ray.serve.config import AppConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_FILES = sorted((ROOT / "deployments").glob("*.yaml"))


GPU_DEPLOYMENTS = ("llada-8b-instruct", "llada-1.5", "dream-7b-instruct", "fast-dllm-v2-7b", "llada2-mini")


def test_the_documented_deployments_exist():
    names = {path.stem for path in DEPLOYMENT_FILES}
    assert {"tiny-cpu", *GPU_DEPLOYMENTS} <= names


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: p.stem)
def test_deployment_file_validates_against_serve_schema(path):
    config = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert [app.import_path for app in schema.applications] == [BUILDER_IMPORT_PATH]
    AppConfig.model_validate(config["applications"][0]["args"])


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: p.stem)
def test_builder_builds_the_app_the_file_describes(path):
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app as serve_build_app

    app_spec = load_serve_config(path)["applications"][0]
    # what `serve run`/`serve deploy` do with import_path + args, short of starting replicas
    builder = import_attr(app_spec["import_path"])
    app = call_user_app_builder_with_args_if_necessary(builder, app_spec["args"])
    built = serve_build_app(app, name=app_spec["name"])
    deployments = {d.name: d for d in built.deployments}
    assert set(deployments) == {"OpenAIIngress", "EngineReplica"}
    engine = deployments["EngineReplica"]
    shape = replica_shape(app_spec["args"])
    assert engine.ray_actor_options["num_gpus"] == shape.gpus_per_replica
    assert engine.ray_actor_options["num_cpus"] == shape.cpus_per_replica
    scaling = engine._deployment_config.autoscaling_config
    if shape.min_replicas == shape.max_replicas and scaling is None:
        assert engine._deployment_config.num_replicas == shape.max_replicas
    else:
        assert (scaling.min_replicas, scaling.max_replicas) == (shape.min_replicas, shape.max_replicas)


def test_gpu_deployments_ask_one_bf16_gpu_per_replica_and_autoscale():
    for name in GPU_DEPLOYMENTS:
        args = load_serve_config(ROOT / "deployments" / f"{name}.yaml")["applications"][0]["args"]
        config = AppConfig.model_validate(args)
        assert (config.device, config.dtype, config.num_gpus_per_replica) == ("cuda", "bfloat16", 1)
        assert config.autoscaling.min_replicas >= 1 < config.autoscaling.max_replicas
        assert config.model_name == name


def test_tiny_cpu_deployment_serves_the_shipped_model_on_cpu():
    args = load_serve_config(ROOT / "deployments" / "tiny-cpu.yaml")["applications"][0]["args"]
    config = AppConfig.model_validate(args)
    assert (config.model, config.device, config.num_replicas) == (None, "cpu", 1)


def test_a_typo_in_args_is_refused_naming_the_field(tmp_path):
    config = yaml.safe_load((ROOT / "deployments" / "tiny-cpu.yaml").read_text())
    config["applications"][0]["args"]["engine"]["max_num_seq"] = 4
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"(?s)applications\[0\]\.args.*engine.max_num_seq"):
        load_serve_config(path)


def test_a_config_serve_rejects_is_refused(tmp_path):
    config = yaml.safe_load((ROOT / "deployments" / "tiny-cpu.yaml").read_text())
    config["applications"].append(dict(config["applications"][0]))  # duplicate app name
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="not a Ray Serve config"):
        load_serve_config(path)
