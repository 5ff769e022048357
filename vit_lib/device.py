"""Where to run and in which precision: the one device policy that training, benchmarks and notebooks use.

Used from chapter 3 (book/03_attention.ipynb: the capability behind the SDPA backend choice) and
chapters 6-8 (book/06_training_digits.ipynb, book/07_cifar10_gpu.ipynb: the autocast dtype;
book/08_performance.ipynb: the benchmarks).
"""

from __future__ import annotations

import functools

import torch

BF16_MIN_CAPABILITY = (8, 0)  # native bf16 tensor cores: Ampere (sm80) or newer


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def cuda_capability(index: int) -> tuple[int, int]:
    """Compute capability of CUDA device ``index``, e.g. ``(8, 0)`` for an A100 (cached)."""
    return torch.cuda.get_device_capability(index)


def autocast_dtype(capability: tuple[int, int]) -> torch.dtype:
    """The policy as a pure function of a GPU's compute capability: bf16 where it is native (8.0+),
    fp16 (which needs loss scaling) on older GPUs such as Colab's T4 (7.5)."""
    return torch.bfloat16 if tuple(capability) >= BF16_MIN_CAPABILITY else torch.float16


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``: ``autocast_dtype`` of its compute capability on a GPU, and
    ``None`` (full precision) on the CPU."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return autocast_dtype(cuda_capability(index))


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a host clock measures it; a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
