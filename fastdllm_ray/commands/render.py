"""`fastdllm-ray render k8s deployments/<name>.yaml`: the KubeRay RayService (and the Service
for the OpenAI port) of a deployment file, so that the k8s/ manifests never drift from it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("render", help="render a deployment file for another launcher",
                                   description=__doc__)
    parser.add_argument("target", choices=["k8s"], help="k8s: a KubeRay RayService + Service")
    parser.add_argument("config", help="a Ray Serve config file, e.g. deployments/llada-8b-instruct.yaml")
    parser.add_argument("-o", "--output", help="write here instead of standard output")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when --output differs from the rendering")
    parser.add_argument("--name", help="RayService name (default: fastdllm-<config file stem>)")
    parser.add_argument("--image", help="container image with fastdllm-ray installed (k8s/Dockerfile)")
    parser.add_argument("--gpus-per-pod", type=int, help="GPUs per worker pod (default 1)")
    parser.set_defaults(func=run)


def render_text(config_path: str, name: str | None = None, image: str | None = None,
                gpus_per_pod: int | None = None, output: str | None = None) -> str:
    """The manifest text that `render k8s` writes for `config_path` (as the user spelled it)."""
    from fastdllm_ray.deploy import KubeOptions, load_serve_config, render_k8s, resource_name
    from fastdllm_ray.deploy.yaml_text import dump_documents

    config = load_serve_config(config_path)
    overrides = {key: value for key, value in
                 (("image", image), ("gpus_per_pod", gpus_per_pod)) if value is not None}
    options = KubeOptions(name=name or resource_name(Path(config_path).stem), **overrides)
    command = f"fastdllm-ray render k8s {config_path}" + (f" -o {output}" if output else "")
    extra = "".join(f" {flag} {value}" for flag, value in
                    (("--name", name), ("--image", image), ("--gpus-per-pod", gpus_per_pod)) if value)
    header = (f"Rendered from {config_path} by `{command}{extra}`.\n"
              "Edit the deployment file, not this one, and render again.")
    return dump_documents(render_k8s(config, options), header)


def run(args: argparse.Namespace) -> int:
    try:
        text = render_text(args.config, args.name, args.image, args.gpus_per_pod, args.output)
    except (OSError, ValueError) as exc:
        print(f"fastdllm-ray render: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if not args.output:
            print("fastdllm-ray render: --check needs --output", file=sys.stderr)
            return 2
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} differs from the rendering of {args.config}", file=sys.stderr)
            return 1
        return 0
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
