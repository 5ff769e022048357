"""GPU evidence in one command: what the book says about CUDA, measured in one run of under 8 minutes.

    PYTHONPATH=. python3 scripts/gpu_evidence.py [--out-dir DIR]   # needs CUDA; default DIR book/data
    PYTHONPATH=. python3 scripts/gpu_evidence.py --dry --out-dir DIR   # every step on the CPU, tiny

Each step runs in a process of its own under its own time budget and saves its JSON file atomically
as it goes, so a step that fails, crashes or runs out of time is recorded as such, keeps what it had
finished, and the next step still runs:

1. cuda_tests: ``pytest -m cuda`` on the test files that have such tests;
2. compile_check: graph breaks of the chapter-7 SimpleViT (``torch._dynamo.explain``), and frames
   compiled again after warm-up;
3. attention: ``bench.attention_sweep`` up to n = 16384, every SDPA backend and ``triton`` where
   ``vit_lib.triton_attention`` imports, fp32 and bf16;
4. model: ``bench.model_sweep`` of ViT-S/16 and ViT-B/16 in bf16, eager and compiled, against timm
   (and upstream vit-pytorch when a wheel is given: ``$VIT_PYTORCH_WHEEL`` or ``.gpu/vit_pytorch-*.whl``);
5. cifar10_epoch: one epoch of the chapter-7 preset (``vit_lib.train`` / ``training.train``), eager and
   compiled, on random images in CIFAR-10's own on-disk format (no network needed).

``gpu_evidence_gpu.json`` holds the machine (GPU, driver, torch) and each step's status and time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# this checkout's vit_lib whatever else is installed, and the steps beside this file
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch  # noqa: E402
from gpu_evidence_steps import STEP_FUNCTIONS, Step, machine, save_json  # noqa: E402

from vit_lib import bench  # noqa: E402

# name: (file written, its share of the budget in seconds on the GPU). What a step leaves unused goes to
# the steps after it; the shares and the parent's start-up together stay under 8 minutes.
STEPS = {
    "cuda_tests": ("cuda_tests_gpu.json", 45),
    "compile_check": ("compile_check_gpu.json", 45),
    "attention": ("bench_attention_gpu.json", 80),
    "model": ("bench_model_gpu.json", 190),
    "cifar10_epoch": ("cifar10_epoch_gpu.json", 110),
}
TOTAL_BUDGET_S = 470
SUMMARY = "gpu_evidence_gpu.json"


def run_step(name: str, out_dir: Path, dry: bool, budget_s: float) -> int:
    """One step, in this process (the child): its file says ``ok``, or ``error`` and why."""
    device = torch.device("cpu" if dry else "cuda")
    # 90 %: leave the last points time to finish before the parent's hard limit
    step = Step(
        name, out_dir / STEPS[name][0], dry, device, time.monotonic() + 0.9 * budget_s, machine(device)
    )
    try:
        STEP_FUNCTIONS[name](step)
    except Exception as error:
        traceback.print_exc()
        step.save({**step.report, "error": bench.first_line(error)}, status="error")
        return 1
    step.save(step.report, status="ok")
    return 0


def run_child(command: list[str], budget_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` for at most ``budget_s`` seconds; past that, kill it and all it started."""
    start = time.monotonic()
    # a process group of its own, so that a time-out kills its helpers too (pytest, loader workers,
    # compiler workers); the same session, so that whoever stops this run stops them as well
    child = subprocess.Popen(command, env=env, preexec_fn=os.setpgrp)
    try:
        returncode = child.wait(timeout=budget_s)
        result = {"status": "ok" if returncode == 0 else "error", "returncode": returncode}
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        result = {"status": "timeout", "error": f"killed after its budget of {budget_s:.0f} s"}
    return {**result, "seconds": round(time.monotonic() - start, 1), "budget_s": round(budget_s)}


def upstream_path() -> tuple[str | None, str]:
    """A folder holding vit-pytorch unpacked from its wheel (pure Python: a wheel is a zip of the
    installed files), or None; and what was found."""
    if importlib.util.find_spec("vit_pytorch"):
        return None, f"installed vit-pytorch {bench.package_version('vit-pytorch')}"
    given = os.environ.get("VIT_PYTORCH_WHEEL")
    wheels = [Path(given)] if given else sorted((ROOT / ".gpu").glob("vit_pytorch-*.whl"))
    if not wheels or not wheels[-1].is_file():
        return None, "not available: no vit-pytorch wheel ($VIT_PYTORCH_WHEEL, .gpu/); upstream skipped"
    target = tempfile.mkdtemp(prefix="vit_pytorch_")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(target)
    return target, f"wheel {wheels[-1].name}"


