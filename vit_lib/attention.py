"""Scaled dot-product attention: an explicit math path and a dispatch to PyTorch's fused kernels.

Upstream (vit-pytorch ``simple_flash_attn_vit.py``) had three bugs here, fixed below:

1. its math path called ``einsum`` without importing it (vit-pytorch 1.26.11: a ``NameError``; 1.26.14
   imports ``einops.einsum`` but calls it pattern-first: a ``ValueError``), and both of its patterns,
   ``"b h i d, b j d -> b h i j"`` and ``"b h i j, b j d -> b h i d"``, drop the head axis of their
   second operand, ``k`` and ``v`` (a shape error once the import is fixed);
2. it chose kernels with ``torch.backends.cuda.sdp_kernel``, deprecated since torch 2.3 in favour of
   ``torch.nn.attention.sdpa_kernel`` (a ``FutureWarning`` on every forward pass);
3. on CUDA it allowed flash *only* on compute capability 8.0, and there only flash and cuDNN (its
   3-field config leaves the legacy ``enable_cudnn`` at its default ``True``), neither of which takes
   float32, so float32 inputs on an A100 found no kernel at all, while 8.6-9.0 GPUs never got flash.

Built in chapter 3 (book/03_attention.ipynb); the starting point is book/starting-point.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel  # torch >= 2.3

from vit_lib.device import cuda_capability

HALF_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MIN_CAPABILITY = (8, 0)  # PyTorch's FlashAttention-2 kernels need Ampere (sm80) or newer


def sdpa_backends(
    device_type: str, capability: tuple[int, int] | None, dtype: torch.dtype
) -> tuple[SDPBackend, ...] | None:
    """The SDPA backends to allow for inputs of ``dtype`` on ``device_type``.

    - CUDA: flash where the GPU (``capability >= (8, 0)``) and dtype (fp16/bf16) support it, then
      memory-efficient (from sm50 on: fp32 and fp16, bf16 only from sm80, never fp64), and math
      always (it runs every dtype), so that no input ever finds "no available kernel".
    - anywhere else: ``None``, no restriction. On the CPU PyTorch has two backends, a fused kernel
      (registered as ``FLASH_ATTENTION``) and math, and already prefers the fused one; there is nothing
      to restrict, and entering ``sdpa_kernel`` would cost tens of microseconds per call.

    cuDNN attention is left out on purpose: it takes only fp16/bf16 on sm80 or newer, where flash
    or memory-efficient already run, so it would rescue no input; and whether PyTorch tries it first
    depends on the cuDNN library version and the GPU (torch 2.14 puts it first on sm90/sm100
    with a cuDNN newer than 9.15, unless ``TORCH_CUDNN_SDPA_DEPRIORITIZED=1``), which would make the
    kernel that runs depend on more than this function's arguments.

    The tuple lists the backends in PyTorch's default priority order (flash, memory-efficient,
    math), but the order is not a request: :func:`restrict_sdpa` passes the list to
    ``torch.nn.attention.sdpa_kernel`` without ``set_priority=True``, so it only enables these
    backends and PyTorch tries them in its own priority order.

    A pure function of its arguments, so the policy can be tested without a GPU.
    """
    if device_type == "cuda":
        if capability is None:
            raise ValueError("capability (major, minor) is required for device_type 'cuda'")
        backends = []
        if tuple(capability) >= FLASH_MIN_CAPABILITY and dtype in HALF_DTYPES:
            backends.append(SDPBackend.FLASH_ATTENTION)
        backends += [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        return tuple(backends)
    return None


@contextlib.contextmanager
def restrict_sdpa(backends: Sequence[SDPBackend]) -> Iterator[None]:
    """Allow only ``backends`` for ``F.scaled_dot_product_attention`` inside the block."""
    with sdpa_kernel(list(backends)):
        yield


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v``, spelled out: ``(b, h, n, d)`` x3 -> ``(b, h, n, d)``.

    Materialises the ``(b, h, n, n)`` score matrix, so its memory grows as n^2.
    """
    scale = q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-2, -1)) * scale  # (b, h, n_q, n_k)
    return scores.softmax(dim=-1) @ v  # (b, h, n_q, d)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise unless q, k, v are ``(b, h, n, d)`` tensors that attention can combine."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{name} must have shape (batch, heads, tokens, dim_head), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise ValueError(
            f"q, k, v must agree in (batch, heads), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same number of tokens, got {k.shape[2]} and {v.shape[2]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must have the same dim_head, got {q.shape[3]} and {k.shape[3]}")


ATTEND_BACKENDS = ("sdpa", "math", "triton")


class Attend(nn.Module):
    """Attention core: ``(b, h, n, d)`` queries, keys, values -> ``(b, h, n, d)``.

    ``use_flash=True`` calls ``F.scaled_dot_product_attention`` restricted to the backends of
    :func:`sdpa_backends` for the input's device and dtype (decided per call, so moving the model
    between devices just works); ``use_flash=False`` runs :func:`attention_math`.

    ``backend`` names the path instead and overrides ``use_flash``: ``"sdpa"``, ``"math"``, or
    ``"triton"``, vit_lib's own FlashAttention-2 kernels (:func:`vit_lib.triton_attention.flash_attention`;
    needs the ``triton`` package, and on the CPU Triton's interpreter). :func:`set_attention_backend`
    switches every ``Attend`` of a model at once.
    """

    def __init__(self, use_flash: bool = True, backend: str | None = None) -> None:
        super().__init__()
        if not isinstance(use_flash, bool):
            raise TypeError(f"use_flash must be a bool, got {use_flash!r}")
        self.backend = check_backend(backend if backend is not None else ("sdpa" if use_flash else "math"))

    @property
    def use_flash(self) -> bool:
        """True unless the math path runs (kept for upstream's spelling)."""
        return self.backend != "math"

    def extra_repr(self) -> str:
        return f"use_flash={self.use_flash}" if self.backend != "triton" else "backend='triton'"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        check_qkv(q, k, v)
        if self.backend == "math":
            return attention_math(q, k, v)
        if self.backend == "triton":
            from vit_lib.triton_attention import flash_attention  # imports triton on first use

            return flash_attention(q, k, v)
        device = q.device
        capability = cuda_capability(device.index or 0) if device.type == "cuda" else None
        backends = sdpa_backends(device.type, capability, q.dtype)
        if backends is None:
            return F.scaled_dot_product_attention(q, k, v)
        with restrict_sdpa(backends):
            return F.scaled_dot_product_attention(q, k, v)


def check_backend(backend: str) -> str:
    if backend not in ATTEND_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTEND_BACKENDS}, got {backend!r}")
    return backend


def set_attention_backend(model: nn.Module, backend: str) -> nn.Module:
    """Run every :class:`Attend` inside ``model`` through ``backend``; returns ``model``.

    No weights change, so e.g. ``set_attention_backend(model, "triton")`` swaps in the Triton
    kernels and ``set_attention_backend(model, "sdpa")`` swaps them out again.
    """
    check_backend(backend)
    attends = [m for m in model.modules() if isinstance(m, Attend)]
    if not attends:
        raise ValueError(f"{type(model).__name__} has no Attend module whose backend could be set")
    for attend in attends:
        attend.backend = backend
    return model
