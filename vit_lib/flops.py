"""FLOPs of SimpleViT, the GPUs' peak FLOP/s, and model FLOPs utilisation (MFU).

Derived in chapter 8 (book/08_performance.ipynb); chapter 7 (book/07_cifar10_gpu.ipynb) counts the
same FLOPs to size its GPU run. The benchmarks (``vit_lib.bench``) report MFU from these.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class VitShape(Protocol):
    """What the FLOP count needs to know of a model: ``vit_lib.configs.ModelConfig`` has it all."""

    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    dim_head: int
    channels: int


def vit_flops_breakdown(config: VitShape) -> dict[str, int]:
    """Forward matrix-multiply FLOPs (2 per multiply-add) of SimpleViT on one image, per part.

    Keys: ``patch_embedding``; per block, times ``depth``: ``qkv``, ``scores`` (``q k^T``),
    ``attention_values`` (``attn v``), ``out_projection``, ``mlp`` (both layers); and ``head``.
    """
    n, dim, inner = (config.image_size // config.patch_size) ** 2, config.dim, config.heads * config.dim_head
    patch_dim = config.channels * config.patch_size**2
    depth = config.depth
    return {
        "patch_embedding": 2 * n * patch_dim * dim,
        "qkv": depth * 2 * n * dim * 3 * inner,
        "scores": depth * 2 * n * n * inner,
        "attention_values": depth * 2 * n * n * inner,
        "out_projection": depth * 2 * n * inner * dim,
        "mlp": depth * 2 * (2 * n * dim * config.mlp_dim),
        "head": 2 * dim * config.num_classes,
    }


def vit_flops_per_image(config: VitShape, training: bool = False) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of SimpleViT on one image.

    Counts what dominates and what ``FlopCounterMode`` counts: the patch projection, per block the qkv
    projection, ``q k^T``, ``attn v``, the output projection and the two MLP layers, and the head;
    not norms, softmax or GELU. A training step costs 3x the forward pass: backward computes two
    matrix products (gradients of both operands) for each one of the forward pass.
    """
    forward = sum(vit_flops_breakdown(config).values())
    return 3 * forward if training else forward


def counted_flops(model: nn.Module, images: torch.Tensor, training: bool = False) -> int:
    """FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` counts for a forward (+ backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = model(images)
        if training:
            out.float().sum().backward()
    return counter.get_total_flops()


# Dense bf16 tensor-core peaks, FLOP/s: half the "with sparsity" figures of NVIDIA's data sheets
# (book/references.bib: nvidia2023h100, nvidia2024h200, nvidia2020a100, nvidia2023l4), keyed by the
# normalised name (``normalise_gpu_name``) that ``torch.cuda.get_device_name()`` reports, or the short
# model name. Exact keys: an "H100 NVL", an "L40S" or an "H200 NVL" is not one of these, and gets None.
PEAK_BF16_FLOPS: dict[str, float] = {
    "h100 80gb hbm3": 989.5e12,  # H100 SXM5
    "h100 sxm": 989.5e12,
    "h100": 989.5e12,
    "h100 pcie": 756e12,
    "h200": 989.5e12,  # H200 SXM
    "a100 sxm4 40gb": 312e12,
    "a100 sxm4 80gb": 312e12,
    "a100 pcie 40gb": 312e12,
    "a100 80gb pcie": 312e12,
    "a100": 312e12,
    "l4": 121e12,
}


def normalise_gpu_name(name: str) -> str:
    """``"NVIDIA A100-SXM4-40GB"`` -> ``"a100 sxm4 40gb"``: lower case, no vendor, words split by one
    space (hyphens and underscores count as spaces)."""
    words = name.lower().replace("-", " ").replace("_", " ").split()
    if words[:1] == ["nvidia"]:
        words = words[1:]
    return " ".join(words)


def peak_bf16_flops(gpu_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of the GPU named exactly ``gpu_name`` (after normalising), else None."""
    return PEAK_BF16_FLOPS.get(normalise_gpu_name(gpu_name))


def mfu(images_per_s: float, flops_per_image: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: the model's FLOP/s at ``images_per_s`` as a fraction of the peak
    (None without a peak, e.g. on a CPU)."""
    return images_per_s * flops_per_image / peak_flops if peak_flops else None
