"""The models a model sweep trains: vit_lib's SimpleViT, upstream vit-pytorch's with the same weights,
and a timm ViT of the same size; each one as a ``Variant`` (eager or compiled) with its own optimizer.

Part of ``vit_lib.bench`` (chapter 8, book/08_performance.ipynb).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit_lib.configs import ModelConfig, build_model
from vit_lib.device import synchronize

MODEL_NAMES = ("vit_lib", "upstream", "timm")


def timm_vit(config: ModelConfig) -> nn.Module:
    """timm's ViT with SimpleViT's shape: no class token, no qkv bias, mean pooling."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.channels,
        num_classes=config.num_classes,
        embed_dim=config.dim,
        depth=config.depth,
        num_heads=config.heads,
        mlp_ratio=config.mlp_dim / config.dim,
        qkv_bias=False,
        class_token=False,
        global_pool="avg",
    )


def build_models(config: ModelConfig, names: Iterable[str], seed: int = 0) -> dict[str, nn.Module]:
    """vit_lib's SimpleViT, upstream's with the same weights, and a timm ViT of the same size."""
    names = list(names)
    for name in names:
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}; expected 'vit_lib', 'upstream' or 'timm'")
    torch.manual_seed(seed)
    ours = build_model(config)
    models: dict[str, nn.Module] = {}
    for name in names:
        if name == "vit_lib":
            models[name] = ours
        elif name == "upstream":
            from vit_pytorch.simple_flash_attn_vit import SimpleViT as UpstreamSimpleViT

            upstream = UpstreamSimpleViT(**config.simple_vit_kwargs(), use_flash=True)
            upstream.load_state_dict(ours.state_dict())
            models[name] = upstream
        else:
            models[name] = timm_vit(config)
    return models


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Variant:
    """One model in one mode (eager or compiled), with its own optimizer and timings."""

    model_name: str
    compiled: bool
    step: Callable[[], torch.Tensor]
    images_per_s: list[float] = field(default_factory=list)
    first_step_s: float = math.nan
    error: str | None = None  # why its warm-up failed (e.g. a compiler error); then it is not timed

    @property
    def label(self) -> str:
        return f"{self.model_name} {'compiled' if self.compiled else 'eager'}"


def make_variant(
    model_name: str,
    model: nn.Module,
    compiled: bool,
    images: torch.Tensor,
    labels: torch.Tensor,
    amp_dtype: torch.dtype | None,
    compile_backend: str | Callable,
) -> Variant:
    """A training step (forward, cross-entropy, backward, AdamW step) on a copy of ``model``."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model, backend=compile_backend) if compiled else model
    device_type = images.device.type

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    return Variant(model_name, compiled, step, [])


def timed_steps(variant: Variant, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` training steps, synchronised on CUDA."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        variant.step()
    synchronize(device)
    return time.perf_counter() - start


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_step(variant: Variant, steps: int = 2, top: int = 8) -> dict[str, Any]:
    """Where a training step's CPU time goes (``torch.profiler``, self time per op).

    ``kernel_share`` is the fraction spent in matrix multiplies and fused attention: work that
    compilation hands to the same BLAS/attention kernels, so ``1 / kernel_share`` bounds what fusing
    everything else could gain.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            variant.step()
    ops = list(prof.key_averages())  # self times partition the profiled time: no double counting
    total = sum(e.self_cpu_time_total for e in ops)
    kernels = sum(
        e.self_cpu_time_total
        for e in ops
        if e.key in MATMUL_OPS or e.key.startswith("aten::_scaled_dot_product")
    )
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "variant": variant.label,
        "kernel_share": kernels / total,
        "top_ops": [
            {"op": e.key[:60], "share": e.self_cpu_time_total / total, "calls": e.count // steps}
            for e in ops[:top]
        ],
    }
