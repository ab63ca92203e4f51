"""How a deployment's replica range and resources become KubeRay worker groups."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from fastdllm_ray.deploy import KubeOptions, load_serve_config, render_k8s, resource_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_config() -> dict:
    return load_serve_config(ROOT / "deployments" / "llada-8b-instruct.yaml")


def worker_group(config: dict, **options) -> dict:
    service, _ = render_k8s(config, KubeOptions(name="t", **options))
    return service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


def test_eight_gpu_pods_hold_eight_replicas_each(gpu_config):
    args = gpu_config["applications"][0]["args"]
    args["autoscaling"].update(min_replicas=2, max_replicas=20)
    group = worker_group(gpu_config, gpus_per_pod=8)
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (1, 1, 3)
    requests = group["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["nvidia.com/gpu"] == "8"
    assert int(requests["cpu"]) == 8 * args["num_cpus_per_replica"] + KubeOptions(name="t").spare_cpus


def test_fixed_replica_count_pins_the_worker_group(gpu_config):
    args = gpu_config["applications"][0]["args"]
    args.pop("autoscaling")
    args["num_replicas"] = 3
    group = worker_group(gpu_config)
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (3, 3, 3)


def test_cpu_deployment_of_the_shipped_model_needs_no_gpu_volume_or_token():
    config = load_serve_config(ROOT / "deployments" / "tiny-cpu.yaml")
    service, _ = render_k8s(config, KubeOptions(name="t"))
    cluster = service["spec"]["rayClusterConfig"]
    for template in [cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]]:
        container = template["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in container["resources"]["requests"]
        assert "volumes" not in template["spec"] and "tolerations" not in template["spec"]
        assert "HF_TOKEN" not in {item["name"] for item in container["env"]}


def test_image_option_reaches_every_container(gpu_config):
    service, _ = render_k8s(gpu_config, KubeOptions(name="t", image="registry.example/fastdllm-ray:9"))
    cluster = service["spec"]["rayClusterConfig"]
    images = {cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]} | {
        group["template"]["spec"]["containers"][0]["image"] for group in cluster["workerGroupSpecs"]}
    assert images == {"registry.example/fastdllm-ray:9"}


def test_resource_names_are_dns_labels():
    assert resource_name("llada-1.5") == "fastdllm-llada-1-5"
    assert resource_name("My_Model") == "fastdllm-my-model"


def test_a_config_without_our_app_is_refused(gpu_config):
    other = copy.deepcopy(gpu_config)
    other["applications"][0]["import_path"] = "somebody.else:app"
    with pytest.raises(ValueError, match="applications"):
        render_k8s(other, KubeOptions(name="t"))
