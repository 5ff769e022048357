"""Printing and writing benchmark reports: the tables ``python -m vit_lib.bench`` prints, and the
JSON files chapter 8 (book/08_performance.ipynb) reads from ``book/data``.

Part of ``vit_lib.bench``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vit_lib.bench.memory import MiB

BOOK_DATA = Path("book") / "data"  # where chapter 8 reads results, relative to the repository root


def format_bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / MiB:.1f} MiB"


def print_attention(report: dict[str, Any]) -> None:
    """One line per (dtype, n, method): time and peak memory, or why the point failed."""
    env = report["environment"]
    hardware = env.get("gpu") or env["cpu"]
    print(f"attention, {env['device']} ({hardware}), torch {env['torch']}, {report['shape']}")
    print(f"{'dtype':9} {'n':>6}  {'method':24} {'time':>11} {'peak memory':>13}")
    for row in report["results"]:
        if "error" in row:
            result = f"unsupported: {row['error'][:60]}"
        else:
            result = f"{row['time_s'] * 1e3:8.3f} ms {format_bytes(row.get('peak_bytes')):>13}"
        print(f"{row['dtype']:9} {row['n']:>6}  {row['method']:24} {result}")


def print_model(report: dict[str, Any]) -> None:
    """One line per model x mode: parameters, images/s, ratio to the baseline, share of peak, MFU."""
    env, config = report["environment"], report["config"]
    print(
        f"training step, {config['name']} batch {config['batch_size']}, {env['device']} "
        f"({env.get('gpu') or env['cpu']}, {env['torch_threads']} threads), torch {env['torch']}, "
        f"amp {report['amp_dtype']}"
    )
    matmul_gflops = report["measured_matmul_flops"] / 1e9
    print(f"measured {report['amp_dtype'] or 'float32'} matmul peak: {matmul_gflops:.1f} GFLOP/s")
    header = f"{'model':22} {'params':>10} {'images/s':>10} {'vs ' + report['baseline']:>20}"
    print(f"{header} {'of matmul peak':>15} {'MFU':>7}")
    for row in report["results"]:
        label = f"{row['model']} {'compiled' if row['compiled'] else 'eager'}"
        if "error" in row:
            print(f"{label:22} failed: {row['error'][:80]}")
            continue
        mfu = "-" if row.get("mfu") is None else f"{row['mfu']:.1%}"
        of_peak = "-" if "fraction_of_matmul_peak" not in row else f"{row['fraction_of_matmul_peak']:.1%}"
        print(
            f"{label:22} {row['params']:>10,} {row['images_per_s']:>10.1f} "
            f"{row['ratio_vs_upstream_eager']:>19.2f}x {of_peak:>15} {mfu:>7}"
        )


def default_out(kind: str, device: torch.device) -> Path:
    """``book/data/bench_<kind>_<cpu|gpu>.json`` from the repository root, else in the current folder
    (an installed vit_lib, e.g. on Colab, has no book next to it)."""
    name = f"bench_{kind}_{'gpu' if device.type == 'cuda' else 'cpu'}.json"
    return BOOK_DATA / name if BOOK_DATA.is_dir() else Path(name)


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
