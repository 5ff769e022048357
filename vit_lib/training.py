"""A small, readable training loop: AdamW, warmup + cosine schedule, label smoothing, gradient
clipping, mixed precision on CUDA (bf16, or fp16 with loss scaling on GPUs without bf16), optional
``torch.compile``, evaluation, and a checkpoint after every epoch from which a run resumes exactly.

Built in chapter 6 (book/06_training_digits.ipynb) and taken to a GPU in chapter 7
(book/07_cifar10_gpu.ipynb)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from vit_lib import distributed
from vit_lib._checks import as_int, check_number, check_positive_int
from vit_lib.checkpoint import (  # noqa: F401 - load_checkpoint, load_model, save_checkpoint: re-exported
    FORMAT,
    RESUME_KEYS,
    VERSION,
    check_resumable,
    check_writable,
    load_checkpoint,
    load_model,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    simplevit_config,
    unwrap,
    warn_if_unrepeatable,
    write_checkpoint,
)
from vit_lib.device import amp_dtype  # the autocast policy, also importable from here


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    compile: bool = False
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_positive_int("TrainConfig.epochs", self.epochs)
        check_number("TrainConfig.lr", self.lr, strict=True)
        check_number("TrainConfig.weight_decay", self.weight_decay)
        check_number("TrainConfig.warmup_epochs", self.warmup_epochs)
        check_number("TrainConfig.label_smoothing", self.label_smoothing, high=1.0)
        if self.grad_clip is not None:  # 0 or None: no clipping
            check_number("TrainConfig.grad_clip", self.grad_clip)


@dataclass
class History:
    """One entry per epoch."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup from 0 to the base learning rate, then cosine decay to 0 at ``total_steps``.

    A warmup longer than half the run is clamped to half of it, with a warning: otherwise a short run
    (3 epochs with a 5-epoch warmup, say) would end still warming up, never reaching the peak rate.
    """
    warmup_steps, total_steps = as_int("warmup_steps", warmup_steps), as_int("total_steps", total_steps)
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps} and {total_steps}")
    if warmup_steps > total_steps // 2:
        warnings.warn(
            f"warmup_cosine: {warmup_steps} warmup steps do not fit a run of {total_steps} steps; "
            f"using {total_steps // 2} (half the run) so that the learning rate peaks and then decays",
            stacklevel=2,
        )
        warmup_steps = total_steps // 2

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def grad_scaler(device: torch.device):
    """Loss scaling for fp16, whose small exponent range lets gradients underflow; bf16 needs none."""
    enabled = amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=enabled)  # torch >= 2.3


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices only; biases and LayerNorm parameters (1-D) are left alone."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``."""
    model.eval()
    device = torch.device(device)
    # Sums stay on the device (float64: the same figures as summing Python floats): one sync at the end.
    total_loss, correct, count = torch.zeros((), dtype=_sum_dtype(device), device=device), 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
        # cross_entropy skips the label PADDING_LABEL (its ignore_index), which pads the evaluation
        # shards of a distributed run to equal length; so do the counts
        total_loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(-1) == labels).sum()
        count += (labels != distributed.PADDING_LABEL).sum()
    total_loss, correct, count = _to_host(total_loss, correct, count)
    return total_loss / count, correct / count


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _to_host(
    total: torch.Tensor, correct: torch.Tensor | int, count: torch.Tensor | int
) -> tuple[float, int, int]:
    """The three sums in one device-to-host copy (the only sync of an epoch); in a distributed run,
    summed over all processes first (one all-reduce), so that every process gets the global figures."""
    sums = torch.stack(
        [total, *(torch.as_tensor(n, device=total.device).to(total.dtype) for n in (correct, count))]
    )
    total, correct, count = distributed.all_reduce_sum(sums).tolist()
    return total, round(correct), round(count)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted, true)`` labels over ``loader``, on the CPU."""
    model.eval()
    predicted, true = [], []
    for images, labels in loader:
        with autocast(device):
            predicted.append(model(images.to(device)).argmax(-1).cpu())
        true.append(labels)
    return torch.cat(predicted), torch.cat(true)


def train(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader | None,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    *,
    checkpoint: str | pathlib.Path | None = None,
    resume: str | pathlib.Path | dict | None = None,
    model_config: dict | None = None,
    extra: dict | None = None,
    parallel: str | None = None,
) -> History:
    """Train ``model`` in place for ``config.epochs`` epochs; evaluate after each one.

    ``checkpoint``: after every epoch, write there (atomically) the weights, ``model_config`` (the
    ``SimpleViT`` keyword arguments; read from the model when omitted), the optimizer, schedule, loss
    scaler and random-generator states, the history and ``extra`` (plain values, e.g. the dataset).
    ``resume``: such a checkpoint (a path, or the dict ``read_checkpoint`` returned): continue that run
    after its last completed epoch. With the same loaders and config, a resumed run ends with the same
    weights and history as one that was never interrupted (on the CPU, bit for bit).

    Seeds torch's, Python's and NumPy's global generators with ``config.seed`` first (``config.seed +
    rank`` in a distributed run).

    ``parallel``: ``"ddp"`` or ``"fsdp"`` in a process group (``vit_lib.distributed.setup``, under
    torchrun), with loaders sharded by ``vit_lib.distributed``: the model is wrapped (DDP) or sharded
    (FSDP2) here, metrics are summed over the processes, and rank 0 alone writes the checkpoint. An FSDP
    checkpoint holds the full weights (gathered from the shards) but no optimizer state: it loads in a
    single process, but does not resume.
    """
    device = torch.device(device)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(
            "train_loader yields no batches: is the dataset empty, or batch_size > len with drop_last?"
        )
    # Everything that can fail fails here, before the first step.
    if checkpoint is not None:
        checkpoint = check_writable(checkpoint)
        model_config = simplevit_config(model) if model_config is None else dict(model_config)
        warn_if_unrepeatable(train_loader)
    if parallel is not None and resume is not None:
        raise ValueError(
            f"resume is not supported with parallel={parallel!r} yet (each process would need its own random "
            "state back, and FSDP its optimizer shards); resume in a single process, or start afresh"
        )
    state = None
    if resume is not None:
        state = resume if isinstance(resume, dict) else read_checkpoint(resume, require=RESUME_KEYS)
        check_resumable(state, config, steps_per_epoch)

    # seed + rank: in a distributed run the random augmentations must differ between the processes (the
    # weights were initialised before, from the same seed everywhere); seed + 0 in a single process.
    seed = config.seed + distributed.rank()
    torch.manual_seed(seed)  # and Python's and NumPy's, which augmentations may draw from
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator is the one they use
    model.to(device)
    if parallel is not None:  # before the optimizer: FSDP replaces the parameters by their shards
        wrapped = distributed.wrap_model(model, parallel, distributed.current_context(device))
    else:
        wrapped = model
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = warmup_cosine(
        optimizer, round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    scaler = grad_scaler(device)
    # The model that steps: compiled, and (for several processes) where a DistributedDataParallel
    # wrapper goes. `model` itself is what is saved and evaluated against.
    step_model = torch.compile(wrapped) if config.compile else wrapped
    history, start_epoch = History(), 0
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved from a disabled scaler (no fp16)
            scaler.load_state_dict(state["scaler"])
        history, start_epoch = History(**state["history"]), state["epoch"]
        set_rng_state(state["rng"], train_loader, device)  # last: nothing above may draw from them
    bar = None
    if config.progress:
        from tqdm.auto import tqdm  # imported only when used: it warns in Jupyter without ipywidgets

        bar = tqdm(total=config.epochs, initial=start_epoch, desc="epochs")
    for epoch in range(start_epoch, config.epochs):
        start = time.perf_counter()
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # a DistributedSampler shuffles by (seed, epoch)
            sampler.set_epoch(epoch)
        train_loss, train_accuracy = train_one_epoch(
            step_model, train_loader, optimizer, scheduler, scaler, loss_fn, config.grad_clip, device
        )
        history.lr.append(scheduler.get_last_lr()[0])
        history.train_loss.append(train_loss)
        history.train_accuracy.append(train_accuracy)
        if test_loader is not None:
            test_loss, test_accuracy = evaluate(step_model, test_loader, device)
            history.test_loss.append(test_loss)
            history.test_accuracy.append(test_accuracy)
        history.seconds.append(time.perf_counter() - start)
        if checkpoint is not None:
            # a collective under FSDP (every process sends its shards); only rank 0 writes
            weights = distributed.full_state_dict(model) if parallel == "fsdp" else unwrap(model).state_dict()
            saved = {
                "format": FORMAT,
                "version": VERSION,
                "model": weights,
                "config": model_config,
                "extra": dict(extra or {}),
                "epoch": epoch + 1,
                "train_config": dataclasses.asdict(config),
                "steps_per_epoch": steps_per_epoch,
                "history": dataclasses.asdict(history),
            }
            if parallel != "fsdp":  # FSDP's optimizer state is sharded: a weights-only checkpoint
                saved |= {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(train_loader, device),
                }
            if distributed.is_main():
                write_checkpoint(checkpoint, saved)
        if bar is not None:
            bar.update()
            bar.set_postfix(
                loss=f"{history.train_loss[-1]:.3f}",
                test_acc=f"{history.test_accuracy[-1]:.3f}" if history.test_accuracy else "-",
            )
    if bar is not None:
        bar.close()
    return history


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: Any,
    loss_fn: nn.Module,
    grad_clip: float | None,
    device: torch.device,
) -> tuple[float, float]:
    """One pass over ``loader``, a scheduler step per batch; the mean loss and accuracy of the epoch.

    The sums stay on the device: a ``.item()`` per step would wait for the GPU at every step.
    """
    model.train()
    total_loss, correct, count = torch.zeros((), dtype=_sum_dtype(device), device=device), 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total_loss += loss.detach().to(total_loss.dtype) * len(labels)
        correct += (logits.argmax(-1) == labels).sum()
        count += len(labels)
    total_loss, correct, count = _to_host(total_loss, correct, count)
    return total_loss / count, correct / count
