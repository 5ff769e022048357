"""`python -m vit_lib.train`: bad arguments fail at once with one line, and a run killed with SIGKILL
resumes to the weights the uninterrupted run ends with."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

import vit_lib.train as train_module
from vit_lib import SimpleViT
from vit_lib.train import main as train_cli
from vit_lib.training import save_checkpoint

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS_QUICK = ["--dataset", "digits", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the command sets it (--threads 1); give the other tests theirs back


def test_command_line_prints_a_json_last_line(capsys, tmp_path):
    path = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match=r"46 warmup steps do not fit a run of 23 steps"):  # 2 of 1 epoch
        result = train_cli([*DIGITS_QUICK, "--epochs", "1", "--batch-size", "64", "--checkpoint", str(path)])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == result
    assert {"test_accuracy", "seconds", "epochs", "params"} <= result.keys()
    assert result["epochs"] == 1 and 0.0 <= result["test_accuracy"] <= 1.0 and result["params"] > 0
    assert result["resumed_from_epoch"] == 0 and result["checkpoint"] == str(path)
    state = torch.load(path, weights_only=True)
    assert state["extra"] == {"dataset": "digits", "batch_size": 64, "seed": 0}
    assert state["steps_per_epoch"] == 23 and state["epoch"] == 1  # ceil(1437 / 64)


def test_a_batch_size_that_is_not_the_presets_is_used(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match="warmup"):
        train_cli([*DIGITS_QUICK, "--epochs", "1", "--batch-size", "512", "--checkpoint", str(path)])
    assert (
        torch.load(path, weights_only=True)["steps_per_epoch"] == 3
    )  # ceil(1437 / 512): not the preset's 23


@pytest.fixture
def files(tmp_path):
    """Files that are not checkpoints this command can resume, and one that it can."""
    (tmp_path / "text.txt").write_text("hello")
    model = SimpleViT(
        image_size=8, patch_size=4, num_classes=10, dim=16, depth=1, heads=2, mlp_dim=32, channels=1
    )
    torch.save(model.state_dict(), tmp_path / "state_dict.pt")
    save_checkpoint(tmp_path / "weights.pt", model)
    (tmp_path / "folder").mkdir()
    return tmp_path


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permission bits: use /sys there)."""
    if os.geteuid() == 0:
        return pathlib.Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


BAD_ARGUMENTS = [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    (["--epochs", "-3"], "argument --epochs: expected an integer >= 1, got '-3'"),
    (["--epochs", "ten"], "argument --epochs: expected an integer >= 1, got 'ten'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["--threads", "0"], "argument --threads: expected an integer >= 1, got '0'"),
    (["--workers", "-1"], "argument --workers: expected an integer >= 0, got '-1'"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
    (["--lr", "0"], "argument --lr: expected a finite number > 0, got '0'"),
    (["--lr", "-0.001"], "argument --lr: expected a finite number > 0, got '-0.001'"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["--warmup-epochs", "-1"], "argument --warmup-epochs: expected a finite number >= 0, got '-1'"),
    (["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
    (["--device", "cuda"], "argument --device: CUDA requested ('cuda') but no GPU is visible"),
    (
        ["--device", "gpu"],
        "argument --device: 'gpu' is not a device; expected auto, cpu, cuda, cuda:N or mps",
    ),
    (["--checkpoint", "{tmp}/nowhere/x.pt"], "argument --checkpoint: folder '{tmp}/nowhere' of"),
    (["--checkpoint", "{tmp}/folder"], "argument --checkpoint: '{tmp}/folder' is a folder; expected a file"),
    (["--checkpoint", "{unwritable}/x.pt"], "argument --checkpoint: folder '{unwritable}' is not writable"),
    (["--checkpoint", "{tmp}/text.txt"], "argument --checkpoint: '{tmp}/text.txt' exists; continue that run"),
    (["--resume", "{tmp}/missing.pt"], "argument --resume: '{tmp}/missing.pt' does not exist"),
    (["--resume", "{tmp}/text.txt"], "argument --resume: '{tmp}/text.txt' is not a checkpoint"),
    (
        ["--resume", "{tmp}/state_dict.pt"],
        "'{tmp}/state_dict.pt' is not a vit_lib checkpoint: it has no 'model'",
    ),
    (["--resume", "{tmp}/weights.pt"], "'{tmp}/weights.pt' is not a resumable vit_lib checkpoint"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_gets_a_one_line_error_before_any_work(files, argv, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_module, "build", lambda *a, **k: pytest.fail("work started"))
    names = dict(tmp=files, unwritable=unwritable_folder(files))
    with pytest.raises(SystemExit) as exit_info:
        train_cli([arg.format(**names) for arg in argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m vit_lib.train: error: ") and message.format(**names) in error


def test_a_gpu_that_is_not_there_is_named(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit):
        train_cli(["--device", "cuda:3"])
    assert (
        "argument --device: 'cuda:3' requested but 1 GPU(s) are visible: cuda:0 to cuda:0"
        in capsys.readouterr().err
    )


def run_cli(*args: str, cwd: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "vit_lib.train", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_bad_argument_exits_2_without_a_traceback(tmp_path):
    process = run_cli("--epochs", "0", cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and out == ""
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(
        "expected an integer >= 1, got '0'"
    )


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, capsys):
    """Kill a real run right after its first checkpoint appears (mid-run: the next epoch is under way),
    resume it in a new process, and compare with a run that was never interrupted."""
    epochs = 3
    args = [*DIGITS_QUICK, "--epochs", str(epochs), "--warmup-epochs", "1"]
    killed = tmp_path / "killed.pt"
    process = run_cli(*args, "--checkpoint", str(killed), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not killed.exists():  # os.replace makes it appear whole
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.002)
    time.sleep(0.05)  # into the second epoch (about 0.3 s on one core)
    assert process.poll() is None  # still running: the kill lands mid-run
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    done = torch.load(killed, weights_only=True)["epoch"]
    assert 1 <= done < epochs

    resumed = run_cli(*args, "--resume", str(killed), cwd=tmp_path)  # trains while the next line does
    uninterrupted = tmp_path / "uninterrupted.pt"
    train_cli([*args, "--checkpoint", str(uninterrupted)])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["resumed_from_epoch"] == done
    assert f"resuming {killed}: {done} of {epochs} epochs done" in err

    a, b = torch.load(uninterrupted, weights_only=True), torch.load(killed, weights_only=True)
    difference = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    print(f"max |weight difference| after kill and resume: {difference:.1e}")
    assert difference <= 1e-6  # measured: 0.0 (the same operations in the same order)
    assert b["epoch"] == epochs and len(b["history"]["seconds"]) == epochs
    for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
        assert a["history"][name] == b["history"][name], name
