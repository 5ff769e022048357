"""Peak memory of one attention call: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the
growth of the peak resident set size, measured in a fresh process (``vit_lib.bench.memory_worker``).

Part of ``vit_lib.bench``; ``peak_memory_here`` is shown in chapter 8 (book/08_performance.ipynb).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from vit_lib.bench.attention_methods import attention_call, method_context, qkv_inputs

MiB = 2**20


def read_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``, e.g. ``VmRSS`` or ``VmHWM`` (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_here(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Extra bytes at the peak of one ``method`` call over what was in use just before it."""
    fn = attention_call(method)
    device = q.device
    with method_context(method), torch.inference_mode():
        if device.type == "cuda":
            fn(q, k, v)  # lazy CUDA/cuBLAS initialisation happens outside the measurement
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            out = fn(q, k, v)
            torch.cuda.synchronize(device)
            del out
            return torch.cuda.max_memory_allocated(device) - before
        # Warm up on a tiny problem: the code pages and thread pools that a first call maps in would
        # otherwise count as memory of the kernel. Its few KiB stay in the heap's free lists.
        fn(*(t[..., :8, :] for t in (q, k, v)))
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = read_status_kib("VmRSS")
        out = fn(q, k, v)
        peak = read_status_kib("VmHWM")
        del out
        return (peak - before) * 1024


def worker_command(method: str, n: int, dtype: torch.dtype, shape: dict[str, int]) -> list[str]:
    """The ``python -m vit_lib.bench.memory_worker`` command line that measures one CPU point."""
    args = [sys.executable, "-m", "vit_lib.bench.memory_worker", method, str(n), str(dtype)]
    args += [f"--{key.replace('_', '-')}={value}" for key, value in shape.items()]
    return [*args, f"--threads={torch.get_num_threads()}"]


def peak_memory(method: str, n: int, dtype: torch.dtype, shape: dict[str, int], device: torch.device) -> int:
    """Peak extra bytes for one call; on the CPU measured in a fresh Python process, so that no earlier
    point's freed-but-kept heap hides it."""
    if device.type == "cuda":
        q, k, v = qkv_inputs(n, dtype=dtype, device=device, **shape)
        return peak_memory_here(method, q, k, v)
    done = subprocess.run(
        worker_command(method, n, dtype, shape), capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return json.loads(done.stdout)["peak_bytes"]


def memory_method(device: torch.device) -> str:
    """How ``peak_memory`` measures on ``device``, in words (recorded with the figures)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during one call, minus memory allocated before it"
    return (
        "growth of peak resident set size (VmHWM after resetting it via /proc/self/clear_refs) during "
        "one call, in a fresh subprocess per point; inputs allocated before the reset"
    )
