"""`fastdllm-ray train --model tiny-llada-arith --out DIR`: trains a shipped tiny model from
scratch on the CPU (its recipe: fastdllm_ray/train/recipes.py; the data: train/data.py and
train/chats.py), and writes a checkpoint directory that `serve --model DIR` serves."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a shipped tiny model from scratch", description=__doc__)
    from fastdllm_ray.train.config import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastdllm_ray.train.train import run as train

    return train(args)
