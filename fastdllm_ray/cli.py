"""`fastdllm-ray` command line: each subcommand lives in fastdllm_ray/commands/<name>.py and
exposes `add_parser(subparsers)` (which sets `func`) so importing the CLI stays cheap."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("generate", "serve", "chat", "eval", "train", "render", "loadtest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdllm-ray", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"fastdllm_ray.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fastdllm_ray.commands.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
