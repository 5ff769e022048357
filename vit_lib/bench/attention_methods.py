"""The attention methods a benchmark can time, by name: ``math``, ``sdpa``, ``sdpa:<BACKEND>`` and
``triton``; their inputs; and which ATen kernel each one reaches.

Part of ``vit_lib.bench`` (chapter 8, book/08_performance.ipynb; ``triton`` from chapter 9,
book/09_flash_attention_triton.ipynb).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vit_lib.attention import SDPBackend, attention_math, restrict_sdpa
from vit_lib.triton_attention import triton_available

# The backends worth forcing one at a time on each device type. On the CPU, PyTorch registers its
# fused kernel as FLASH_ATTENTION; the CUDA list includes cuDNN where torch has it.
FORCEABLE_BACKENDS = {
    "cpu": ("FLASH_ATTENTION", "MATH"),
    "cuda": ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"),
}


def attention_methods(device_type: str) -> list[str]:
    """``math`` (vit_lib's explicit path), ``sdpa`` (PyTorch's own choice), ``sdpa:<BACKEND>``, and on
    CUDA, where Triton is installed, ``triton`` (vit_lib's FlashAttention-2 kernels; never on the CPU,
    where they would run in Triton's interpreter, which cannot be timed meaningfully)."""
    forced = [b for b in FORCEABLE_BACKENDS.get(device_type, ("MATH",)) if hasattr(SDPBackend, b)]
    triton = ["triton"] if device_type == "cuda" and triton_available() else []
    return ["math", "sdpa"] + [f"sdpa:{b}" for b in forced] + triton


def method_context(method: str) -> contextlib.AbstractContextManager:
    """The context to run ``method`` in: a one-backend restriction for ``sdpa:<BACKEND>``."""
    if method.startswith("sdpa:"):
        return restrict_sdpa([getattr(SDPBackend, method.split(":", 1)[1])])
    if method in ("math", "sdpa", "triton"):
        return contextlib.nullcontext()
    raise ValueError(
        f"unknown attention method {method!r}; expected 'math', 'sdpa', 'sdpa:<BACKEND>' or 'triton'"
    )


def attention_call(method: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The function that runs ``method``; ``triton`` is ``vit_lib.triton_attention.flash_attention``
    (CUDA only; an ImportError where that module or Triton is missing)."""
    method_context(method)  # validates the name
    if method == "triton":
        from vit_lib.triton_attention import flash_attention  # imports triton

        return flash_attention
    return attention_math if method == "math" else F.scaled_dot_product_attention


def qkv_inputs(
    n: int, *, batch: int, heads: int, dim_head: int, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded random ``q, k, v``, each ``(batch, heads, n, dim_head)``."""
    generator = torch.Generator().manual_seed(seed)
    shape = (3, batch, heads, n, dim_head)
    q, k, v = torch.randn(shape, generator=generator).to(device=device, dtype=dtype).unbind(0)
    return q, k, v


def dtype_from_name(name: str) -> torch.dtype:
    """``"bfloat16"`` (or ``"torch.bfloat16"``) -> ``torch.bfloat16``; ValueError for anything else."""
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"unknown floating-point dtype {name!r}; expected e.g. float32 or bfloat16")
    return dtype


def sdpa_kernel_name(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """The ATen op that ``method`` dispatches to, e.g. ``_scaled_dot_product_flash_attention_for_cpu``.

    Recorded with a dispatch mode (silent and cheap, unlike the profiler). The math backend is a
    composite that decomposes into ``bmm``/``_safe_softmax`` before reaching the mode.
    """
    if method == "math":
        return None
    if method == "triton":
        return "vit_lib.triton_kernels.flash_forward_kernel"
    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with method_context(method), RecordOps() as recorder:
        F.scaled_dot_product_attention(q, k, v)
    fused = [op for op in recorder.ops if op.startswith("_scaled_dot_product")]
    return fused[0] if fused else "math: " + " ".join(dict.fromkeys(recorder.ops))
