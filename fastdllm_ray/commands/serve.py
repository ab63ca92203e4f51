"""`fastdllm-ray serve`: the OpenAI-compatible app on a local (or given) Ray cluster, built by
the same `build_app` as `serve run deployments/<name>.yaml`; blocks until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import socket
import time

DEFAULT_APP_NAME = "fastdllm"
DEFAULT_METRICS_PORT = 8080  # Ray's metrics export port on our KubeRay pods and in Ray's docs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model behind an OpenAI-compatible API",
                                   description=__doc__)
    parser.add_argument("--model", help="checkpoint directory or HF hub id (default: the shipped tiny model)")
    parser.add_argument("--name", action="append", dest="names",
                        help="model name clients send (default: from the checkpoint); repeat it to serve the model "
                        "under several names (the first is its name in metrics)")
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
                        help="size the K/V cache from GPU memory: the share of each GPU a replica may use in all, the "
                             "cache gets what is left (default: unset, the cache holds max-num-seqs x max-model-len)")
    parser.add_argument("--max-num-seqs", type=int, help="live sequences per replica (default 16)")
    parser.add_argument("--max-model-len", type=int, help="prompt + answer tokens per sequence")
    parser.add_argument("--max-queue", type=int, help="waiting requests per replica before 503 (default 64)")
    parser.add_argument("--no-playground", action="store_true", help="do not serve the web page at /playground")
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS or a new local one)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray cluster")
    parser.add_argument("--metrics-port", type=int,
                        help=f"Ray's metrics export port of a new local cluster (default {DEFAULT_METRICS_PORT}; "
                             "a cluster given by --address keeps its own)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The AppConfig the flags describe (validated; errors name the field)."""
    from fastdllm_ray.serve.config import AppConfig

    engine = {key: value for key, value in (("max_num_seqs", args.max_num_seqs), ("max_queue", args.max_queue),
                                             ("max_model_len", args.max_model_len),
                                             ("gpu_memory_utilization", args.gpu_memory_utilization))
              if value is not None}
    names = args.names or [None]
    settings: dict = {"model": args.model, "model_name": names[0], "model_aliases": names[1:],
                      "device": args.device, "dtype": args.dtype,
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


def cluster_address(args: argparse.Namespace) -> str | None:
    """The Ray cluster to join (as ray.init reads it), or None for a new local one."""
    return args.address or os.environ.get("RAY_ADDRESS") or None


def metrics_port_of(args: argparse.Namespace) -> int | None:
    """The metrics export port to give a new local cluster (None: joining one), checked free:
    Ray itself, given a taken port, fails 30 s later with a node start-up timeout that names
    no port."""
    if cluster_address(args):
        if args.metrics_port is not None:
            raise SystemExit("--metrics-port: sets the port of a cluster this command starts; a cluster given by "
                             "--address or $RAY_ADDRESS has its own (`ray start --metrics-export-port`)")
        return None
    port = DEFAULT_METRICS_PORT if args.metrics_port is None else args.metrics_port
    if not 1 <= port <= 65535:
        raise SystemExit(f"--metrics-port: {port} is not a TCP port (1-65535)")
    with socket.socket() as probe:  # bound as Ray's exporter binds it: every interface, SO_REUSEADDR
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # so a closed server's TIME_WAIT is no refusal
        try:
            probe.bind(("", port))
        except OSError as exc:
            raise SystemExit(f"--metrics-port: port {port} is taken ({exc.strerror}); another Ray cluster or "
                             "server holds it. Choose a free one: fastdllm-ray serve --metrics-port <port>") from None
    return port


def node_metrics_url(local: bool) -> str | None:
    """Ray's exporter of the node this process runs on (the one Ray reports, not the one asked for)."""
    import ray

    from fastdllm_ray.serve.metrics_proxy import exporter_address

    try:  # a line of the banner: never worth failing a deployed server for
        node_id = ray.get_runtime_context().get_node_id()
        node = next((n for n in ray.nodes() if n["NodeID"] == node_id), None)
    except Exception:
        return None
    address = exporter_address(node) if node else None
    if address is None:
        return None
    if local:  # it listens on loopback too; shown like the API's address
        address = f"127.0.0.1:{address.rsplit(':', 1)[1]}"
    return f"http://{address}/metrics"


def run(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from fastdllm_ray.serve.ray_env import apply_serve_env_defaults
    from fastdllm_ray.serve.replica import served_model_names

    config = config_from_args(args)
    address, metrics_port = cluster_address(args), metrics_port_of(args)
    if address is None:  # a new local cluster: its processes inherit these
        apply_serve_env_defaults()
        ray.init(address="local", num_cpus=args.num_cpus, _metrics_export_port=metrics_port)
    else:
        ray.init(address=address)
    try:  # Ctrl-C may come while the app is still deploying: it stops that too
        url = start(config, args.host, args.port)
        auth = " (bearer key required)" if config.api_keys else ""
        if config.playground:
            print(f"playground: {url}/playground", flush=True)
        print(f"metrics: {url}/metrics (the app's series from every node; no key needed)", flush=True)
        ray_metrics = node_metrics_url(local=address is None)
        if ray_metrics:
            print(f"ray metrics: {ray_metrics} (Ray's exporter of this node: every series it holds)", flush=True)
        served = " / ".join(repr(name) for name in served_model_names(config))
        print(f"serving {served} at {url}/v1{auth}; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
