"""Measurement primitives shared by the benchmarks: the environment a figure depends on, a timer
that uses every thread it was given, the matmul ceiling, a progress bar and error lines.

Part of ``vit_lib.bench`` (chapter 8, book/08_performance.ipynb).
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# The vector-instruction flags that decide which of torch's CPU kernels run (and how fast bfloat16
# is: without avx512_bf16 or AMX a bfloat16 matmul is emulated); two machines that both call
# themselves "AMD EPYC" can differ here.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def cpu_flags(wanted: tuple[str, ...] = VECTOR_FLAGS) -> list[str]:
    """Which of ``wanted`` the CPU's ``/proc/cpuinfo`` flags list (Linux; ``[]`` elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in have]
    return []


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None where it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: hardware, thread count and library versions."""
    env = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels ATen dispatches to
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "vit_pytorch": package_version("vit-pytorch"),
        "timm": package_version("timm"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def blocked_autorange(
    stmt: str, env: dict[str, Any], min_run_time: float, threads: int | None = None
) -> benchmark.Measurement:
    """``torch.utils.benchmark.Timer(stmt).blocked_autorange``, run on ``threads`` threads (default:
    torch's current count; the Timer's own default is one thread, which would time a different
    program from the one the rest of the process runs)."""
    timer = benchmark.Timer(
        stmt=stmt, globals=env, num_threads=torch.get_num_threads() if threads is None else threads
    )
    return timer.blocked_autorange(min_run_time=min_run_time)


def measured_matmul_flops(
    device: torch.device, dtype: torch.dtype, size: int = 2048, min_run_time: float = 0.5
) -> float:
    """FLOP/s of one large square matmul: the practical ceiling that the model's matmuls run at."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / blocked_autorange("a @ b", {"a": a, "b": b}, min_run_time).median


class Silent:
    """A progress bar that shows nothing, with tqdm's two methods that the sweeps call."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (imported only when shown), or a ``Silent`` stand-in."""
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False)
    return Silent()


def first_line(error: BaseException) -> str:
    """The error's first line, and the next one where the first only introduces it (dynamo's
    ``backend='inductor' raised:`` before the compiler's own error)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text[:300]
