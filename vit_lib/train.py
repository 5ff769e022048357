"""Command line: train SimpleViT on the digits (CPU, offline) or CIFAR-10 (GPU, downloads).

    python -m vit_lib.train --dataset digits
    python -m vit_lib.train --dataset cifar10 --epochs 50 --compile --checkpoint run.pt
    python -m vit_lib.train --resume run.pt    # after an interruption: continue that run
    torchrun --nproc-per-node=4 -m vit_lib.train --dataset cifar10    # data-parallel (DDP) on 4 GPUs

With --checkpoint, a checkpoint is written (atomically) after every epoch; --resume continues the run it
holds, with its settings, and ends as the uninterrupted run would have. Every argument is checked before
any work starts: a bad one ends with a one-line error and exit code 2. The last line printed is one JSON
object: test_accuracy, seconds, epochs, params, and the settings.

Under torchrun (N processes; --parallel ddp or fsdp), --batch-size is the global batch, each process
takes batch-size / N of it, and rank 0 alone prints, shows progress and writes the checkpoint.

Used in chapters 6, 7 and 7b (book/06_training_digits.ipynb, book/07_cifar10_gpu.ipynb,
book/07b_distributed_training.ipynb); the presets live in vit_lib.configs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any, Callable

import torch

from vit_lib import distributed
from vit_lib.checkpoint import RESUME_KEYS, check_writable, read_checkpoint
from vit_lib.configs import PRESETS  # re-exported: chapters 6, 7, 7b import it from here
from vit_lib.data import cifar10_loaders, digits_loaders
from vit_lib.device import default_device
from vit_lib.model import SimpleViT
from vit_lib.training import TrainConfig, train

RUN_OPTIONS = ("dataset", "batch_size", "seed")  # recorded in the checkpoint; with the training settings
TRAIN_OPTIONS = ("epochs", "lr", "warmup_epochs")  # they define a run, so a resumed run must keep them


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``, else argparse's one-line error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def number_above(minimum: float, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number ``> minimum`` (``>=`` if ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"expected a finite number {bound} {minimum:g}, got {text!r}")
        return value

    return parse


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA if a GPU is visible, else the CPU) or a device that exists here; ``ValueError``."""
    if name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{name!r} is not a device; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"CUDA requested ({name!r}) but no GPU is visible; use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name!r} requested but {count} GPU(s) are visible: cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"MPS requested ({name!r}) but this machine has no usable Apple GPU")
    elif device.type != "cpu":
        raise ValueError(f"{name!r}: this command trains on cpu, cuda or mps")
    return device


def build(
    dataset: str,
    batch_size: int | None,
    data_root: str,
    download: bool,
    seed: int,
    workers: int,
    model_config: dict | None = None,
):
    """The dataset's loaders and a model: ``SimpleViT(**model_config)``, or the preset's when omitted."""
    preset = PRESETS[dataset]
    batch_size = preset["batch_size"] if batch_size is None else batch_size
    if dataset == "digits":
        loaders = digits_loaders(batch_size=batch_size, max_shift=preset["max_shift"], seed=seed)
    else:
        loaders = cifar10_loaders(
            data_root, batch_size=batch_size, download=download, num_workers=workers, seed=seed
        )
    if model_config is None:
        model_config = model_config_for(dataset, loaders)
    torch.manual_seed(seed)
    return loaders, SimpleViT(**model_config)