def headline(out_dir: Path) -> list[str]:
    """The figures a closing note quotes, one line each, read back from the files."""
    lines = []

    def load(name: str) -> dict[str, Any]:
        path = out_dir / STEPS[name][0]
        return json.loads(path.read_text()) if path.exists() else {}

    tests, check, attn, models, epoch = (load(name) for name in STEPS)
    if tests.get("counts"):
        lines.append(f"cuda tests: {tests['counts']}")
    if "graph_break_count" in check:
        lines.append(
            f"compile: {check['graph_break_count']} graph breaks, "
            f"{check.get('recompiles_after_warmup')} recompiles after warm-up"
        )
    rows = [r for r in attn.get("results", []) if "time_s" in r]
    top = max((r["n"] for r in rows), default=None)
    lines += [
        f"attention n={top} {r['dtype']} {r['method']}: {r['time_s'] * 1e3:.3f} ms"
        for r in rows
        if r["n"] == top
    ]
    for sweep in models.get("sweeps", []):
        for r in sweep["results"]:
            label = f"{sweep['config']['name']} {r['model']} {'compiled' if r['compiled'] else 'eager'}"
            mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") else ""
            lines.append(
                f"{label}: {r['images_per_s']:.1f} images/s{mfu}"
                if "error" not in r
                else f"{label}: {r['error']}"
            )
    for r in epoch.get("results", []):
        mode = "compiled" if r["compiled"] else "eager"
        lines.append(
            f"cifar10 epoch {mode}: {r['images_per_s']:.0f} images/s, "
            f"predicted epoch {r['predicted_epoch_s']:.1f} s (first {r['first_epoch_s']:.1f} s)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "book" / "data")
    parser.add_argument("--dry", action="store_true", help="every step on the CPU at tiny sizes")
    parser.add_argument(
        "--only", nargs="+", choices=list(STEPS), default=list(STEPS), help="these steps only"
    )
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--budget", type=float, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_step(args.step, args.out_dir, args.dry, args.budget)
    if not args.dry and not torch.cuda.is_available():
        print(
            "gpu_evidence: no CUDA GPU here (torch.cuda.is_available() is False), nothing run; "
            "`make gpu-evidence-dry` rehearses every step on the CPU",
            file=sys.stderr,
        )
        return 2
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    extra, upstream = upstream_path()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), extra, env.get("PYTHONPATH")) if p)
    device = torch.device("cpu" if args.dry else "cuda")
    summary = {
        "dry": args.dry,
        "environment": machine(device),
        "upstream": upstream,
        "budget_s": TOTAL_BUDGET_S,
        "steps": {},
    }
    save_json(out_dir / SUMMARY, summary)
    start = time.monotonic()
    total = min(TOTAL_BUDGET_S, sum(STEPS[name][1] for name in args.only))
    for i, name in enumerate(args.only):
        later = sum(STEPS[n][1] for n in args.only[i + 1 :])  # kept for the steps still to come
        budget = total - (time.monotonic() - start) - later
        if budget < 5:
            summary["steps"][name] = {"status": "skipped", "error": "the total budget is spent"}
            continue
        print(f"== {name} (budget {budget:.0f} s)", flush=True)
        command = [
            sys.executable,
            __file__,
            "--step",
            name,
            "--out-dir",
            str(out_dir),
            "--budget",
            str(budget),
        ]
        result = run_child(command + (["--dry"] if args.dry else []), budget, env)
        with contextlib.suppress(OSError, ValueError):  # the child's own words on what went wrong
            error = json.loads((out_dir / STEPS[name][0]).read_text()).get("error")
            result.update({"error": error} if error else {})
        summary["steps"][name] = {**result, "file": STEPS[name][0]}
        save_json(out_dir / SUMMARY, summary)
    summary["headline"] = headline(out_dir)
    save_json(out_dir / SUMMARY, summary)
    print("\n".join([f"== gpu evidence in {out_dir}", *summary["headline"]]))
    failed = {name: s["status"] for name, s in summary["steps"].items() if s["status"] != "ok"}
    if failed:
        print(f"steps not ok: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
