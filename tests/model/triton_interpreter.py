"""Running the MoE Triton kernels where there is no GPU: Triton's interpreter, in a subprocess.

The interpreter must be chosen before Triton is imported (TRITON_INTERPRET=1), and a test
process has already imported it, so a test module computes its cases in `python its_file OUT`
(`results_of`) and checks the saved results in the test process. Three gaps of Triton 3.6's
interpreter against the GPU are closed for that run (`interpreter_as_gpu`), and every buffer
the kernels allocate starts as garbage (`poison_new_buffers`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[2]


def results_of(test_file: str, out: Path) -> dict:
    """What `python test_file OUT` saved, run under the interpreter with the kernels forced."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "FASTDLLM_MOE_BACKEND": "triton",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, test_file, str(out)], env=env, check=True, timeout=900, cwd=ROOT)
    return torch.load(out)


def interpreter_as_gpu() -> None:
    """Make Triton 3.6's interpreter compute what the GPU computes for these kernels: it holds
    bf16 as uint16 bit patterns, so (1) tl.dot multiplied the bit patterns (the GPU multiplies
    bf16 values, exactly, accumulating in float32) and (2) float32 -> bf16 casts truncated (the
    GPU rounds to nearest even); (3) a scalar argument is a one-element array, which numpy >= 2.4
    refuses to turn into the int a loop bound needs."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter as ti

    def as_float32(t):
        if t.dtype == tl.bfloat16:
            bits = torch.from_numpy(np.ascontiguousarray(t.data).view(np.int16))
            return ti.TensorHandle(bits.view(torch.bfloat16).float().numpy(), tl.float32)
        return t

    dot, cast, patch_tensor = ti.InterpreterBuilder.create_dot, ti.InterpreterBuilder.cast_impl, ti._patch_lang_tensor
    ti.InterpreterBuilder.create_dot = lambda self, a, b, d, *rest: dot(self, as_float32(a), as_float32(b), d, *rest)

    def cast_impl(self, src, dst_type):
        if src.dtype == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16)
            return ti.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return cast(self, src, dst_type)

    def patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    ti.InterpreterBuilder.cast_impl = cast_impl
    ti._patch_lang_tensor = patch_lang_tensor


def poison_new_buffers() -> None:
    """Every torch.empty from here on holds NaN or 0 (a real pair id, expert 0): what a CUDA
    graph's memory holds from an earlier replay. A kernel that read an entry nobody wrote this
    call would change the result."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(float("nan") if t.is_floating_point() else 0)

    torch.empty = poisoned
