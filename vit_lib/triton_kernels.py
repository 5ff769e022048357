"""The FlashAttention-2 kernels in Triton: a forward pass and the three steps of its backward.

Written after Triton's fused-attention tutorial (``python/tutorials/06-fused-attention.py``) and
Dao's FlashAttention-2 paper, for a ViT rather than a language model: no causal mask, and any number
of tokens (197 = 14 * 14 + 1), so every load and store is masked at the ragged end of the sequence.

``triton.jit`` compiles them for CUDA tensors; with ``TRITON_INTERPRET=1`` set before ``triton`` is
first imported, the same decorator hands them to Triton's interpreter instead, which runs every
program instance with NumPy on the CPU. This module imports ``triton`` at the top: use it through
:mod:`vit_lib.triton_attention`, which imports it only when a kernel is first needed.

Conventions, shared by the four kernels (``b, h, n, d`` as in the rest of vit_lib):

- program axis 0 walks over tiles of rows (of queries; of keys for ``dk_dv``), axis 1 over heads,
  axis 2 over the batch: one program instance owns one tile of one head of one image;
- every tensor is contiguous, ``(b, h, n, d)`` or, for ``LSE`` and ``DELTA``, ``(b, h, n_q)``
  float32, so the rows of one head start at ``(image * heads + head) * n`` rows;
- scores are kept in base 2 (``exp2`` is the GPU's native exponential): ``s = (q . k) * qk_scale``
  with ``qk_scale = log2(e) / sqrt(d)``, and ``LSE`` holds ``log2(sum_j 2^s_j)``;
- tiles are at least 16 x 16 (the smallest shape ``tl.dot`` takes), so the interpreter runs the
  code that the GPU compiles.

Built in chapter 9 (book/09_flash_attention_triton.ipynb).
"""

import triton
import triton.language as tl


@triton.jit
def flash_forward_kernel(
    Q, K, V, OUT, LSE, n_q, n_kv, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """OUT = softmax(Q K^T / sqrt(d)) V for one tile of BLOCK_M queries; LSE for the backward."""
    # Which tile of queries, of which head, of which image this program instance computes.
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    bh = image * tl.num_programs(1) + head  # index of this (image, head) pair
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # the query indices of this tile
    cols = tl.arange(0, BLOCK_N)  # key indices within one key tile
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < n_q  # the last tile hangs over the end of the sequence: mask its extra rows

    # The query tile is loaded once and stays on chip for the whole loop over keys.
    q_ptrs = Q + (bh * n_q + rows[:, None]) * HEAD_DIM + dims[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)

    # Online softmax, per query row: running max m_i, running sum l_i, unnormalised output acc.
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    for start in range(0, n_kv, BLOCK_N):  # one tile of keys and values at a time
        keys = start + cols
        key_ok = keys < n_kv
        kv_offsets = (bh * n_kv + keys[:, None]) * HEAD_DIM + dims[None, :]
        k = tl.load(K + kv_offsets, mask=key_ok[:, None], other=0.0)  # (BLOCK_N, HEAD_DIM)
        v = tl.load(V + kv_offsets, mask=key_ok[:, None], other=0.0)

        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), base 2
        s = tl.where(key_ok[None, :], s, float("-inf"))  # keys past the end get no weight

        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every key tile holds at least one key
        p = tl.exp2(s - m_new[:, None])  # this tile's probabilities, up to the row's normaliser
        alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max (0 at the start)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    # Divide by the softmax's sum once, at the end (one of FlashAttention-2's savings), and store.
    out = acc / l_i[:, None]
    tl.store(OUT + (bh * n_q + rows[:, None]) * HEAD_DIM + dims[None, :], out.to(OUT.dtype.element_ty),
             mask=row_ok[:, None])  # fmt: skip
    tl.store(LSE + bh * n_q + rows, m_i + tl.log2(l_i), mask=row_ok)  # log2 of the row's sum


@triton.jit
def flash_backward_delta_kernel(OUT, DOUT, DELTA, n_q, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """DELTA_i = sum_d dO_id O_id (which equals sum_j P_ij dP_ij), one float per query."""
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    bh = image * tl.num_programs(1) + head
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_q
    offsets = (bh * n_q + rows[:, None]) * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :]
    o = tl.load(OUT + offsets, mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DOUT + offsets, mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + bh * n_q + rows, tl.sum(o * do, axis=1), mask=row_ok)


@triton.jit
def flash_backward_dk_dv_kernel(
    Q, K, V, DOUT, LSE, DELTA, DK, DV, n_q, n_kv, qk_scale, scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dK and dV for one tile of BLOCK_N keys: a loop over every query tile, recomputing P from LSE."""
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    bh = image * tl.num_programs(1) + head
    keys = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    key_ok = keys < n_kv
    kv_offsets = (bh * n_kv + keys[:, None]) * HEAD_DIM + dims[None, :]
    k = tl.load(K + kv_offsets, mask=key_ok[:, None], other=0.0)  # stays on chip, like q in the forward
    v = tl.load(V + kv_offsets, mask=key_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    for start in range(0, n_q, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < n_q
        q_offsets = (bh * n_q + rows[:, None]) * HEAD_DIM + dims[None, :]
        q = tl.load(Q + q_offsets, mask=row_ok[:, None], other=0.0)
        do = tl.load(DOUT + q_offsets, mask=row_ok[:, None], other=0.0)
        lse = tl.load(LSE + bh * n_q + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh * n_q + rows, mask=row_ok, other=0.0)

        # This (BLOCK_M, BLOCK_N) tile of probabilities, recomputed exactly: P = 2^(S - LSE).
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.where(row_ok[:, None] & key_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)

        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)  # dV = P^T dO
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # dP = dO V^T
        ds = p * (dp - delta[:, None])  # dS = P * (dP - DELTA), the softmax's backward
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)  # dK = dS^T Q / sqrt(d)

    tl.store(DK + kv_offsets, (dk * scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + kv_offsets, dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def flash_backward_dq_kernel(
    Q, K, V, DOUT, LSE, DELTA, DQ, n_q, n_kv, qk_scale, scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dQ for one tile of BLOCK_M queries: a loop over every key tile (no atomics: one writer per row)."""
    tile, head, image = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    bh = image * tl.num_programs(1) + head
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < n_q
    q_offsets = (bh * n_q + rows[:, None]) * HEAD_DIM + dims[None, :]
    q = tl.load(Q + q_offsets, mask=row_ok[:, None], other=0.0)
    do = tl.load(DOUT + q_offsets, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * n_q + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh * n_q + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    for start in range(0, n_kv, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        key_ok = keys < n_kv
        kv_offsets = (bh * n_kv + keys[:, None]) * HEAD_DIM + dims[None, :]
        k = tl.load(K + kv_offsets, mask=key_ok[:, None], other=0.0)
        v = tl.load(V + kv_offsets, mask=key_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.where(key_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)  # dQ = dS K / sqrt(d)

    tl.store(DQ + q_offsets, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])
