"""The attention sweep: time and peak memory of every method at every sequence length and dtype.

Part of ``vit_lib.bench`` (chapter 8, book/08_performance.ipynb reads its results from
``book/data/bench_attention_*.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vit_lib.bench.attention_methods import (
    attention_call,
    attention_methods,
    method_context,
    qkv_inputs,
    sdpa_kernel_name,
)
from vit_lib.bench.measure import blocked_autorange, environment, first_line, progress
from vit_lib.bench.memory import memory_method, peak_memory


def time_attention(
    method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, min_run_time: float
) -> tuple[float, int, list[float]]:
    """Median seconds per forward call, how many calls the median came from, and the seconds per call
    of each timed block (their spread is the point's noise; a slow point may have only 1-3 blocks)."""
    fn = attention_call(method)
    with method_context(method), torch.inference_mode():
        fn(q, k, v)  # raises here, not inside the timer, when the backend cannot run these inputs
        measurement = blocked_autorange("fn(q, k, v)", {"fn": fn, "q": q, "k": k, "v": v}, min_run_time)
    return measurement.median, len(measurement.times) * measurement.number_per_run, list(measurement.times)


def measure_point(
    method: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    shape: dict[str, int],
    min_run_time: float,
    measure_memory: bool,
) -> dict[str, Any]:
    """One row: ``time_s``, ``calls`` and ``time_s_blocks`` (and ``peak_bytes``), or the ``error`` that
    stopped it (e.g. "No available kernel" for a forced backend, a kernel that rejects a dtype)."""
    n, dtype = q.shape[-2], q.dtype
    row: dict[str, Any] = {"method": method, "dtype": str(dtype).removeprefix("torch."), "n": n}
    try:
        row["time_s"], row["calls"], row["time_s_blocks"] = time_attention(method, q, k, v, min_run_time)
        if measure_memory:
            row["peak_bytes"] = peak_memory(method, n, dtype, shape, q.device)
    except Exception as error:  # one point's failure is recorded, and the sweep goes on
        row["error"] = first_line(error)
    return row


def attention_sweep(
    seq_lens: Sequence[int],
    dtypes: Sequence[torch.dtype],
    *,
    device: torch.device,
    batch: int = 1,
    heads: int = 8,
    dim_head: int = 64,
    methods: Sequence[str] | None = None,
    min_run_time: float = 0.2,
    measure_memory: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Time (and measure the memory of) every method at every sequence length and dtype."""
    methods = list(methods or attention_methods(device.type))
    shape = {"batch": batch, "heads": heads, "dim_head": dim_head}
    rows: list[dict[str, Any]] = []
    kernels: dict[str, str | None] = {}
    bar = progress(len(seq_lens) * len(dtypes) * len(methods), "attention", show_progress)
    for dtype in dtypes:
        for n in seq_lens:
            q, k, v = qkv_inputs(n, dtype=dtype, device=device, **shape)
            for method in methods:
                row = measure_point(
                    method, q, k, v, shape=shape, min_run_time=min_run_time, measure_memory=measure_memory
                )
                key = f"{method} {row['dtype']}"
                if "error" not in row and key not in kernels:
                    try:
                        kernels[key] = sdpa_kernel_name(method, q, k, v)
                    except Exception as error:
                        row["error"] = first_line(error)
                rows.append(row)
                bar.update()
            del q, k, v
    bar.close()
    return {
        "kind": "attention",
        "environment": environment(device),
        "shape": shape,
        "memory_method": memory_method(device) if measure_memory else None,
        "time_method": "torch.utils.benchmark.Timer.blocked_autorange median, forward only",
        "kernels": kernels,
        "results": rows,
    }
