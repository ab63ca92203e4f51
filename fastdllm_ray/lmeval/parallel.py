"""Data parallelism the way lm-eval's own backends do it: under `accelerate launch` each process
(one GPU each, or a CPU process) holds its own model and engine, lm-eval hands each rank its
shard of the documents (by rank and world size), and the per-document results are gathered on
rank 0. This class is the part the backend supplies: rank, world size, device, and the three
collectives lm-eval's evaluator calls."""

from __future__ import annotations

import atexit
import logging
import os
from datetime import timedelta

import torch

# ranks finish their shards at different times and then wait in a gather: far longer than
# torch's default 30 minutes for a large task on a slow model
_GATHER_TIMEOUT = timedelta(hours=24)
logger = logging.getLogger(__name__)


class DataParallel:
    def __init__(self, device: str | None = None) -> None:
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by accelerate launch / torchrun
            from accelerate import Accelerator, InitProcessGroupKwargs

            cpu = device == "cpu" or not torch.cuda.is_available()
            self.accelerator = Accelerator(cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=_GATHER_TIMEOUT)])
            # under lm-eval's own CLI nothing else tears the group down (see leave_process_group)
            atexit.register(_destroy_process_group)
            # one device per process: accelerate's (cuda:<local rank>), whatever device says
            self.device = self.accelerator.device
        elif device and not (device.startswith("cuda") and not torch.cuda.is_available()):
            self.device = torch.device(device)
        else:
            # lm-eval's CLI says cuda:0 unless told otherwise, on a machine without a GPU too
            if device:
                logger.warning("device %s: no CUDA device here; running on the CPU", device)
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather(tensor) if self.world_size > 1 else tensor

    def gather_object(self, obj, dst: int = 0):
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, gathered, dst=dst)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()


def leave_process_group() -> None:
    """Every rank waits for the others to finish (rank 0 writes the results), then the group is torn
    down. A rank that exits while gloo's threads still run can abort ("terminate called without an
    active exception", SIGABRT), and torchrun then fails the whole run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    _destroy_process_group()


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
