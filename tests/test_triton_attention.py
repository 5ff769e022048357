"""vit_lib.triton_attention: the FlashAttention-2 kernels against the math path, forward and backward.

On the CPU the kernels run in Triton's interpreter, which conftest.py switches on (TRITON_INTERPRET=1)
where no GPU is present; on a GPU machine they are compiled, and the ``cuda`` tests run. The interpreter
is slow: the shapes below are small in b and h, large enough in n to need several tiles and masking.
Measured errors (``python scripts/measure_tolerances.py``) are below 2e-6 for every fp32 case here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from einops import rearrange

from vit_lib import Attend, SimpleViT, attention_math, set_attention_backend

pytest.importorskip("triton", reason="Triton is not installed here (it has no macOS or Windows wheels)")

from vit_lib.triton_attention import default_tiles, flash_attention, flash_attention_lse, interpreter_active

ROOT = Path(__file__).resolve().parent.parent
OUT_ATOL, GRAD_ATOL = 1e-5, 1e-4  # float32 tolerances, against attention_math in float32

# Shape families, (b, h, n, d) and (block_m, block_n): every length of the issue at the default tiles
# (one tile up to n = 64, several beyond); every head width with 16 x 16 tiles over a length that
# needs two of them; then lopsided tiles.
LENGTHS = [((1, 2, n, 64), (64, 64)) for n in (1, 7, 16, 17, 50, 65, 197)]
WIDTHS = [((2, 1, 17, d), (16, 16)) for d in (16, 32, 64, 128)]
TILES = [((1, 1, 50, 32), tiles) for tiles in ((16, 32), (32, 16), (128, 128))]

interpreted = pytest.mark.skipif(
    not interpreter_active(),
    reason="Triton's interpreter is off in this process; run with TRITON_INTERPRET=1 to test on the CPU",
)


def qkv(shape, dtype=torch.float32, device="cpu", n_kv=None):
    b, h, n, d = shape
    kv_shape = (b, h, n if n_kv is None else n_kv, d)
    return [
        torch.randn(s, dtype=dtype, device=device, requires_grad=True) for s in (shape, kv_shape, kv_shape)
    ]


def errors(q, k, v, **tiles):
    """Max |diff| of flash_attention vs attention_math: (output, [dq, dk, dv])."""
    out = flash_attention(q, k, v, **tiles)
    expected = attention_math(q, k, v)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad_out)
    assert out.shape == expected.shape and out.dtype == q.dtype
    return (out - expected).abs().max().item(), [
        (g - e).abs().max().item() for g, e in zip(grads, expected_grads)
    ]


@interpreted
@pytest.mark.parametrize(("shape", "tiles"), LENGTHS + WIDTHS + TILES, ids=str)
def test_forward_and_gradients_match_the_math_path(shape, tiles):
    q, k, v = qkv(shape)
    out_err, grad_errs = errors(q, k, v, block_m=tiles[0], block_n=tiles[1])
    assert out_err <= OUT_ATOL, out_err
    assert max(grad_errs) <= GRAD_ATOL, grad_errs


@interpreted
def test_default_tiles_are_narrower_for_dim_head_128_and_give_the_same_result():
    assert default_tiles(64) == (64, 64) and default_tiles(128) == (64, 32)
    q, k, v = qkv((1, 1, 65, 128))
    out_err, grad_errs = errors(q, k, v)  # default tiles: 64 x 32
    assert out_err <= OUT_ATOL and max(grad_errs) <= GRAD_ATOL, (out_err, grad_errs)


@interpreted
def test_float64_reference_and_the_stored_logsumexp():
    q, k, v = qkv((1, 2, 33, 32))
    scores = torch.einsum("bhid,bhjd->bhij", q.double(), k.double()) / 32**0.5
    expected = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v.double())
    out = flash_attention(q, k, v, block_m=16, block_n=16)
    torch.testing.assert_close(out.double(), expected, atol=OUT_ATOL, rtol=0)
    lse = flash_attention_lse(q, k, v, block_m=16, block_n=16)
    assert lse.shape == (1, 2, 33) and lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1), atol=1e-5, rtol=0)


@interpreted
def test_keys_and_values_may_be_more_or_fewer_than_queries():
    for n_q, n_kv in ((7, 50), (50, 7)):
        q, k, v = qkv((1, 1, n_q, 16), n_kv=n_kv)
        out_err, grad_errs = errors(q, k, v, block_m=16, block_n=16)
        assert out_err <= OUT_ATOL and max(grad_errs) <= GRAD_ATOL, (n_q, n_kv, out_err, grad_errs)


@interpreted
def test_views_from_rearrange_give_the_same_result_as_contiguous_inputs():
    qkv_packed = torch.randn(2, 19, 3 * 2 * 16)  # (b, n, 3 * h * d), as Attention's to_qkv makes it
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=2) for t in qkv_packed.chunk(3, dim=-1))
    assert not q.is_contiguous()
    torch.testing.assert_close(
        flash_attention(q, k, v),
        flash_attention(q.contiguous(), k.contiguous(), v.contiguous()),
        atol=0,
        rtol=0,
    )


@interpreted
def test_simplevit_with_triton_attention_matches_sdpa_logits_and_gradients():
    # 20 / 4 = 5 x 5 = 25 tokens: more than one 16-row tile, not a multiple of it
    config = dict(
        image_size=20, patch_size=4, num_classes=5, dim=32, depth=2, heads=2, mlp_dim=64, dim_head=16
    )
    model = SimpleViT(**config)
    images, labels = torch.randn(3, 3, 20, 20), torch.tensor([0, 3, 4])

    def logits_and_grads():
        model.zero_grad()
        logits = model(images)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    logits_sdpa, grads_sdpa = logits_and_grads()
    assert set_attention_backend(model, "triton") is model
    assert all(m.backend == "triton" for m in model.modules() if isinstance(m, Attend))
    logits_triton, grads_triton = logits_and_grads()
    torch.testing.assert_close(logits_triton, logits_sdpa, atol=OUT_ATOL, rtol=0)
    for name, grad in grads_sdpa.items():
        torch.testing.assert_close(grads_triton[name], grad, atol=GRAD_ATOL, rtol=0, msg=name)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(d=8), ValueError, r"dim_head in \(16, 32, 64, 128\), got 8"),
        (dict(d=40), ValueError, "got 40"),
        (dict(n=0), ValueError, "at least one query"),
        (dict(dtype=torch.float64), TypeError, "on cpu supports float32, got torch.float64"),
        (dict(dtype=torch.float16), TypeError, "on cpu supports float32"),
        (dict(device="meta"), ValueError, "runs on 'cuda'"),
        (dict(block_m=8), ValueError, r"block_m must be one of \(16, 32, 64, 128\), got 8"),
        (dict(block_n=True), ValueError, "block_n must be one of"),
        (dict(block_n=256), ValueError, "block_n must be one of"),
    ],
)
def test_bad_inputs_are_refused_before_any_kernel_runs(change, error, match):
    d, n = change.get("d", 16), change.get("n", 4)
    q = torch.randn(1, 1, n, d, dtype=change.get("dtype", torch.float32), device=change.get("device", "cpu"))
    tiles = {key: change[key] for key in ("block_m", "block_n") if key in change}
    with pytest.raises(error, match=match):
        flash_attention(q, q, q, **tiles)


def test_mismatched_inputs_are_refused():
    q = torch.randn(1, 2, 4, 16)
    with pytest.raises(TypeError, match="one dtype"):
        flash_attention(q, q, q.double())
    with pytest.raises(ValueError, match="one device"):
        flash_attention(q, q, q.to("meta"))
    with pytest.raises(ValueError, match="dim_head of q and k"):
        flash_attention(q, q, torch.randn(1, 2, 4, 32))
    with pytest.raises(ValueError, match="batch, heads, tokens, dim_head"):
        flash_attention(q[0], q[0], q[0])


def test_without_triton_or_without_the_interpreter_the_errors_say_what_to_do():
    # A fresh process: there the interpreter is off, and an import of triton can be made to fail.
    script = """
