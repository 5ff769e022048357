"""Data parallelism: N processes must compute what one process computes on the same global batches.

The multi-process tests start 2 CPU processes (gloo) with torchrun on 127.0.0.1 at a free port, one
thread each, and stop them (timeout) whatever happens. One run of ``vit_lib.distributed_check``
serves all of them. Tolerances: the gradients of a step are float32 means over 16 images, which 2
processes sum in a different order than one (measured: max |diff| 3e-8 for gradients up to 0.42);
after 3 AdamW steps the weights differ by about 1e-7 (they moved by 3e-3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from vit_lib import distributed
from vit_lib.checkpoint import load_model
from vit_lib.data import digits_loaders
from vit_lib.distributed_check import synthetic_digits
from vit_lib.train import main as train_cli
from vit_lib.training import evaluate

GRAD_ATOL = 1e-6
WEIGHT_ATOL = 1e-6
NORM_RTOL = 1e-5
TIMEOUT_S = 240  # a hung rendezvous or collective fails the test instead of the whole run


def run_torchrun(nproc: int, module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # what torchrun sets anyway; explicit, and no warning
    try:
        result = subprocess.run(
            distributed.torchrun_command(nproc, module, *args),
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:  # run() has killed torchrun; its workers die with it
        pytest.fail(f"torchrun {module} did not finish in {TIMEOUT_S} s: {error.stderr!s:.2000}")
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def check() -> dict:
    result = run_torchrun(2, "vit_lib.distributed_check", "--steps", "3", "--global-batch", "16")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"rank 0 alone prints one JSON line, got {result.stdout!r}"
    return json.loads(lines[0])


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "scratch"])
def test_two_processes_compute_the_gradients_and_weights_of_one(check, mode):
    assert check["world_size"] == 2 and check["steps"] == 3
    assert check["grad_max_abs"] > 0.1 and check["weight_change_max_abs"] > 1e-3  # not a trivial match
    measured = check[mode]
    assert measured["grad_max_abs_diff"] < GRAD_ATOL, measured
    # averaged, not summed: a sum over 2 processes doubles the norm (FSDP2 on gloo did, in 2025)
    assert abs(measured["grad_norm_ratio"] - 1) < NORM_RTOL, measured
    assert measured["weight_max_abs_diff"] < WEIGHT_ATOL, measured


def test_the_check_catches_summed_gradients_that_the_weights_hide(check):
    summed = check["sum"]
    assert abs(summed["grad_norm_ratio"] - 2) < NORM_RTOL and summed["grad_max_abs_diff"] > 0.1
    # AdamW and clipping are nearly blind to the gradients' scale: the weights alone would pass
    assert summed["weight_max_abs_diff"] < WEIGHT_ATOL


def test_ring_all_reduce_equals_the_backends_all_reduce_and_ddp(check):
    # with 2 processes each element is one addition a + b, in either order, and halving is exact in
    # binary floating point: the hand-made all-reduce and averaging must match gloo's and DDP's bit for bit
    assert check["ring_vs_all_reduce_max_abs"] == 0.0
    assert check["scratch_vs_ddp"] == {"grad_max_abs_diff": 0.0, "weight_max_abs_diff": 0.0}


def test_shards_of_a_step_are_the_global_batch_of_one_process():
    dataset = synthetic_digits(40)
    global_batch, world_size = 8, 2
    one = DataLoader(dataset, batch_size=global_batch)
    for epoch in (0, 1):
        order = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=3)
        order.set_epoch(epoch)
        order = list(order)
        per_rank = []
        for rank in range(world_size):
            context = distributed.Context(rank=rank, world_size=world_size)
            loader = distributed.shard_train_loader(one, context, seed=3)
            loader.sampler.set_epoch(epoch)
            per_rank.append(list(loader.sampler))
            assert loader.batch_size == global_batch // world_size
        for step in range(len(dataset) // global_batch):
            b = global_batch // world_size
            shards = [indices[step * b : (step + 1) * b] for indices in per_rank]
            block = order[step * global_batch : (step + 1) * global_batch]
            assert sorted(i for shard in shards for i in shard) == sorted(block)
    # without set_epoch every epoch would repeat the first one's order
    sampler = DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True, seed=3)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_evaluation_shards_count_every_sample_once(world_size):
    n = 10
    dataset = TensorDataset(torch.arange(n).float()[:, None], torch.arange(n))
    shards = [distributed.EvaluationShard(dataset, r, world_size) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # the same number of forward passes on every rank
    labels = [s[i][1].item() for s in shards for i in range(len(s))]
    real = sorted(label for label in labels if label != distributed.PADDING_LABEL)
    assert real == list(range(n))
    assert len(labels) - len(real) == -n % world_size


def test_global_batch_must_divide_and_bad_modes_are_refused():
    assert distributed.per_process_batch_size(64, 2) == 32
    with pytest.raises(
        ValueError, match="global batch size 65 must be divisible by the number of processes 2"
    ):
        distributed.per_process_batch_size(65, 2)
    with pytest.raises(ValueError, match="parallel must be one of"):
        distributed.wrap_model(torch.nn.Linear(2, 2), "zero3", distributed.Context())


def test_without_torchrun_everything_is_one_process(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    context = distributed.setup("cpu")
    assert context == distributed.Context() and context.is_main and not context.distributed
    assert distributed.current_context("cpu") == context and distributed.is_main() and distributed.rank() == 0
    x = torch.arange(5.0)
    assert torch.equal(distributed.ring_all_reduce(x.clone()), x)
    assert torch.equal(distributed.all_reduce_sum(x), x)
    model = torch.nn.Linear(3, 2)
    state = distributed.full_state_dict(model)
    assert state.keys() == model.state_dict().keys()


def test_torchrun_cli_trains_the_digits_with_fsdp_and_one_process_loads_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "digits_fsdp.pt"
    result = run_torchrun(
        2,
        "vit_lib.train",
        *("--dataset", "digits", "--parallel", "fsdp", "--epochs", "2", "--threads", "1", "--no-progress"),
        *("--checkpoint", str(checkpoint)),
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"rank 0 alone prints the JSON line: {result.stdout!r}"
    summary = json.loads(lines[0])
    assert summary["world_size"] == 2 and summary["parallel"] == "fsdp"
    assert summary["batch_size"] == 64 and summary["epochs"] == 2  # the preset's global batch
    # the gathered full state dict loads into a plain SimpleViT in this single process, and its accuracy
    # on the whole test set is what the two processes reported from their halves of it
    model = load_model(checkpoint)
    _, accuracy = evaluate(model, digits_loaders().test, torch.device("cpu"))
    assert round(accuracy, 4) == summary["test_accuracy"]
    assert accuracy > 0.3  # two epochs (measured: 0.62) are far from chance (0.1)


def refuse_to_start(*args, **kwargs):
    raise AssertionError("the command line must refuse these arguments before it starts any work")


def test_cli_refuses_a_global_batch_the_processes_cannot_share(monkeypatch, capsys):
    monkeypatch.setattr(distributed, "setup", refuse_to_start)
    for name, value in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(SystemExit):
        train_cli(["--dataset", "digits", "--batch-size", "65"])
    error = capsys.readouterr().err
    assert "argument --batch-size: 65 (the global batch) must be divisible by the 2 processes" in error


def test_cli_refuses_fsdp_without_torchrun(monkeypatch, capsys):
    monkeypatch.setattr(distributed, "setup", refuse_to_start)
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        train_cli(["--dataset", "digits", "--parallel", "fsdp"])
    assert (
        "argument --parallel: fsdp needs several processes; launch with torchrun" in capsys.readouterr().err
    )


def test_end_worker_flushes_output_and_skips_the_shutdown():
    # os._exit leaves buffered output unwritten unless end_worker flushes it first (stdout is a pipe
    # here, so fully buffered), and it must skip the interpreter's shutdown: no atexit handler runs.
    code = (
        "import atexit, sys\n"
        "from vit_lib.distributed import end_worker\n"
        "atexit.register(lambda: print('shutdown ran'))\n"
        "print('result line', end='')\n"
        "sys.stderr.write('last words')\n"
        "end_worker(3)\n"
        "print('unreachable')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "result line", "last words")
