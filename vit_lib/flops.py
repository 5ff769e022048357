"""FLOPs of SimpleViT, the GPUs' peak FLOP/s, and model FLOPs utilisation (MFU).

Derived in chapter 8 (book/08_performance.ipynb); chapter 7 (book/07_cifar10_gpu.ipynb) counts the
same FLOPs to size its GPU run. The benchmarks (``vit_lib.bench``) report MFU from these.
"""

from __future__ import annotations

import re
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


# Dense 16-bit tensor-core peaks, FLOP/s, per GPU model: half the "with sparsity" figures of NVIDIA's
# data sheets (book/references.bib: nvidia2023h100, nvidia2024h200, nvidia2020a100, nvidia2023l4,
# nvidia2018t4). Keys are model names as `gpu_model` normalises torch.cuda.get_device_name(): exact
# matches only, so that "L4" is not taken for an L40S, nor "H100" for an H100 NVL (models not listed
# have no peak, and so no MFU, rather than a wrong one). The T4 has no bf16 tensor cores.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h100": {"bfloat16": 989.5e12, "float16": 989.5e12},  # SXM5: "NVIDIA H100 80GB HBM3"
    "h100 sxm": {"bfloat16": 989.5e12, "float16": 989.5e12},
    "h100 sxm5": {"bfloat16": 989.5e12, "float16": 989.5e12},
    "h100 pcie": {"bfloat16": 756e12, "float16": 756e12},
    "h200": {"bfloat16": 989.5e12, "float16": 989.5e12},  # SXM: "NVIDIA H200"
    "a100": {"bfloat16": 312e12, "float16": 312e12},  # "NVIDIA A100 80GB PCIe" and the like
    "a100 sxm4": {"bfloat16": 312e12, "float16": 312e12},  # "NVIDIA A100-SXM4-40GB"
    "a100 pcie": {"bfloat16": 312e12, "float16": 312e12},  # "NVIDIA A100-PCIE-40GB"
    "l4": {"bfloat16": 121e12, "float16": 121e12},
    "t4": {"float16": 65e12},  # "Tesla T4": fp16 with fp32 accumulation
}
# the bf16 column alone, by the same keys (chapter 8's prose names it)
PEAK_BF16_FLOPS: dict[str, float] = {k: v["bfloat16"] for k, v in PEAK_FLOPS.items() if "bfloat16" in v}


def gpu_model(gpu_name: str) -> str:
    """The model part of a GPU name, normalised: lower case, no vendor or brand word, no memory size,
    separators as single spaces. ``"NVIDIA A100-SXM4-40GB"`` -> ``"a100 sxm4"``, ``"Tesla T4"`` ->
    ``"t4"``, ``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``, ``"NVIDIA H100 NVL"`` -> ``"h100 nvl"``."""
    words = re.split(r"[\s_-]+", gpu_name.lower().strip())
    vendor = {"nvidia", "tesla", "geforce", "quadro"}
    memory = re.compile(r"^\d+gb$|^hbm\d?e?$")
    return " ".join(w for w in words if w and w not in vendor and not memory.match(w))


def peak_flops(gpu_name: str, dtype: torch.dtype | str = torch.bfloat16) -> float | None:
    """The GPU's dense tensor-core peak in ``dtype`` (FLOP/s), or ``None`` where the model is not in
    ``PEAK_FLOPS`` or has no tensor cores for that dtype. Exact model matching (see ``gpu_model``)."""
    name = str(dtype).removeprefix("torch.")
    return PEAK_FLOPS.get(gpu_model(gpu_name), {}).get(name)


def peak_bf16_flops(gpu_name: str) -> float | None:
    """``peak_flops(gpu_name, torch.bfloat16)``."""
    return peak_flops(gpu_name, torch.bfloat16)


def mfu(images_per_s: float, flops_per_image: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: the model's FLOP/s at ``images_per_s`` as a fraction of the peak
    (None without a peak, e.g. on a CPU)."""
    return images_per_s * flops_per_image / peak_flops if peak_flops else None
