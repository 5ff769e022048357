"""The math path, the SDPA path and the backend policy of vit_lib.attention."""

import warnings

import pytest
import torch
from torch.nn.attention import SDPBackend

from vit_lib import Attend, SimpleViT, attention_math, sdpa_backends, set_attention_backend
from vit_lib.attention import restrict_sdpa

# (batch, heads, tokens, dim_head): a single token, odd and non-power-of-two lengths, ViT-B's 197.
SHAPES = [(1, 1, 1, 8), (2, 4, 7, 16), (1, 3, 50, 32), (2, 2, 197, 64), (1, 8, 65, 40)]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}

FLASH, EFFICIENT, MATH = SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH


def reference_attention(q, k, v):
    """Textbook attention in float64, independent of vit_lib."""
    scores = torch.einsum("bhid,bhjd->bhij", q.double(), k.double()) / q.shape[-1] ** 0.5
    return torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v.double())


def qkv(shape, dtype, n_kv=None):
    b, h, n, d = shape
    kv_shape = (b, h, n if n_kv is None else n_kv, d)
    return [torch.randn(s, dtype=dtype, requires_grad=True) for s in (shape, kv_shape, kv_shape)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_math_path_equals_sdpa_outputs_and_gradients(shape, dtype):
    q, k, v = qkv(shape, dtype)
    out_math = Attend(use_flash=False)(q, k, v)
    out_sdpa = Attend(use_flash=True)(q, k, v)
    atol = TOLERANCE[dtype]
    assert out_math.shape == out_sdpa.shape == shape
    torch.testing.assert_close(out_math, out_sdpa, atol=atol, rtol=0)

    grad_out = torch.randn_like(out_math)
    grads_math = torch.autograd.grad(out_math, (q, k, v), grad_out)
    grads_sdpa = torch.autograd.grad(out_sdpa, (q, k, v), grad_out)
    for g_math, g_sdpa in zip(grads_math, grads_sdpa):
        torch.testing.assert_close(g_math, g_sdpa, atol=atol, rtol=0)


@pytest.mark.parametrize("use_flash", [False, True])
def test_both_paths_match_float64_reference(use_flash):
    q, k, v = qkv((2, 3, 19, 24), torch.float32)
    out = Attend(use_flash=use_flash)(q, k, v)
    torch.testing.assert_close(out.double(), reference_attention(q, k, v), atol=1e-5, rtol=0)


def test_keys_and_values_may_have_another_length_than_queries():
    q, k, v = qkv((1, 2, 5, 8), torch.float64, n_kv=11)
    torch.testing.assert_close(attention_math(q, k, v), reference_attention(q, k, v), atol=1e-12, rtol=0)
    torch.testing.assert_close(Attend()(q, k, v), attention_math(q, k, v), atol=1e-12, rtol=0)


def test_attention_weights_sum_to_one_so_constant_values_pass_through():
    q, k, _ = qkv((1, 2, 9, 8), torch.float64)
    v = torch.full((1, 2, 9, 8), 3.0, dtype=torch.float64)
    torch.testing.assert_close(attention_math(q, k, v), v, atol=1e-12, rtol=0)


CAPABILITIES = [(7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_cuda_policy_flash_only_on_ampere_or_newer_in_half_precision(capability, dtype):
    backends = sdpa_backends("cuda", capability, dtype)
    flash_ok = capability >= (8, 0) and dtype in (torch.float16, torch.bfloat16)
    expected = (FLASH, EFFICIENT, MATH) if flash_ok else (EFFICIENT, MATH)
    assert backends == expected
    assert backends[-1] == MATH  # never "no available kernel"


@pytest.mark.parametrize("dtype", [*DTYPES, torch.float64])
@pytest.mark.parametrize("device_type", ["cpu", "mps"])
def test_cpu_and_other_devices_are_left_to_pytorch(device_type, dtype):
    assert sdpa_backends(device_type, None, dtype) is None


def test_cuda_policy_needs_a_capability():
    with pytest.raises(ValueError, match="capability"):
        sdpa_backends("cuda", None, torch.float16)


def test_restrict_sdpa_really_restricts_the_backends():
    q = torch.randn(1, 1, 4, 8)
    with restrict_sdpa([SDPBackend.EFFICIENT_ATTENTION]), pytest.raises(RuntimeError):
        torch.nn.functional.scaled_dot_product_attention(q, q, q)  # not available on CPU


def cpu_attention_ops(attend, q):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        attend(q, q, q)
    return {e.key for e in prof.key_averages() if "attention" in e.key}


def test_sdpa_path_runs_the_fused_cpu_kernel_and_math_path_does_not():
    q = torch.randn(1, 2, 16, 8)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in cpu_attention_ops(Attend(True), q)
    assert not any("scaled_dot_product" in op for op in cpu_attention_ops(Attend(False), q))


@pytest.mark.parametrize("use_flash", [False, True])
def test_forward_and_backward_raise_no_warning(use_flash):
    model = SimpleViT(
        image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=64, use_flash=use_flash
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randn(2, 3, 16, 16)).sum().backward()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_sdpa_runs_every_dtype_and_matches_math(dtype):
    q, k, v = (torch.randn(2, 4, 197, 64, device="cuda", dtype=dtype) for _ in range(3))
    atol = 1e-5 if dtype == torch.float32 else 2e-2
    expected = reference_attention(q, k, v).to(dtype)
    torch.testing.assert_close(Attend(True)(q, k, v), expected, atol=atol, rtol=0)
    torch.testing.assert_close(Attend(False)(q, k, v), expected, atol=atol, rtol=0)


@pytest.mark.cuda
def test_cuda_flash_kernel_is_chosen_in_bf16_on_ampere_or_newer():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("flash needs compute capability 8.0+")
    q = torch.randn(1, 8, 256, 64, device="cuda", dtype=torch.bfloat16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        Attend(True)(q, q, q)
        torch.cuda.synchronize()
    assert any("flash" in e.key.lower() for e in prof.key_averages())


def test_backend_names_the_path_and_use_flash_still_reads_as_upstream():
    assert Attend().backend == "sdpa" and Attend(use_flash=False).backend == "math"
    attend = Attend(backend="triton")
    assert attend.use_flash and "triton" in repr(attend)
    assert not Attend(use_flash=True, backend="math").use_flash  # backend overrides use_flash
    with pytest.raises(ValueError, match=r"one of \('sdpa', 'math', 'triton'\), got 'flash'"):
        Attend(backend="flash")


def test_set_attention_backend_switches_every_attend_and_checks_the_name():
    model = SimpleViT(image_size=8, patch_size=4, num_classes=2, dim=16, depth=2, heads=1, mlp_dim=8)
    assert set_attention_backend(model, "math") is model
    assert [m.backend for m in model.modules() if isinstance(m, Attend)] == ["math", "math"]
    with pytest.raises(ValueError, match="got 'cuda'"):
        set_attention_backend(model, "cuda")
    with pytest.raises(ValueError, match="Linear has no Attend module"):
        set_attention_backend(torch.nn.Linear(2, 2), "math")
