"""A deployment serving several models behind one ingress renders one worker group sized for
all of their replicas."""

from __future__ import annotations

from pathlib import Path

from fastdllm_ray.deploy import KubeOptions, load_serve_config, render_k8s

ROOT = Path(__file__).resolve().parents[2]


def test_the_worker_group_holds_every_model_s_replicas():
    config = load_serve_config(ROOT / "deployments" / "llada-8b-instruct.yaml")
    args = config["applications"][0]["args"]
    args["autoscaling"].update(min_replicas=1, max_replicas=3)
    args["models"] = [{"model_name": "llada-8b-instruct"},
                      {"model": "GSAI-ML/LLaDA-1.5", "model_name": "llada-1.5", "num_replicas": 2}]
    service, _ = render_k8s(config, KubeOptions(name="t", gpus_per_pod=1))
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["maxReplicas"]) == (1 + 2, 3 + 2)
    container = group["template"]["spec"]["containers"][0]
    assert "HF_TOKEN" in {item["name"] for item in container["env"]}  # hub models: the token is mounted
