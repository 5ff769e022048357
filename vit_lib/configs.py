"""Model sizes and training recipes, in one typed home.

- ``MODEL_CONFIGS``: the SimpleViT sizes that the benchmarks train (chapter 8,
  book/08_performance.ipynb), each with the batch it is timed at; ``build_model`` makes one.
- ``PRESETS``: the model and optimisation settings per dataset of ``python -m vit_lib.train``, chosen
  in chapters 6 and 7 (book/06_training_digits.ipynb, book/07_cifar10_gpu.ipynb); also importable as
  ``vit_lib.train.PRESETS``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypedDict

from vit_lib.model import SimpleViT


@dataclass(frozen=True)
class ModelConfig:
    """A SimpleViT size, and the batch to train it with. ``heads * dim_head == dim`` so that a timm
    ViT (whose attention width is always ``dim``) can match it."""

    name: str
    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    batch_size: int
    dim_head: int = 64
    channels: int = 3

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def simple_vit_kwargs(self) -> dict[str, int]:
        kwargs = asdict(self)
        del kwargs["name"], kwargs["batch_size"]
        return kwargs


MODEL_CONFIGS: dict[str, ModelConfig] = {
    config.name: config
    for config in (
        # ViT-Ti width at CIFAR resolution, half the depth: small enough for a CPU.
        ModelConfig("cpu-small", 32, 4, 10, dim=192, depth=6, heads=3, mlp_dim=768, batch_size=64),
        ModelConfig("vit-s16", 224, 16, 1000, dim=384, depth=12, heads=6, mlp_dim=1536, batch_size=128),
        ModelConfig("vit-b16", 224, 16, 1000, dim=768, depth=12, heads=12, mlp_dim=3072, batch_size=128),
        ModelConfig("quick", 16, 4, 10, dim=32, depth=2, heads=2, mlp_dim=64, batch_size=4, dim_head=16),
    )
}


def build_model(config: ModelConfig | str) -> SimpleViT:
    """A freshly initialised SimpleViT of ``config`` (or of ``MODEL_CONFIGS[config]``)."""
    if isinstance(config, str):
        if config not in MODEL_CONFIGS:
            raise ValueError(f"unknown model config {config!r}; expected one of {sorted(MODEL_CONFIGS)}")
        config = MODEL_CONFIGS[config]
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig or its name, not {type(config).__name__}")
    return SimpleViT(**config.simple_vit_kwargs())


class Preset(TypedDict, total=False):
    """One dataset's recipe: ``SimpleViT`` keyword arguments (the data supplies image size, channels
    and classes), ``TrainConfig`` settings, the batch size, and for the digits the augmentation shift."""

    model: dict[str, int]
    train: dict[str, Any]
    batch_size: int
    max_shift: int


# Model and optimisation settings per dataset; the training chapters explain how they were chosen.
PRESETS: dict[str, Preset] = {
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
