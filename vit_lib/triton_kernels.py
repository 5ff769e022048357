"""The FlashAttention-2 kernels in Triton: a forward pass and the three steps of its backward.

Written after Triton's fused-attention tutorial (``python/tutorials/06-fused-attention.py``) and
Dao's FlashAttention-2 paper, for a ViT rather than a language model: no causal mask, and any number
of tokens (197 = 14 * 14 + 1), so every load and store is masked at the ragged end of the sequence.

``triton.jit`` compiles them for CUDA tensors; with ``TRITON_INTERPRET=1`` set before ``triton`` is
first imported, the same decorator hands them to Triton's interpreter instead, which runs every
program instance with NumPy on the CPU. This module imports ``triton`` at the top: use it through
:mod:`vit_lib.triton_attention`, which imports it only when a kernel is first needed.

Conventions, shared by all four kernels (``b, h, n, d`` as in the rest of vit_lib):

- program axis 0 walks over tiles of rows (queries, or keys for ``dk_dv``), axis 1 over heads and
  axis 2 over the batch, so one program instance owns one tile of one head of one image;
- tensors arrive as a base pointer plus their ``(batch, head, token)`` strides, the last axis being
  contiguous; the logsumexp ``LSE`` and ``DELTA`` are contiguous ``(b, h, n_q)`` float32 tensors;
- scores are kept in base 2 (``exp2`` is the GPU's native exponential): ``s2 = (q . k) * scale *
  log2(e)``, and ``LSE`` is stored in base 2 as well, ``lse2 = log2(sum_j 2 ** s2_j)``;
- tiles are at least 16 x 16 (the smallest shape ``tl.dot`` takes), so the interpreter runs the
  code that the GPU compiles.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def flash_forward_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_ob,
    stride_oh,
    stride_on,
    n_q,
    n_kv,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """O = softmax(Q K^T * scale) V for one tile of BLOCK_M queries; also LSE, for the backward."""
    # Which tile of queries, which head, which image this program instance computes.
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # the query indices of this tile
    cols = tl.arange(0, BLOCK_N)  # key indices within a key tile
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < n_q  # the last tile hangs over the end of the sequence: mask its extra rows

    # The query tile is loaded once and stays in registers/shared memory for the whole loop.
    q_ptrs = Q + image * stride_qb + head * stride_qh + rows[:, None] * stride_qn + dims[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)

    # Online softmax state per query row: running max m_i, running sum l_i, unnormalised output acc.
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + image * stride_kb + head * stride_kh
    v_base = V + image * stride_vb + head * stride_vh

    for start in range(0, n_kv, BLOCK_N):  # one tile of keys and values at a time
        keys = start + cols
        key_ok = keys < n_kv
        k = tl.load(k_base + keys[:, None] * stride_kn + dims[None, :], mask=key_ok[:, None], other=0.0)
        v = tl.load(v_base + keys[:, None] * stride_vn + dims[None, :], mask=key_ok[:, None], other=0.0)

        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), base 2
        s = tl.where(key_ok[None, :], s, float("-inf"))  # keys past the end get no weight

        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every key tile holds at least one key
        p = tl.exp2(s - m_new[:, None])  # this tile's unnormalised probabilities
        alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max (0 at the start)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    # Normalise once at the end (FlashAttention-2's saving over FlashAttention-1) and store.
    out = acc / l_i[:, None]
    o_ptrs = O + image * stride_ob + head * stride_oh + rows[:, None] * stride_on + dims[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
    lse_ptrs = LSE + (image * tl.num_programs(1) + head) * n_q + rows
    tl.store(lse_ptrs, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def flash_backward_delta_kernel(
    O,
    DO,
    DELTA,
    stride_ob,
    stride_oh,
    stride_on,
    stride_dob,
    stride_doh,
    stride_don,
    n_q,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """DELTA_i = sum_d dO_id * O_id = sum_j P_ij dP_ij, the row term of the softmax gradient."""
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < n_q
    o = tl.load(
        O + image * stride_ob + head * stride_oh + rows[:, None] * stride_on + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    do = tl.load(
        DO + image * stride_dob + head * stride_doh + rows[:, None] * stride_don + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + (image * tl.num_programs(1) + head) * n_q + rows, delta, mask=row_ok)


@triton.jit
def flash_backward_dk_dv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_dob,
    stride_doh,
    stride_don,
    n_q,
    n_kv,
    qk_scale,
    scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dK and dV for one tile of BLOCK_N keys: a loop over all query tiles, recomputing P from LSE.

    DK and DV are contiguous ``(b, h, n_kv, d)`` tensors.
    """
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    keys = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    key_ok = keys < n_kv
    k = tl.load(
        K + image * stride_kb + head * stride_kh + keys[:, None] * stride_kn + dims[None, :],
        mask=key_ok[:, None],
        other=0.0,
    )
    v = tl.load(
        V + image * stride_vb + head * stride_vh + keys[:, None] * stride_vn + dims[None, :],
        mask=key_ok[:, None],
        other=0.0,
    )
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    q_base = Q + image * stride_qb + head * stride_qh
    do_base = DO + image * stride_dob + head * stride_doh
    row_stats = (image * tl.num_programs(1) + head) * n_q  # where this head's LSE and DELTA start

    for start in range(0, n_q, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < n_q
        q = tl.load(q_base + rows[:, None] * stride_qn + dims[None, :], mask=row_ok[:, None], other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_don + dims[None, :], mask=row_ok[:, None], other=0.0)
        lse = tl.load(LSE + row_stats + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + row_stats + rows, mask=row_ok, other=0.0)

        # Recompute this (BLOCK_M, BLOCK_N) tile of probabilities exactly: P = 2^(S2 - LSE2).
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where(row_ok[:, None] & key_ok[None, :], p, 0.0)

        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)  # dV = P^T dO
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # dP = dO V^T
        ds = p * (dp - delta[:, None])  # dS = P * (dP - DELTA): the softmax's Jacobian
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)  # dK = dS^T Q (unscaled)

    grad_offsets = (
        (image * tl.num_programs(1) + head) * n_kv * HEAD_DIM + keys[:, None] * HEAD_DIM + dims[None, :]
    )
    tl.store(DK + grad_offsets, (dk * scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + grad_offsets, dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def flash_backward_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_dob,
    stride_doh,
    stride_don,
    n_q,
    n_kv,
    qk_scale,
    scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dQ for one tile of BLOCK_M queries: a loop over all key tiles. DQ is contiguous (b, h, n_q, d)."""
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < n_q
    q = tl.load(
        Q + image * stride_qb + head * stride_qh + rows[:, None] * stride_qn + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    do = tl.load(
        DO + image * stride_dob + head * stride_doh + rows[:, None] * stride_don + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    row_stats = (image * tl.num_programs(1) + head) * n_q
    lse = tl.load(LSE + row_stats + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + row_stats + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + image * stride_kb + head * stride_kh
    v_base = V + image * stride_vb + head * stride_vh

    for start in range(0, n_kv, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        key_ok = keys < n_kv
        k = tl.load(k_base + keys[:, None] * stride_kn + dims[None, :], mask=key_ok[:, None], other=0.0)
        v = tl.load(v_base + keys[:, None] * stride_vn + dims[None, :], mask=key_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.where(key_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)  # dQ = dS K (unscaled)

    grad_offsets = (
        (image * tl.num_programs(1) + head) * n_q * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :]
    )
    dq_ptrs = DQ + grad_offsets
    tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])
