"""``python -m vit_lib.bench attention|model``: run a sweep, print its table, write its JSON.

Part of ``vit_lib.bench`` (chapter 8, book/08_performance.ipynb; ``make bench`` re-measures its data).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vit_lib.bench.attention import attention_sweep
from vit_lib.bench.attention_methods import dtype_from_name
from vit_lib.bench.report import default_out, print_attention, print_model, write_report
from vit_lib.bench.throughput import model_sweep
from vit_lib.configs import MODEL_CONFIGS
from vit_lib.device import amp_dtype, default_device

DESCRIPTION = (
    "Benchmarks that print and record figures: attention kernels vs sequence length, and whole-model "
    "training throughput of vit_lib, upstream vit-pytorch and timm."
)
OUT_HELP = (
    "JSON file to write (default: book/data/bench_<kind>_<cpu|gpu>.json from the repository root, else "
    "that file name here; --quick runs write nothing unless given --out)"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit_lib.bench", description=DESCRIPTION)
    sub = p.add_subparsers(dest="kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, a few calls: checks the plumbing (writes nothing unless --out is given); "
        "the model sweep still compiles with inductor (tens of seconds, needs a C++ compiler) unless "
        "--no-compile or --compile-backend eager",
    )
    common.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    common.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    common.add_argument("--no-progress", action="store_true")

    attention = sub.add_parser("attention", parents=[common], help="attention time and memory vs length")
    attention.add_argument("--seq-lens", type=int, nargs="+", default=None)
    attention.add_argument("--dtypes", nargs="+", default=None, help="default: float32 bfloat16")
    attention.add_argument("--no-memory", action="store_true")

    model = sub.add_parser("model", parents=[common], help="training throughput of whole models")
    model.add_argument("--configs", nargs="+", default=None, choices=sorted(MODEL_CONFIGS))
    model.add_argument("--rounds", type=int, default=None)
    model.add_argument("--steps", type=int, default=None)
    model.add_argument("--no-compile", action="store_true")
    model.add_argument("--compile-backend", default="inductor")
    return p


def run_attention(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The attention sweep the arguments ask for: n = 64 ... 4096 (CPU) or 16384 (CUDA)."""
    if args.quick:
        seq_lens, min_run_time = args.seq_lens or [16, 32], 0.01
    else:
        top = 16384 if device.type == "cuda" else 4096
        seq_lens, min_run_time = args.seq_lens or [2**i for i in range(6, top.bit_length())], 0.5
    dtype_names = args.dtypes or ["float32", "bfloat16"]
    report = attention_sweep(
        seq_lens,
        [dtype_from_name(d) for d in dtype_names],
        device=device,
        min_run_time=min_run_time,
        measure_memory=not args.no_memory,
        show_progress=not args.no_progress,
        **({"heads": 2, "dim_head": 16} if args.quick else {}),
    )
    print_attention(report)
    return report


def run_models(args: argparse.Namespace, device: torch.device, out: Path | None) -> dict[str, Any]:
    """One model sweep per config, in the autocast dtype of ``vit_lib.device.amp_dtype`` (the training
    loop's policy: bf16 from sm80, fp16 below); ``out`` is rewritten after every sweep, so that one
    that crashes later (out of memory) loses only itself."""
    if args.quick:
        names, rounds, steps = args.configs or ["quick"], args.rounds or 2, args.steps or 2
    else:
        default_names = ["vit-s16", "vit-b16"] if device.type == "cuda" else ["cpu-small"]
        names, rounds, steps = args.configs or default_names, args.rounds or 10, args.steps or 10
    reports = []
    for name in names:
        reports.append(
            model_sweep(
                MODEL_CONFIGS[name],
                device=device,
                amp_dtype=amp_dtype(device),
                rounds=rounds,
                steps=steps,
                warmup_steps=1 if args.quick else 3,
                compile_modes=(False,) if args.no_compile else (False, True),
                compile_backend=args.compile_backend,
                show_progress=not args.no_progress,
                quick=args.quick,
            )
        )
        print_model(reports[-1])
        if out is not None:
            write_report({"kind": "model", "sweeps": reports}, out)
    return {"kind": "model", "sweeps": reports}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    out = args.out or (None if args.quick else default_out(args.kind, device))
    if args.kind == "model":
        return run_models(args, device, out)
    report = run_attention(args, device)
    if out is not None:
        write_report(report, out)
    return report
