"""FlashAttention-2 in Triton: ``flash_attention(q, k, v)``, forward and backward, on ``(b, h, n, d)``.

The kernels live in :mod:`vit_lib.triton_kernels`; this module checks the inputs, launches them and
wires them into autograd. ``triton`` is imported only when :func:`flash_attention` is first called,
so ``import vit_lib`` works where Triton is not installed (macOS, Windows).

Where the kernels run. Triton decides once per process, when ``triton`` is first imported, whether
``@triton.jit`` compiles kernels for the GPU or hands them to its interpreter (which runs each program
instance with NumPy): the environment variable ``TRITON_INTERPRET=1`` selects the interpreter, for
Triton's own library functions too. vit_lib does not set that variable for you, since doing so would
also send every other Triton kernel of the process (``torch.compile``'s, say) through the interpreter.

- CUDA tensors (fp16, bf16, fp32), interpreter off: compiled kernels. fp32 matmuls use IEEE
  precision, not TF32, so that float32 results match PyTorch's as closely as on the CPU.
- CPU tensors (fp32): need the interpreter on. Set ``TRITON_INTERPRET=1`` before ``triton`` is first
  imported (``import torch`` does not import it; ``torch.compile`` does), e.g. in the shell or at the
  top of a notebook; otherwise :func:`flash_attention` raises a ``RuntimeError`` saying so.
  The interpreter is exact enough to test against and far too slow to time.
- With the interpreter on, CUDA tensors run through it as well (copied to the host and back).

Built in chapter 9 (book/09_flash_attention_triton.ipynb).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from vit_lib.attention import check_qkv

HEAD_DIMS = (16, 32, 64, 128)  # the widths the kernels accept (powers of two from 16 up)
TILE_SIZES = (16, 32, 64, 128)  # tl.dot needs tiles of at least 16 on every side
DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float16, torch.bfloat16, torch.float32)}
LOG2_E = 1.4426950408889634  # log2(e): the kernels compute exp(x) as exp2(x * LOG2_E)


def triton_available() -> bool:
    """Whether the ``triton`` package is installed here (it is not on macOS or Windows)."""
    return importlib.util.find_spec("triton") is not None


def import_triton() -> Any:
    """``import triton``, with an error that says what to do where it is missing."""
    try:
        import triton
    except ImportError as error:
        raise ImportError(
            "flash_attention needs the triton package (pip install triton; Linux only); "
            "vit_lib.Attend's 'sdpa' and 'math' backends need no Triton"
        ) from error
    return triton


def interpreter_active() -> bool:
    """Whether Triton's interpreter runs kernels in this process (``TRITON_INTERPRET=1`` at import).

    Checked on one of Triton's own library functions, decorated when ``triton`` was imported:
    setting the variable later does not switch the interpreter on.
    """
    import_triton()
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


def default_tiles(dim_head: int) -> tuple[int, int]:
    """``(block_m, block_n)``: 64 x 64, or 64 x 32 for ``dim_head`` 128, so that the float32 tiles and
    the pipelined K/V loads fit in a GPU's shared memory (a precaution, not a measured optimum)."""
    return (64, 64) if dim_head <= 64 else (64, 32)


def check_flash_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_m: int, block_n: int) -> None:
    """Raise a ``ValueError``/``TypeError`` naming the problem unless the kernels can take these inputs."""
    check_qkv(q, k, v)
    d = q.shape[-1]
    if v.shape[-1] != d:
        raise ValueError(f"v must have the dim_head of q and k ({d}), got {v.shape[-1]}")
    if d not in HEAD_DIMS:
        raise ValueError(f"flash_attention supports dim_head in {HEAD_DIMS}, got {d}")
    if q.shape[2] == 0 or k.shape[2] == 0:
        raise ValueError(
            f"flash_attention needs at least one query and one key, got {q.shape[2]}, {k.shape[2]}"
        )
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    allowed = DTYPES.get(q.device.type)
    if allowed is None:
        raise ValueError(f"flash_attention runs on 'cuda' (compiled) or 'cpu' (interpreted), got {q.device}")
    if q.dtype not in allowed:
        names = ", ".join(str(t).removeprefix("torch.") for t in allowed)
        raise TypeError(f"flash_attention on {q.device.type} supports {names}, got {q.dtype}")
    for name, tile in (("block_m", block_m), ("block_n", block_n)):
        if isinstance(tile, bool) or tile not in TILE_SIZES:
            raise ValueError(f"{name} must be one of {TILE_SIZES}, got {tile!r}")


def resolve_tiles(q: Any, block_m: int | None, block_n: int | None) -> tuple[Any, Any]:
    """Fill in :func:`default_tiles` for the tile sizes left as ``None`` (before the checks run)."""
    if block_m is not None and block_n is not None:
        return block_m, block_n
    d = q.shape[-1] if isinstance(q, torch.Tensor) and q.ndim == 4 else 64
    default_m, default_n = default_tiles(d)
    return (default_m if block_m is None else block_m), (default_n if block_n is None else block_n)


