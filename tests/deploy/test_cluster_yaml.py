"""cluster.yaml is a Ray cluster launcher config that Ray's own schema and checks accept,
and it installs this package and starts the LLaDA-8B deployment."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_ray_schema(cluster):
    jsonschema.validate(cluster, SCHEMA)


def test_schema_check_catches_a_misspelt_key(cluster):
    broken = copy.deepcopy(cluster)
    broken["head_start_ray_command"] = broken.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError, match="head_start_ray_command"):
        jsonschema.validate(broken, SCHEMA)


def test_ray_up_would_accept_it_after_filling_defaults(cluster):
    # `ray up` runs these two before it touches the cloud
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_head_runs_no_replicas_and_workers_have_gpus(cluster):
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [spec for name, spec in types.items() if name != cluster["head_node_type"]]
    assert workers and all(spec["node_config"]["InstanceType"].startswith(("p4de", "p5", "g"))
                           for spec in workers)
    assert all(spec.get("min_workers", 0) == 0 for spec in workers)  # autoscaled from zero


def test_nodes_install_this_package_and_start_the_serve_app(cluster):
    for remote, local in cluster["file_mounts"].items():
        assert remote.startswith("~/fastdllm-ray/") and (ROOT / local).exists(), (remote, local)
    mounted = {Path(local).name for local in cluster["file_mounts"].values()}
    assert {"pyproject.toml", "fastdllm_ray", "deployments"} <= mounted  # what `pip install` and `serve deploy` read
    assert any("pip install" in cmd and "~/fastdllm-ray" in cmd for cmd in cluster["setup_commands"])
    head = " ".join(cluster["head_start_ray_commands"])
    assert "ray start --head" in head and "--metrics-export-port=8080" in head
    assert "serve deploy ~/fastdllm-ray/deployments/llada-8b-instruct.yaml" in head
    assert (ROOT / "deployments" / "llada-8b-instruct.yaml").exists()
    assert any("--address=$RAY_HEAD_IP:6379" in cmd for cmd in cluster["worker_start_ray_commands"])


def test_image_matches_the_pinned_ray(cluster):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[serve]=={ray.__version__}"' in pyproject
    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")
