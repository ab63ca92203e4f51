"""A training run's settings and their command-line flags (no torch here: `fastdllm-ray
--help` stays fast)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

RECIPE_NAMES = ("tiny-llada-arith", "tiny-dream-arith", "tiny-v2-arith")  # recipes.RECIPES' keys


@dataclass
class TrainConfig:
    model: str = "tiny-llada-arith"  # a key of recipes.RECIPES
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    num_examples: int = 200_000  # the pool batches are drawn from
    chat_fraction: float = 0.5  # of the pool: conversations; the rest single questions of every task
    bf16: int = 1  # bfloat16 autocast (fast where the CPU has bfloat16 instructions)
    compile: int = 1  # torch.compile the forward on a GPU (0: eager); the CPU always runs eagerly
    max_minutes: float | None = None  # fewer steps (printed) when the run would take longer
    # start from this checkpoint's weights (a shipped name or a directory of the same recipe)
    # instead of the seed's random ones: a second stage on new data
    init_from: str | None = None
    log_every: int = 100


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--device", default="cpu")
    for name, value in asdict(TrainConfig()).items():
        kind = {"model": str, "lr": float, "min_lr": float, "weight_decay": float, "grad_clip": float,
                "max_minutes": float, "chat_fraction": float,
                "init_from": str}.get(name, int)
        choices = list(RECIPE_NAMES) if name == "model" else None
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value, choices=choices)
