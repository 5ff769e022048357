"""A small, readable training loop: AdamW, warmup + cosine schedule, label smoothing, gradient
clipping, mixed precision on CUDA (bf16, or fp16 with loss scaling on GPUs without bf16), optional
``torch.compile``, evaluation and checkpoints."""

from __future__ import annotations

import contextlib
import math
import pathlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader


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
    """Linear warmup from 0 to the base learning rate, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 on GPUs with native bf16 (compute capability 8.0+),
    fp16 on older GPUs such as Colab's T4 (7.5), and ``None`` (full precision) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def grad_scaler(device: torch.device):
    """Loss scaling for fp16, whose small exponent range lets gradients underflow; bf16 needs none."""
    enabled = amp_dtype(device) == torch.float16
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3; torch.cuda.amp.GradScaler is deprecated
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # pragma: no cover


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices only; biases and LayerNorm parameters (1-D) are left alone."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
        total_loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        count += len(labels)
    return total_loss / count, correct / count


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
) -> History:
    """Train ``model`` in place for ``config.epochs`` epochs; evaluate after each one."""
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = len(train_loader)
    scheduler = warmup_cosine(
        optimizer, round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    scaler = grad_scaler(device)
    step_model = torch.compile(model) if config.compile else model
    history = History()
    bar = None
    if config.progress:
        from tqdm.auto import tqdm  # imported only when used: it warns in Jupyter without ipywidgets

        bar = tqdm(total=config.epochs, desc="epochs")
    for _ in range(config.epochs):
        start = time.perf_counter()
        model.train()
        total_loss, correct, count = 0.0, 0, 0
        for images, labels in train_loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device):
                logits = step_model(images)
            loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(-1) == labels).sum().item()
            count += len(labels)
        history.lr.append(scheduler.get_last_lr()[0])
        history.train_loss.append(total_loss / count)
        history.train_accuracy.append(correct / count)
        if test_loader is not None:
            test_loss, test_accuracy = evaluate(step_model, test_loader, device)
            history.test_loss.append(test_loss)
            history.test_accuracy.append(test_accuracy)
        history.seconds.append(time.perf_counter() - start)
        if bar is not None:
            bar.update()
            bar.set_postfix(
                loss=f"{history.train_loss[-1]:.3f}",
                test_acc=f"{history.test_accuracy[-1]:.3f}" if history.test_accuracy else "-",
            )
    if bar is not None:
        bar.close()
    return history


def save_checkpoint(
    path: str | pathlib.Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    **extra: object,
) -> None:
    """Save the model's (and optionally the optimizer's) state plus plain-Python ``extra`` values."""
    state = {"model": model.state_dict(), "extra": extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, path)


def load_checkpoint(
    path: str | pathlib.Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (strictly); return ``extra``.

    ``weights_only=True``: a checkpoint is data, so unpickling it must not be able to run code.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state["extra"]
