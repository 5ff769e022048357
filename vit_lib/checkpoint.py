"""Checkpoints that carry their model: weights, the ``SimpleViT`` keyword arguments and, for a training
run, everything needed to continue it exactly (optimizer, schedule, loss scaler, random generators,
history). Written atomically, read with ``torch.load(weights_only=True)``: a checkpoint is data, so
reading one must not be able to run code; it therefore holds only tensors and plain containers.

Used from chapter 6 on (book/06_training_digits.ipynb: checkpoints and resuming).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import random
import tempfile
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from vit_lib.model import SimpleViT

FORMAT = "vit_lib.checkpoint"
VERSION = 1
# What a checkpoint written by train() holds beyond the weights; --resume needs all of it.
TRAINING_KEYS = (
    "epoch",
    "train_config",
    "steps_per_epoch",
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "history",
)
RESUME_KEYS = ("format", "model", "config", *TRAINING_KEYS)


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under ``torch.compile`` (``_orig_mod``) or a data-parallel wrapper (``module``)."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def simplevit_config(model: nn.Module) -> dict[str, Any]:
    """The keyword arguments that rebuild ``model``, a :class:`~vit_lib.SimpleViT`, read from its layers.

    Checked by building a model from them (on the meta device: no memory, no time) and comparing every
    state-dict shape; raises ``ValueError`` for a model that is not a ``SimpleViT``.
    """
    model = unwrap(model)
    if not isinstance(model, SimpleViT):
        raise ValueError(
            f"cannot read the constructor arguments of a {type(model).__name__}: only a vit_lib SimpleViT "
            "carries them; pass model_config=dict(...) (the keyword arguments that rebuild the model)"
        )
    embedding, (attention, feed_forward) = model.to_patch_embedding, model.transformer.layers[0]
    head = model.linear_head[-1]
    (height, width), (patch_height, patch_width) = embedding.image_size, embedding.patch_size
    config = dict(
        image_size=height if height == width else (height, width),
        patch_size=patch_height if patch_height == patch_width else (patch_height, patch_width),
        num_classes=head.out_features,
        dim=head.in_features,
        depth=len(model.transformer.layers),
        heads=attention.heads,
        mlp_dim=feed_forward.net[1].out_features,
        channels=embedding.channels,
        dim_head=attention.to_qkv.out_features // (3 * attention.heads),
        use_flash=attention.attend.use_flash,
    )
    with torch.device("meta"):
        rebuilt = SimpleViT(**config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if shapes != {name: tuple(t.shape) for name, t in rebuilt.state_dict().items()}:
        raise ValueError(f"SimpleViT(**{config}) does not rebuild this model (its state dict differs)")
    return config


def check_writable(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` as a ``Path`` if a checkpoint can be written there; ``ValueError`` saying why not.

    Writes and removes a probe file: permission bits do not tell (root, network and FUSE file systems
    such as a mounted Google Drive), and the point is to fail before training, not after it.
    """
    path = pathlib.Path(path)
    folder = path.parent
    if path.is_dir():
        raise ValueError(
            f"{str(path)!r} is a folder; expected a file path such as {str(path / 'model.pt')!r}"
        )
    if not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} of {str(path)!r} does not exist; create it first")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as error:
        raise ValueError(f"folder {str(folder)!r} is not writable ({error.strerror or error})") from None
    return path


