"""The steps of ``scripts/gpu_evidence.py`` (which says what each measures). Each takes a :class:`Step`:
the device, ``dry`` (CPU, tiny sizes), where to save (``step.save`` after every point), and
``step.time_left()``, false once no new point should start."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from xml.etree import ElementTree

import torch
import torch.nn.functional as F

from vit_lib import bench
from vit_lib.data import CIFAR10_CLASSES, cifar10_loaders
from vit_lib.model import SimpleViT
from vit_lib.train import PRESETS
from vit_lib.training import TrainConfig, autocast, train

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = dict(patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, dim_head=16)  # the dry run's


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so that a reader (or a kill) never sees half a file: temp file, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def machine(device: torch.device) -> dict[str, Any]:
    """bench's environment plus what GPU figures depend on: capability, driver, cuDNN, Triton."""
    env = bench.environment(device)
    env["triton"] = bench.package_version("triton")
    env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        env["capability"] = list(torch.cuda.get_device_capability(device))
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        env["cudnn"] = torch.backends.cudnn.version()
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            answer = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout
            env["driver"] = answer.split()[0]
    return env


@dataclass
class Step:
    """What a step function gets: where to save, the device, and when to stop starting new work."""

    name: str
    out: Path
    dry: bool
    device: torch.device
    stop_at: float  # time.monotonic() after which no new point is started
    env: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def time_left(self) -> bool:
        return time.monotonic() < self.stop_at

    def save(self, report: dict[str, Any], status: str = "running") -> None:
        self.report = report
        save_json(
            self.out,
            {**report, "step": self.name, "dry": self.dry, "status": status, "environment": self.env},
        )


def cuda_tests(step: Step) -> None:
    files = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text()
    )
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        # -o addopts: the project's addopts need nbval, which a bare GPU machine lacks
        options = ["-m", "cuda", "-q", "-p", "no:nbval", "-p", "no:cacheprovider", "-o", "addopts=-ra"]
        command = [sys.executable, "-m", "pytest", *files, *options, f"--junitxml={junit}"]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        timeout = step.stop_at - time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        tests = []
        for case in ElementTree.parse(junit).iter("testcase") if junit.exists() else []:
            tag = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), None)
            message = next((c.get("message", "") for c in case if c.tag == tag), "")
            outcome = {"failure": "failed", "error": "error", "skipped": "skipped", None: "passed"}[tag]
            tests.append(
                {
                    "test": f"{case.get('classname')}::{case.get('name')}",
                    "outcome": outcome,
                    "message": message[:300],
                }
            )
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")}
    output = (done.stdout + done.stderr)[-3000:]
    step.save(
        {
            "command": "pytest -m cuda " + " ".join(files),
            "returncode": done.returncode,
            "counts": counts,
            "tests": tests,
            "output_tail": output,
        }
    )


def break_reason(reason) -> str:
    """A graph break's reason, first line, and the user frame it happened in (``attention.py:137``)."""
    text = bench.first_line(Exception(str(reason.reason)))
    frame = reason.user_stack[-1] if reason.user_stack else None
    return f"{text} at {Path(frame.filename).name}:{frame.lineno}" if frame else text


def compile_check(step: Step) -> None:
    import torch._dynamo as dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    kwargs = TINY_MODEL if step.dry else PRESETS["cifar10"]["model"]
    batch, device = (4 if step.dry else 64), step.device
    torch.manual_seed(0)
    model = SimpleViT(image_size=32, channels=3, num_classes=10, **kwargs).to(device)
    images, labels = torch.randn(batch, 3, 32, 32, device=device), torch.randint(10, (batch,), device=device)
    with autocast(device):
        explained = dynamo.explain(model)(images)
    reasons = [break_reason(r) for r in explained.break_reasons]
    report = {
        "model": kwargs,
        "batch": batch,
        "graph_count": explained.graph_count,
        "graph_break_count": explained.graph_break_count,
        "break_reasons": reasons,
    }
    step.save(report)

    # Recompiles are decided by dynamo's guards, whatever the backend: aot_eager (which also traces the
    # backward) keeps this step to seconds, and the model step times inductor itself. The dry run's
    # eager backend skips the backward's tracing too.
    dynamo.reset()
    backend = "eager" if step.dry else "aot_eager"
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_then_eval() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(compiled(images).float(), labels)
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad(), autocast(device):
            compiled(images)

    for _ in range(2):  # warm-up: one graph per mode (train, eval) is expected
        train_then_eval()
    warm, error = counter.frame_count, None
    strict = (
        dynamo.config.patch(error_on_recompile=True)
        if hasattr(dynamo.config, "error_on_recompile")
        else contextlib.nullcontext()
    )
    try:
        with strict:  # the error message, if any, says which guard failed
            for _ in range(3):
                train_then_eval()
    except Exception as exc:
        error = bench.first_line(exc)
    report.update(
        backend=backend,
        frames_compiled_in_warmup=warm,
        recompiles_after_warmup=counter.frame_count - warm,
        recompile_error=error,
        graph_break_counter=dict(dynamo.utils.counters["graph_break"]),
    )
    step.save(report)


