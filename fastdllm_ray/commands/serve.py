"""`fastdllm-ray serve`: the OpenAI-compatible app on a local (or given) Ray cluster, built by
the same `build_app` as `serve run deployments/<name>.yaml`; blocks until Ctrl-C."""

from __future__ import annotations

import argparse
import time

DEFAULT_APP_NAME = "fastdllm"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model behind an OpenAI-compatible API",
                                   description=__doc__)
    parser.add_argument("--model", help="checkpoint directory or HF hub id (default: the shipped tiny model)")
    parser.add_argument("--name", help="model name clients send (default: from the checkpoint)")
    scaling = parser.add_mutually_exclusive_group()
    scaling.add_argument("--replicas", type=int, help="fixed number of engine replicas")
    scaling.add_argument("--min-replicas", type=int, help="autoscaling lower bound (default 1)")
    parser.add_argument("--max-replicas", type=int, help="autoscaling upper bound (default: --min-replicas)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 to listen on every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", action="append", default=[], dest="api_keys",
                        help="accepted bearer key (repeatable; also $FASTDLLM_API_KEYS, comma separated)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "fp8"],
                        help="default: bfloat16 on a GPU, float32 on the CPU; fp8: linear weights in float8 e4m3")
    parser.add_argument("--gpu-memory-utilization", type=float,
                        help="share of each GPU a replica may use in all; the K/V cache gets what is left (default 0.9)")
    parser.add_argument("--max-num-seqs", type=int, help="live sequences per replica (default 16)")
    parser.add_argument("--max-model-len", type=int, help="prompt + answer tokens per sequence")
    parser.add_argument("--max-queue", type=int, help="waiting requests per replica before 503 (default 64)")
    parser.add_argument("--no-playground", action="store_true", help="do not serve the web page at /playground")
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS or a new local one)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray cluster")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The AppConfig the flags describe (validated; errors name the field)."""
    from fastdllm_ray.serve.config import AppConfig

    engine = {key: value for key, value in (("max_num_seqs", args.max_num_seqs), ("max_queue", args.max_queue),
                                             ("max_model_len", args.max_model_len),
                                             ("gpu_memory_utilization", args.gpu_memory_utilization))
              if value is not None}
    settings: dict = {"model": args.model, "model_name": args.name, "device": args.device, "dtype": args.dtype,
                      "api_keys": list(args.api_keys), "engine": engine, "playground": not args.no_playground}
    if args.replicas is not None:
        settings["num_replicas"] = args.replicas
    elif args.min_replicas is not None or args.max_replicas is not None:
        low = args.min_replicas if args.min_replicas is not None else 1
        settings["autoscaling"] = {"min_replicas": low, "max_replicas": args.max_replicas or max(1, low)}
    return AppConfig.model_validate(settings)


def start(config, host: str = "127.0.0.1", port: int = 8000, app_name: str = DEFAULT_APP_NAME) -> str:
    """Deploys the app on the connected Ray cluster and returns its base URL (non-blocking)."""
    from ray import serve

    from fastdllm_ray.serve.builder import build_app

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config), name=app_name, route_prefix="/", blocking=False)
    shown = "127.0.0.1" if host == "0.0.0.0" else host
    return f"http://{shown}:{port}"


def run(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from fastdllm_ray.serve.ray_env import apply_serve_env_defaults
    from fastdllm_ray.serve.replica import served_model_name

    config = config_from_args(args)
    if not args.address:  # a new local cluster: its processes inherit these
        apply_serve_env_defaults()
    ray.init(address=args.address, num_cpus=args.num_cpus if not args.address else None)
    try:  # Ctrl-C may come while the app is still deploying: it stops that too
        url = start(config, args.host, args.port)
        auth = " (bearer key required)" if config.api_keys else ""
        if config.playground:
            print(f"playground: {url}/playground", flush=True)
        print(f"serving {served_model_name(config)!r} at {url}/v1{auth}; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