def model_config_for(dataset: str, loaders: Any) -> dict:
    """The preset's ``SimpleViT`` keyword arguments, completed with what the data says."""
    sizes = dict(image_size=loaders.image_size, channels=loaders.channels, num_classes=loaders.num_classes)
    return sizes | PRESETS[dataset]["model"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit_lib.train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(PRESETS), help="default: digits")
    p.add_argument("--epochs", type=integer_at_least(1), help="default: the dataset preset's")
    p.add_argument("--lr", type=number_above(0), help="peak learning rate; default: the preset's")
    p.add_argument("--warmup-epochs", type=number_above(0, inclusive=True), help="default: the preset's")
    p.add_argument(
        "--batch-size",
        type=integer_at_least(1),
        help="the global batch: under torchrun each of the N processes takes batch-size / N images per step, "
        "so the optimisation does not depend on N (default: the preset's)",
    )
    p.add_argument(
        "--parallel",
        choices=distributed.PARALLEL_MODES,
        help="under torchrun --nproc-per-node=N: ddp (the default), a full model in every process, or fsdp, "
        "parameters, gradients and optimizer state sharded across the processes",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, mps")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=integer_at_least(0), help="default: 0")
    p.add_argument("--threads", type=integer_at_least(1), help="CPU threads for torch (default: torch's)")
    p.add_argument("--data-root", default="data", help="where CIFAR-10 is (or is downloaded to)")
    p.add_argument("--no-download", action="store_true", help="never download CIFAR-10")
    p.add_argument("--workers", type=integer_at_least(0), default=2, help="CIFAR-10 loader processes")
    p.add_argument("--checkpoint", help="write a checkpoint here after every epoch (default: --resume's)")
    p.add_argument("--resume", help="continue the run whose checkpoint this is")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve(cli: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[dict, dict, dict | None]:
    """``(run, train settings, resumed checkpoint)`` from the arguments (and the checkpoint's settings,
    which a resumed run keeps: an argument that contradicts them is an error, not silently ignored)."""
    if args.resume is None:
        dataset = args.dataset or "digits"
        preset = PRESETS[dataset]
        run = dict(
            dataset=dataset,
            batch_size=preset["batch_size"] if args.batch_size is None else args.batch_size,
            seed=0 if args.seed is None else args.seed,
        )
        settings = dict(preset["train"])
        settings |= {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}
        return run, settings, None
    try:
        state = read_checkpoint(args.resume, require=RESUME_KEYS)
    except (OSError, ValueError) as error:
        cli.error(f"argument --resume: {error}")
    run = {name: state["extra"].get(name) for name in RUN_OPTIONS}
    if run["dataset"] not in PRESETS or None in run.values():
        cli.error(
            f"argument --resume: {args.resume!r} was not written by python -m vit_lib.train (it records no "
            "dataset, batch size and seed); continue it with vit_lib.training.train(..., resume=path)"
        )
    settings = {field.name: state["train_config"][field.name] for field in dataclasses.fields(TrainConfig)}
    for name in RUN_OPTIONS + TRAIN_OPTIONS:
        given, saved = getattr(args, name), run.get(name, settings.get(name))
        if given is not None and given != saved:
            option = "--" + name.replace("_", "-")
            cli.error(
                f"argument {option}: {given!r} differs from the checkpoint's {saved!r}; a resumed run keeps "
                f"its settings (drop {option}, or start a new run without --resume)"
            )
    return run, settings, state


def check_parallel(cli: argparse.ArgumentParser, args: argparse.Namespace, batch_size: int, resume: bool):
    """``"ddp"`` or ``"fsdp"`` under torchrun, ``None`` for one process; argparse errors for what cannot
    work, from torchrun's environment, before any process group or data exists."""
    world_size = distributed.world_size_from_env()
    if world_size == 1:
        if args.parallel:
            cli.error(
                f"argument --parallel: {args.parallel} needs several processes; launch with "
                "torchrun --nproc-per-node=N -m vit_lib.train ..."
            )
        return None
    if batch_size % world_size:
        cli.error(
            f"argument --batch-size: {batch_size} (the global batch) must be divisible by the "
            f"{world_size} processes, which take equal shares"
        )
    if resume:
        cli.error("argument --resume: a run resumes in a single process only (python -m vit_lib.train)")
    return args.parallel or "ddp"


def main(argv: list[str] | None = None) -> dict:
    cli = parser()
    args = cli.parse_args(argv)
    # Every check first: a bad value must not cost a download or a training run.
    run, settings, resumed = resolve(cli, args)
    parallel = check_parallel(cli, args, run["batch_size"], resumed is not None)
    try:
        device = pick_device(args.device)
    except ValueError as error:
        cli.error(f"argument --device: {error}")
    checkpoint = args.checkpoint or args.resume
    if checkpoint is not None:
        try:
            check_writable(checkpoint)
        except ValueError as error:
            cli.error(f"argument --checkpoint: {error}")
        if resumed is None and pathlib.Path(checkpoint).exists():
            cli.error(
                f"argument --checkpoint: {checkpoint!r} exists; continue that run with --resume {checkpoint}"
                ", or remove it (or choose another path) to start a new run"
            )
    if args.threads:
        torch.set_num_threads(args.threads)
    context = distributed.setup(device)  # joins torchrun's process group; one process without torchrun
    device = context.device
    progress = not args.no_progress and context.is_main
    config = TrainConfig(**(settings | dict(compile=args.compile, progress=progress)))
    try:
        with distributed.main_process_first():  # under torchrun, rank 0 alone downloads CIFAR-10
            loaders, model = build(
                run["dataset"],
                run["batch_size"],
                args.data_root,
                not args.no_download,
                run["seed"],
                args.workers,
                model_config=resumed["config"] if resumed else None,
            )
    except RuntimeError as error:  # CIFAR-10 missing and not downloadable: the message says what to do
        cli.error(str(error))
    model_config = resumed["config"] if resumed else model_config_for(run["dataset"], loaders)
    if context.distributed:  # each process: its share of every global batch, its part of the test set
        loaders = dataclasses.replace(
            loaders,
            train=distributed.shard_train_loader(loaders.train, context, seed=run["seed"]),
            test=distributed.shard_eval_loader(loaders.test, context),
        )
    if resumed:
        print(f"resuming {args.resume}: {resumed['epoch']} of {config.epochs} epochs done", file=sys.stderr)

    start = time.perf_counter()
    history = train(
        model,
        loaders.train,
        loaders.test,
        config,
        device,
        checkpoint=checkpoint,
        resume=resumed,
        model_config=model_config,
        extra=run,
        parallel=parallel,
    )
    seconds = time.perf_counter() - start
    result = {
        "dataset": run["dataset"],
        "test_accuracy": round(history.test_accuracy[-1], 4),
        "seconds": round(seconds, 1),
        "epochs": config.epochs,
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "torch": torch.__version__,
        "resumed_from_epoch": resumed["epoch"] if resumed else 0,
        "checkpoint": checkpoint,
        "world_size": context.world_size,
        "parallel": parallel,
        "batch_size": run["batch_size"],
    }
    if context.is_main:
        print(json.dumps(result), flush=True)
    distributed.teardown()
    return result


if __name__ == "__main__":
    main()
    if distributed.launched_by_torchrun():
        distributed.end_worker()  # skips a shutdown that sometimes aborts (see end_worker)