def write_checkpoint(path: str | pathlib.Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically: into a temporary file in the same folder, flushed to
    disk, then renamed over ``path`` (``os.replace``). A crash at any moment leaves either the previous
    checkpoint or the new one, never a half-written file."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX; not possible everywhere)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def read_checkpoint(path: str | pathlib.Path, require: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """The dict stored in ``path`` (tensors on the CPU), with every key in ``require``.

    ``FileNotFoundError`` if there is no such file; ``ValueError`` naming the file and what is missing if
    it is not a checkpoint of ours (not readable by ``torch.load(weights_only=True)``, not a dict, or a
    dict without the required entries).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist or is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError, KeyError ... by kind of file
        reason = str(error).strip().split(". ")[0].splitlines()[0][:120] if str(error).strip() else ""
        raise ValueError(
            f"{str(path)!r} is not a checkpoint: torch.load(weights_only=True) cannot read it "
            f"({type(error).__name__}{': ' + reason if reason else ''})"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, not a vit_lib checkpoint (a dict)")
    missing = [key for key in require if key not in state]
    if missing:
        keys = sorted(map(str, state))
        if "model" in missing:  # most likely a bare state dict, or somebody else's checkpoint
            what = "a vit_lib checkpoint: it has no 'model' entry (the weights)"
        elif "config" in missing:
            what = "a vit_lib checkpoint with its model: it has no 'config' entry (the model's arguments)"
        elif set(TRAINING_KEYS) <= set(missing):
            what = "a resumable vit_lib checkpoint: it holds a model but no training state (save_checkpoint)"
        else:
            what = f"a resumable vit_lib checkpoint: it has no {', '.join(map(repr, missing))}"
        raise ValueError(
            f"{str(path)!r} is not {what}; its keys: {', '.join(map(repr, keys[:4])) or 'none'}"
            + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        )
    return state


def save_checkpoint(
    path: str | pathlib.Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    **extra: object,
) -> None:
    """Save the model's weights and constructor arguments (``None`` for a model that is not a
    ``SimpleViT``), optionally the optimizer's state, and plain-Python ``extra`` values; atomically."""
    try:
        config = simplevit_config(model)
    except ValueError:
        config = None
    state = {"format": FORMAT, "version": VERSION, "model": unwrap(model).state_dict(), "config": config}
    state["extra"] = extra
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    write_checkpoint(path, state)


def load_checkpoint(
    path: str | pathlib.Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load a checkpoint into ``model`` (strictly) and optionally ``optimizer``; return its ``extra``.

    ``ValueError`` if ``path`` is not a checkpoint (see :func:`read_checkpoint`). ``map_location`` is kept
    for compatibility: tensors are read onto the CPU and ``load_state_dict`` copies them to the model's
    device.
    """
    del map_location
    state = read_checkpoint(path)
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state.get("extra", {})


def load_model(path: str | pathlib.Path) -> SimpleViT:
    """Rebuild the model stored in ``path`` from the file alone: ``SimpleViT(**config)`` with the saved
    weights, on the CPU, in eval mode. ``ValueError`` if the file is not a checkpoint with a model config."""
    state = read_checkpoint(path, require=("model", "config"))
    if not isinstance(state["config"], dict):
        raise ValueError(f"{str(path)!r} has no model config (the model saved there was not a SimpleViT)")
    model = SimpleViT(**state["config"])
    model.load_state_dict(state["model"])
    return model.eval()


def check_resumable(state: dict, config: Any, steps_per_epoch: int) -> None:
    """``ValueError`` unless ``state`` continues a run with these settings: another number of epochs,
    learning rate, ... or steps per epoch (batch size, dataset) would change the schedule midway."""
    saved = dict(state["train_config"])
    current = dataclasses.asdict(config)
    differ = [
        f"{name}={saved.get(name)!r} there, {current[name]!r} here"
        for name in current
        if name not in ("compile", "progress") and saved.get(name) != current[name]
    ]
    if state["steps_per_epoch"] != steps_per_epoch:
        differ.append(f"{state['steps_per_epoch']} steps per epoch there, {steps_per_epoch} here")
    if differ:
        raise ValueError("cannot resume: the checkpoint's run differs from this one: " + "; ".join(differ))
    if not 0 <= state["epoch"] <= config.epochs:
        raise ValueError(f"cannot resume: the checkpoint is after epoch {state['epoch']} of {config.epochs}")


def warn_if_unrepeatable(loader: Any) -> None:
    if getattr(loader, "num_workers", 0) > 0 and getattr(loader, "persistent_workers", False):
        warnings.warn(
            "persistent loader workers keep their random streams from epoch to epoch, and no checkpoint "
            "can save those: a resumed run repeats the data order but not the workers' augmentation "
            "draws. Build the loader with persistent_workers=False for an exact resume.",
            stacklevel=3,
        )


# Random generators. A training checkpoint stores the state of every generator the loop draws from,
# taken at the end of an epoch, so that a resumed run draws exactly what the uninterrupted run drew:
# torch's global generator (augmentation in the main process, weight init, the base seed of loader
# workers), the loader's shuffling generator, Python's and NumPy's (user transforms), and CUDA's.


def loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The generators a loader shuffles with: its own and its sampler's (the same one unless given apart)."""
    found = {"loader": getattr(loader, "generator", None)}
    sampler_generator = getattr(getattr(loader, "sampler", None), "generator", None)
    if sampler_generator is not None and sampler_generator is not found["loader"]:
        found["sampler"] = sampler_generator
    return {name: generator for name, generator in found.items() if generator is not None}


def rng_state(loader: Any, device: torch.device) -> dict[str, Any]:
    version, mt_state, gauss = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt_state), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "generators": {key: g.get_state() for key, g in loader_generators(loader).items()},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], loader: Any, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))  # noqa: NPY002
    generators = loader_generators(loader)
    if set(generators) != set(state["generators"]):
        raise ValueError(
            f"the checkpoint saved the shuffling generators {sorted(state['generators'])}, but this loader "
            f"has {sorted(generators)}: resume with a loader built the same way (e.g. with generator=...)"
        )
    for key, generator in generators.items():
        generator.set_state(state["generators"][key])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