import sys, torch
sys.modules["triton"] = None  # as if Triton were not installed
import vit_lib
vit_lib.SimpleViT(image_size=8, patch_size=4, num_classes=2, dim=16, depth=1, heads=1, mlp_dim=8)(
    torch.randn(1, 3, 8, 8))
from vit_lib.triton_attention import flash_attention, triton_available
q = torch.randn(1, 1, 4, 16)
try:
    flash_attention(q, q, q)
except ImportError as error:
    print("no triton:", error)
del sys.modules["triton"]
try:
    flash_attention(q, q, q)
except RuntimeError as error:
    print("interpreter off:", error)
"""
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert "no triton: flash_attention needs the triton package (pip install triton" in done.stdout
    assert "interpreter off: flash_attention on CPU tensors runs in Triton's interpreter" in done.stdout
    assert "TRITON_INTERPRET=1" in done.stdout


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(2, 3, 197, 64), (1, 2, 65, 128), (2, 2, 50, 16), (1, 1, 1, 32)], ids=str)
def test_cuda_kernels_are_as_accurate_as_sdpa(shape, dtype):
    """Against a float64 reference: no worse than PyTorch's own SDPA in the same dtype (times 2)."""
    if interpreter_active():
        pytest.skip("TRITON_INTERPRET=1: the CUDA tests check the compiled kernels")
    q, k, v = qkv(shape, dtype=dtype, device="cuda")
    grad_out = torch.randn(shape, dtype=dtype, device="cuda")
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    expected = attention_math(q64, k64, v64)
    expected_grads = torch.autograd.grad(expected, (q64, k64, v64), grad_out.double())
    floor = 1e-5 if dtype == torch.float32 else 1e-3

    def max_errors(fn):
        out = fn(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), grad_out)
        return [
            (a.double() - b).abs().max().item() for a, b in zip((out, *grads), (expected, *expected_grads))
        ]

    ours, sdpa = max_errors(flash_attention), max_errors(torch.nn.functional.scaled_dot_product_attention)
    assert all(o <= max(2 * s, floor) for o, s in zip(ours, sdpa)), (ours, sdpa)