def load_kernels(device: torch.device) -> Any:
    """The kernel module, imported on first use; raises unless the kernels can run on ``device``."""
    import_triton()
    if device.type == "cpu" and not interpreter_active():
        raise RuntimeError(
            "flash_attention on CPU tensors runs in Triton's interpreter, which is off in this process: "
            "set the environment variable TRITON_INTERPRET=1 before triton is first imported "
            "(in the shell, or at the top of the notebook before anything else)"
        )
    from vit_lib import triton_kernels

    return triton_kernels


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)``: how many tiles of ``b`` rows cover ``a`` rows."""
    return -(-a // b)


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: IEEE for float32 (no TF32 rounding), TF32 (unused) for halves."""
    return "ieee" if dtype == torch.float32 else "tf32"


def flash_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_m: int, block_n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel on contiguous inputs: ``out (b, h, n_q, d)``, ``lse2 (b, h, n_q)``.

    ``lse2`` is float32, in base 2: ``log2(sum_j 2^s_ij)`` with ``s = q k^T log2(e) / sqrt(d)``.
    """
    b, h, n_q, d = q.shape
    out = torch.empty_like(q)
    lse2 = torch.empty((b, h, n_q), device=q.device, dtype=torch.float32)
    grid = (cdiv(n_q, block_m), h, b)  # one program instance per (query tile, head, image)
    load_kernels(q.device).flash_forward_kernel[grid](
        q, k, v, out, lse2, n_q, k.shape[2], d**-0.5 * LOG2_E,
        HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=block_n, PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    return out, lse2


def flash_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse2: torch.Tensor,
    block_m: int,
    block_n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the three backward kernels: ``dq, dk, dv`` with the shapes of ``q, k, v``."""
    b, h, n_q, d = q.shape
    n_kv = k.shape[2]
    kernels = load_kernels(q.device)
    grad_out = grad_out.contiguous()
    scale = d**-0.5
    # 1. delta_i = rowsum(dO * O): one float per query, read by both gradient kernels.
    delta = torch.empty_like(lse2)
    kernels.flash_backward_delta_kernel[(cdiv(n_q, block_m), h, b)](
        out, grad_out, delta, n_q, HEAD_DIM=d, BLOCK_M=block_m
    )
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    tiles = {"HEAD_DIM": d, "BLOCK_M": block_m, "BLOCK_N": block_n, "PRECISION": dot_precision(q.dtype)}
    # 2. dK, dV: one program per key tile, looping over the query tiles.
    kernels.flash_backward_dk_dv_kernel[(cdiv(n_kv, block_n), h, b)](
        q, k, v, grad_out, lse2, delta, dk, dv, n_q, n_kv, scale * LOG2_E, scale, **tiles
    )
    # 3. dQ: one program per query tile, looping over the key tiles.
    kernels.flash_backward_dq_kernel[(cdiv(n_q, block_m), h, b)](
        q, k, v, grad_out, lse2, delta, dq, n_q, n_kv, scale * LOG2_E, scale, **tiles
    )
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: the forward saves ``out`` and the logsumexp, never the ``(n, n)`` matrix."""

    @staticmethod
    def forward(ctx: Any, q, k, v, block_m: int, block_n: int) -> torch.Tensor:
        q, k, v = (t.contiguous() for t in (q, k, v))  # a copy only for views, as from rearrange
        out, lse2 = flash_forward(q, k, v, block_m, block_n)
        ctx.save_for_backward(q, k, v, out, lse2)
        ctx.tiles = (block_m, block_n)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor):
        q, k, v, out, lse2 = ctx.saved_tensors
        dq, dk, dv = flash_backward(grad_out, q, k, v, out, lse2, *ctx.tiles)
        return dq, dk, dv, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` by FlashAttention-2 kernels: ``(b, h, n, d)`` x3 -> ``(b, h, n, d)``.

    ``k`` and ``v`` may have another number of tokens than ``q``; ``d`` must be 16, 32, 64 or 128.
    ``block_m`` x ``block_n`` is the tile of queries x keys that one program instance works on (16,
    32, 64 or 128 each; by default :func:`default_tiles`).
    Extra memory grows as n, not n^2: the forward keeps one float per query (the logsumexp) for the
    backward. Inputs that are views (as ``rearrange`` makes them) are copied to contiguous memory
    first, ``3 n d`` numbers per head, small next to the ``n^2`` scores the kernels never store.
    Differentiable in ``q``, ``k`` and ``v``, once (no double backward).
    """
    block_m, block_n = resolve_tiles(q, block_m, block_n)
    check_flash_inputs(q, k, v, block_m, block_n)
    return FlashAttentionFunction.apply(q, k, v, block_m, block_n)


def flash_attention_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """The logsumexp the forward stores, ``logsumexp(q k^T / sqrt(d), dim=-1)``: ``(b, h, n_q)`` float32."""
    block_m, block_n = resolve_tiles(q, block_m, block_n)
    check_flash_inputs(q, k, v, block_m, block_n)
    q, k, v = (t.detach().contiguous() for t in (q, k, v))
    return flash_forward(q, k, v, block_m, block_n)[1] / LOG2_E  # base 2 -> natural log