def triton_status(device: torch.device) -> str:
    if device.type != "cuda":
        return "not available: Triton kernels need a CUDA device"
    try:
        from vit_lib.triton_attention import flash_attention  # noqa: F401
    except ImportError as error:
        return f"not available: {bench.first_line(error)}"
    return "available"


def attention(step: Step) -> None:
    methods, triton = bench.attention_methods(step.device.type), triton_status(step.device)
    methods += ["triton"] if triton == "available" else []
    seq_lens = [16] if step.dry else [2**i for i in range(6, 15)]  # 64 ... 16384
    shape = {"heads": 2, "dim_head": 16} if step.dry else {}
    report: dict[str, Any] = {"triton": triton, "skipped": [], "results": [], "kernels": {}}
    for n in seq_lens:  # every method at one length before the next: a time-out loses the longest
        for dtype in (torch.float32, torch.bfloat16):
            if not step.time_left():
                report["skipped"].append({"n": n, "dtype": str(dtype), "reason": "step budget spent"})
                continue
            part = bench.attention_sweep(
                [n],
                [dtype],
                device=step.device,
                methods=methods,
                min_run_time=0.002 if step.dry else 0.1,
                measure_memory=not step.dry,
                show_progress=False,
                **shape,
            )
            report = {
                **part,
                "triton": triton,
                "skipped": report["skipped"],
                "kernels": {**report["kernels"], **part["kernels"]},
                "results": report["results"] + part["results"],
            }
            step.save(report)
    if report["results"]:
        bench.print_attention(report)


def model(step: Step) -> None:
    """Eager sweeps of both sizes first, then the compiled ones, each saved when done: a slow cold
    compile can then cost only compiled figures. Ratios are within one sweep; compare modes by images/s."""
    upstream = importlib.util.find_spec("vit_pytorch") is not None and not step.dry  # the dry run: 2 models
    models = ["vit_lib", "timm"] + (["upstream"] if upstream else [])
    bf16 = step.device.type == "cuda" and torch.cuda.is_bf16_supported()
    report: dict[str, Any] = {
        "kind": "model",
        "upstream": bench.package_version("vit-pytorch") or "not available",
        "sweeps": [],
        "errors": [],
        "skipped": [],
    }
    names = ["quick"] if step.dry else ["vit-s16", "vit-b16"]
    for compiled, name in [(compiled, name) for compiled in (False, True) for name in names]:
        if not step.time_left():
            report["skipped"].append({"config": name, "compiled": compiled, "reason": "step budget spent"})
            continue
        try:
            sweep = bench.model_sweep(
                bench.MODEL_CONFIGS[name],
                device=step.device,
                models=models,
                compile_modes=(compiled,),
                amp_dtype=torch.bfloat16 if bf16 else None,
                rounds=1 if step.dry else 5,
                steps=1 if step.dry else 10,
                warmup_steps=0 if step.dry else 3,
                compile_backend="eager" if step.dry else "inductor",
                show_progress=False,
                quick=step.dry,
            )
        except Exception as error:  # one sweep failing keeps the others
            traceback.print_exc()
            report["errors"].append({"config": name, "compiled": compiled, "error": bench.first_line(error)})
        else:
            report["sweeps"].append(sweep)
            bench.print_model(sweep)
        step.save(report)


