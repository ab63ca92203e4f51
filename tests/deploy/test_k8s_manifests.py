"""k8s/ holds valid Kubernetes objects, and each RayService is exactly the rendering of its
deployment file (so the two cannot drift)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fastdllm_ray.cli import main as cli_main
from fastdllm_ray.commands.render import render_text
from fastdllm_ray.deploy import load_serve_config, validate_serve_config
from fastdllm_ray.deploy.serve_config import replica_shape

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
K8S_VERSION = "1.33"  # a current Kubernetes; KubeRay 1.x supports it
DEPLOYMENTS = sorted(p.stem for p in (ROOT / "deployments").glob("*.yaml"))
CRD_KINDS = {("ray.io/v1", "RayService"), ("monitoring.coreos.com/v1", "PodMonitor")}


def k8s_objects() -> list[tuple[str, dict]]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        objects += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return objects


def rayservice(stem: str) -> dict:
    docs = list(yaml.safe_load_all((K8S / f"{stem}.yaml").read_text()))
    return next(doc for doc in docs if doc["kind"] == "RayService")


def pod_templates(service: dict) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def test_every_manifest_parses_into_named_objects():
    objects = k8s_objects()
    assert {kind for _, kind in CRD_KINDS} | {"Service", "PersistentVolumeClaim", "Secret"} <= {
        doc["kind"] for _, doc in objects}
    for name, doc in objects:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), name
    dashboard = json.loads((K8S / "grafana-dashboard.json").read_text())
    assert dashboard["panels"]


@pytest.mark.parametrize("name,doc", [item for item in k8s_objects()
                                      if (item[1]["apiVersion"], item[1]["kind"]) not in CRD_KINDS],
                         ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_core_objects_validate_against_kubernetes_openapi(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validation_catches_a_wrong_field():
    _, service = next(item for item in k8s_objects() if item[1]["kind"] == "Service")
    broken = copy.deepcopy(service)
    broken["spec"]["ports"][0]["targetPort"] = {"number": 8000}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("stem", DEPLOYMENTS)
def test_rayservice_pod_templates_validate_as_kubernetes_pods(stem):
    for template in pod_templates(rayservice(stem)):
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": stem},
                        "template": template}
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


@pytest.mark.parametrize("stem", DEPLOYMENTS)
def test_rayservice_is_the_rendering_of_its_deployment_file(stem, monkeypatch):
    monkeypatch.chdir(ROOT)  # the header names the paths as the render command was given them
    rendered = render_text(f"deployments/{stem}.yaml", output=f"k8s/{stem}.yaml")
    assert (K8S / f"{stem}.yaml").read_text() == rendered, (
        f"k8s/{stem}.yaml is stale: run fastdllm-ray render k8s deployments/{stem}.yaml -o k8s/{stem}.yaml")


@pytest.mark.parametrize("stem", DEPLOYMENTS)
def test_serve_config_v2_is_the_deployment_config_and_validates(stem):
    embedded = yaml.safe_load(rayservice(stem)["spec"]["serveConfigV2"])
    validate_serve_config(embedded, source=f"k8s/{stem}.yaml serveConfigV2")
    assert embedded == load_serve_config(ROOT / "deployments" / f"{stem}.yaml")


def test_no_rendered_manifest_without_its_deployment_file():
    rendered = {p.stem for p in K8S.glob("*.yaml")
                if any(d["kind"] == "RayService" for d in yaml.safe_load_all(p.read_text()) if d)}
    assert rendered == set(DEPLOYMENTS)


@pytest.mark.parametrize("stem", DEPLOYMENTS)
def test_worker_pods_fit_the_replicas_the_builder_asks_for(stem):
    args = load_serve_config(ROOT / "deployments" / f"{stem}.yaml")["applications"][0]["args"]
    shape = replica_shape(args)
    group = rayservice(stem)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]
    assert float(resources["requests"]["cpu"]) >= shape.cpus_per_replica
    assert float(resources["requests"].get("nvidia.com/gpu", 0)) >= shape.gpus_per_replica
    assert (group["minReplicas"], group["maxReplicas"]) == (
        shape.pods(shape.min_replicas, 1), shape.pods(shape.max_replicas, 1))
    assert rayservice(stem)["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


@pytest.mark.parametrize("stem", ["llada-8b-instruct", "llada-1.5", "dream-7b-instruct", "fast-dllm-v2-7b",
                                  "llada2-mini"])
def test_gpu_pods_read_the_hf_token_secret_and_cache_volume(stem):
    claim = yaml.safe_load((K8S / "hf-cache-pvc.yaml").read_text())["metadata"]["name"]
    secret = yaml.safe_load((K8S / "hf-token-secret.example.yaml").read_text())
    for template in pod_templates(rayservice(stem)):
        container = template["spec"]["containers"][0]
        env = {item["name"]: item for item in container["env"]}
        ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mount = container["volumeMounts"][0]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
        assert env["HF_HOME"]["value"] == mount["mountPath"]


@pytest.mark.parametrize("stem", DEPLOYMENTS)
def test_workers_are_ready_when_the_app_answers_through_serve(stem):
    port = load_serve_config(ROOT / "deployments" / f"{stem}.yaml")["http_options"]["port"]
    worker = pod_templates(rayservice(stem))[1]["spec"]["containers"][0]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/health", "port": port}


@pytest.mark.parametrize("stem", DEPLOYMENTS)
def test_openai_service_and_pod_monitor_select_the_ray_pods(stem):
    docs = list(yaml.safe_load_all((K8S / f"{stem}.yaml").read_text()))
    service = next(doc for doc in docs if doc["kind"] == "Service")
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    port = load_serve_config(ROOT / "deployments" / f"{stem}.yaml")["http_options"]["port"]
    assert service["spec"]["ports"][0]["targetPort"] == port
    head, *workers = pod_templates(rayservice(stem))
    assert not service["spec"]["selector"].items() <= head["metadata"]["labels"].items()
    for template in [head, *workers]:
        labels = template["metadata"]["labels"]
        if template is not head:
            assert service["spec"]["selector"].items() <= labels.items()
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports[monitor["spec"]["podMetricsEndpoints"][0]["port"]] == 8080


def test_render_command_prints_the_manifest(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli_main(["render", "k8s", "deployments/tiny-cpu.yaml"]) == 0
    assert capsys.readouterr().out == render_text("deployments/tiny-cpu.yaml")


def test_render_check_fails_on_a_drifted_manifest(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(ROOT)
    drifted = tmp_path / "tiny-cpu.yaml"
    drifted.write_text((K8S / "tiny-cpu.yaml").read_text().replace("max_num_seqs: 8", "max_num_seqs: 9"))
    assert cli_main(["render", "k8s", "deployments/tiny-cpu.yaml", "-o", str(drifted), "--check"]) == 1
    assert cli_main(["render", "k8s", "deployments/tiny-cpu.yaml", "-o", "k8s/tiny-cpu.yaml", "--check"]) == 0


def test_render_refuses_an_invalid_deployment_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications:\n- name: x\n  import_path: fastdllm_ray.serve.builder:build_app\n"
                   "  args: {device: tpu}\n")
    assert cli_main(["render", "k8s", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "applications[0].args" in err and "device" in err


def test_image_is_built_on_the_pinned_ray():
    import ray

    dockerfile = (K8S / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
    for stem in DEPLOYMENTS:
        assert rayservice(stem)["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
