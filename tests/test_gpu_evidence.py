"""`make gpu-evidence`'s script: its dry run (every step on the CPU at tiny sizes, so that the script
cannot rot before a GPU comes), and the bookkeeping that keeps a GPU run's results when a step fails or
runs out of time. The figures are not checked here, only that each step produced them."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from vit_lib import bench

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_evidence.py"
_spec = importlib.util.spec_from_file_location("gpu_evidence", SCRIPT)
gpu_evidence = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_evidence)
STEPS = gpu_evidence.STEPS


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def in_process(command: list[str], budget_s: float, env=None) -> dict:
    """``run_child``'s stand-in: the child's own command line, run in this process, which saves a
    Python start and a torch import per step (``run_child`` itself is tested below)."""
    assert command[:2] == [sys.executable, str(SCRIPT)] and "--step" in command
    start = time.monotonic()
    returncode = gpu_evidence.main(command[2:])
    status = "ok" if returncode == 0 else "error"
    return {
        "status": status,
        "returncode": returncode,
        "seconds": time.monotonic() - start,
        "budget_s": budget_s,
    }


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """What `make gpu-evidence-dry` runs, with each step in this process instead of a child."""
    out = tmp_path_factory.mktemp("gpu-evidence")
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(gpu_evidence, "run_child", in_process)
        returncode = gpu_evidence.main(["--dry", "--out-dir", str(out)])
    torch._dynamo.reset()
    return out, returncode, stdout.getvalue()


def test_dry_run_runs_every_step_and_each_saves_its_file(dry_run):
    out, returncode, stdout = dry_run
    assert returncode == 0, stdout[-3000:]
    summary = load(out / gpu_evidence.SUMMARY)
    assert summary["dry"] is True and summary["environment"]["device"] == "cpu"
    assert {name: s["status"] for name, s in summary["steps"].items()} == dict.fromkeys(STEPS, "ok")
    for name, (file, _) in STEPS.items():
        report = load(out / file)
        assert (report["step"], report["status"], report["dry"]) == (name, "ok", True)
        assert report["environment"]["torch"] == torch.__version__
    assert not list(out.glob("*.tmp"))
    assert summary["headline"] and summary["headline"][-1] in stdout


def test_dry_run_figures(dry_run):
    out, _, _ = dry_run
    tests = load(out / "cuda_tests_gpu.json")
    assert tests["returncode"] == 0
    assert tests["counts"]["skipped"] == len(tests["tests"]) > 0  # no GPU here: collected, then skipped

    check = load(out / "compile_check_gpu.json")
    assert check["graph_count"] == 1 and check["graph_break_count"] == 0 and check["break_reasons"] == []
    assert check["frames_compiled_in_warmup"] == 2  # one graph for training, one for evaluation
    assert check["recompiles_after_warmup"] == 0 and check["recompile_error"] is None

    attention = load(out / "bench_attention_gpu.json")
    assert attention["triton"].startswith("not available")
    rows = attention["results"]
    assert {(r["method"], r["dtype"]) for r in rows} == {
        (m, d) for m in bench.attention_methods("cpu") for d in ("float32", "bfloat16")
    }
    assert all(r["time_s"] > 0 for r in rows) and attention["skipped"] == []

    eager, compiled = load(out / "bench_model_gpu.json")["sweeps"]  # eager first: compiling may run long
    results = {(r["model"], r["compiled"]): r for r in eager["results"] + compiled["results"]}
    assert set(results) == {(m, c) for m in ("vit_lib", "timm") for c in (False, True)}
    for row in results.values():
        assert row["images_per_s"] > 0 and row["mfu"] is None  # no bf16 peak for a CPU

    epoch = load(out / "cifar10_epoch_gpu.json")
    assert [r["compiled"] for r in epoch["results"]] == [False, True]
    for row in epoch["results"]:
        assert row["steps"] == 3  # 60 random training images (12 per batch file), 16 per step, last dropped
        assert row["images_per_s"] > 0 and row["predicted_epoch_s"] > 0
        assert row["predicted_preset_s"] > row["first_epoch_s"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_stops_at_once_with_one_line(tmp_path, capsys):
    assert gpu_evidence.main(["--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU" in err and "make gpu-evidence-dry" in err
    assert not (tmp_path / "out").exists()


def test_a_step_past_its_budget_is_killed_with_what_it_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    child = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(60)"
    )
    start = time.monotonic()
    result = gpu_evidence.run_child([sys.executable, "-c", child], budget_s=3)
    assert result["status"] == "timeout" and "budget of 3 s" in result["error"]
    assert time.monotonic() - start < 20
    if pid_file.exists():  # the grandchild had started: it must be gone too (or a zombie awaiting reaping)
        status = Path(f"/proc/{pid_file.read_text()}/status")
        time.sleep(0.5)
        assert not status.exists() or "State:\tZ" in status.read_text()


def test_a_failing_step_is_recorded():
    result = gpu_evidence.run_child([sys.executable, "-c", "raise SystemExit(3)"], budget_s=30)
    assert (result["status"], result["returncode"]) == ("error", 3)


def test_the_summary_keeps_every_step_whatever_happened_to_the_others(tmp_path, monkeypatch):
    outcomes = iter(
        [
            {"status": "timeout", "error": "killed after its budget of 60 s"},
            {"status": "error", "returncode": 1},
        ]
    )

    def fake_child(command, budget_s, env=None):
        name = command[command.index("--step") + 1]
        if name == "attention":  # the child's own record of its failure
            gpu_evidence.save_json(
                tmp_path / STEPS[name][0], {"status": "error", "error": "CUDA error: boom"}
            )
        return {**next(outcomes), "seconds": 1.0, "budget_s": budget_s}

    monkeypatch.setattr(gpu_evidence, "run_child", fake_child)
    assert gpu_evidence.main(["--dry", "--out-dir", str(tmp_path), "--only", "cuda_tests", "attention"]) == 1
    steps = load(tmp_path / gpu_evidence.SUMMARY)["steps"]
    assert steps["cuda_tests"]["status"] == "timeout"
    # its own share; then the next step gets its share plus what the first left unused
    assert steps["cuda_tests"]["budget_s"] == pytest.approx(STEPS["cuda_tests"][1], abs=1)
    assert steps["attention"]["budget_s"] >= STEPS["attention"][1]
    assert (steps["attention"]["status"], steps["attention"]["error"]) == ("error", "CUDA error: boom")


def test_save_json_replaces_the_file_whole(tmp_path):
    path = tmp_path / "x_gpu.json"
    gpu_evidence.save_json(path, {"a": 1})
    gpu_evidence.save_json(path, {"a": 2, "dtype": torch.bfloat16})  # non-JSON values as text
    assert load(path) == {"a": 2, "dtype": "torch.bfloat16"}
    assert [p.name for p in tmp_path.iterdir()] == ["x_gpu.json"]


def test_upstream_comes_from_a_given_wheel_else_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(
        gpu_evidence.importlib.util, "find_spec", lambda name: None
    )  # as on a bare GPU machine
    monkeypatch.setenv("VIT_PYTORCH_WHEEL", str(tmp_path / "missing.whl"))
    folder, found = gpu_evidence.upstream_path()
    assert folder is None and found.startswith("not available") and "upstream skipped" in found
    wheel = tmp_path / "vit_pytorch-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:  # a pure-Python wheel: the installed files, zipped
        archive.writestr("vit_pytorch/__init__.py", "")
        archive.writestr("vit_pytorch-0.0.1.dist-info/METADATA", "Name: vit-pytorch\nVersion: 0.0.1\n")
    monkeypatch.setenv("VIT_PYTORCH_WHEEL", str(wheel))
    folder, found = gpu_evidence.upstream_path()
    assert found == f"wheel {wheel.name}"
    assert (Path(folder) / "vit_pytorch" / "__init__.py").is_file()