@contextlib.contextmanager
def random_cifar10(root: Path, train_size: int, test_size: int):
    """Random pixels and labels in CIFAR-10's on-disk format (five pickled training batches and a test
    batch), with torchvision's MD5 check pointed at them: the chapter's own loader, without a download."""
    import numpy as np
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": train_size // 5 for i in range(1, 6)} | {"test_batch": test_size}
    for name, n in batches.items():
        data = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(data))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    saved = CIFAR10.train_list, CIFAR10.test_list, CIFAR10.meta
    CIFAR10.train_list = [[name, md5[name]] for name in batches if name != "test_batch"]
    CIFAR10.test_list, CIFAR10.meta = (
        [["test_batch", md5["test_batch"]]],
        {**CIFAR10.meta, "md5": md5["batches.meta"]},
    )
    try:
        yield
    finally:
        CIFAR10.train_list, CIFAR10.test_list, CIFAR10.meta = saved


class TimedLoader:
    """A loader that notes the time whenever the loop asks for the next batch. ``train`` reads the loss
    with ``.item()`` every step (a GPU sync), so the gaps are whole steps, data loading included."""

    def __init__(self, loader) -> None:
        self.loader, self.times = loader, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.times = [time.perf_counter()]
        for batch in self.loader:
            yield batch
            self.times.append(time.perf_counter())


def cifar10_epoch(step: Step) -> None:
    preset = PRESETS["cifar10"]
    train_size, test_size, batch = (64, 32, 16) if step.dry else (50_000, 10_000, preset["batch_size"])
    workers, warmup = (0, 1) if step.dry else (2, 10)  # 2 loader workers: the chapter's default (Colab)
    with tempfile.TemporaryDirectory() as root, random_cifar10(Path(root), train_size, test_size):
        loaders = cifar10_loaders(root, batch_size=batch, download=False, num_workers=workers)
    # the dry run's compile: dynamo captures the graphs, its eager backend runs them (no C++ compiler)
    compile_patch = (
        mock.patch.object(torch, "compile", functools.partial(torch.compile, backend="eager"))
        if step.dry
        else contextlib.nullcontext()
    )
    report: dict[str, Any] = {
        "preset": preset,
        "train_images": train_size,
        "test_images": test_size,
        "batch_size": batch,
        "loader_workers": workers,
        "results": [],
        "skipped": [],
    }
    for compiled in (False, True):
        if not step.time_left():
            report["skipped"].append({"compiled": compiled, "reason": "step budget spent"})
            continue
        torch.manual_seed(0)
        vit = SimpleViT(
            image_size=32, channels=3, num_classes=10, **(TINY_MODEL if step.dry else preset["model"])
        )
        timed = TimedLoader(loaders.train)
        config = TrainConfig(**{**preset["train"], "epochs": 1, "compile": compiled, "progress": False})
        with compile_patch:
            history = train(vit, timed, loaders.test, config, step.device)
        steps, times = len(timed.times) - 1, timed.times
        images_per_s = (steps - warmup) * batch / (times[-1] - times[warmup])
        eval_s = history.seconds[0] - (times[-1] - times[0])  # the rest of the epoch: evaluation
        epoch_s = steps * batch / images_per_s + eval_s  # an epoch once warm
        report["results"].append(
            {
                "compiled": compiled,
                "steps": steps,
                "warmup_steps": warmup,
                "first_step_s": times[1] - times[0],
                "images_per_s": images_per_s,
                "first_epoch_s": history.seconds[0],
                "eval_s": eval_s,
                "predicted_epoch_s": epoch_s,
                "predicted_preset_s": history.seconds[0] + (preset["train"]["epochs"] - 1) * epoch_s,
                "train_loss": history.train_loss[0],
                "test_accuracy": history.test_accuracy[0],  # random labels: about 0.1
            }
        )
        step.save(report)


STEP_FUNCTIONS = {
    "cuda_tests": cuda_tests,
    "compile_check": compile_check,
    "attention": attention,
    "model": model,
    "cifar10_epoch": cifar10_epoch,
}
