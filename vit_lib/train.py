"""Command line: train SimpleViT on the digits (CPU, offline) or CIFAR-10 (GPU, downloads).

    python -m vit_lib.train --dataset digits
    python -m vit_lib.train --dataset cifar10 --epochs 50 --compile --checkpoint run.pt
    python -m vit_lib.train --resume run.pt    # after an interruption: continue that run

With --checkpoint, a checkpoint is written (atomically) after every epoch; --resume continues the run it
holds, with its settings, and ends as the uninterrupted run would have. Every argument is checked before
any work starts: a bad one ends with a one-line error and exit code 2. The last line printed is one JSON
object: test_accuracy, seconds, epochs, params, and the settings.
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

from vit_lib.checkpoint import RESUME_KEYS, check_writable, read_checkpoint
from vit_lib.data import cifar10_loaders, digits_loaders
from vit_lib.model import SimpleViT
from vit_lib.training import TrainConfig, train

# Model and optimisation settings per dataset; the training chapters explain how they were chosen.
PRESETS: dict[str, dict] = {
    "digits": {
        "model": dict(patch_size=4, dim=64, depth=4, heads=4, mlp_dim=128, dim_head=16),
        "train": dict(epochs=50, lr=2e-3, weight_decay=0.05, warmup_epochs=2, label_smoothing=0.1),
        "batch_size": 64,
        "max_shift": 1,
    },
    "cifar10": {
        "model": dict(patch_size=4, dim=384, depth=6, heads=6, mlp_dim=768, dim_head=64),
        "train": dict(epochs=50, lr=1e-3, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.1),
        "batch_size": 256,
    },
}
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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    p.add_argument("--batch-size", type=integer_at_least(1), help="default: the preset's")
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


def main(argv: list[str] | None = None) -> dict:
    cli = parser()
    args = cli.parse_args(argv)
    # Every check first: a bad value must not cost a download or a training run.
    run, settings, resumed = resolve(cli, args)
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
    config = TrainConfig(**(settings | dict(compile=args.compile, progress=not args.no_progress)))
    try:
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
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
