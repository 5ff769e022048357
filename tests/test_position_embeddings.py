"""2D sin-cos position embeddings against an independent NumPy derivation and upstream."""

import numpy as np
import pytest
import torch
from vit_pytorch.simple_flash_attn_vit import posemb_sincos_2d as upstream_posemb

from vit_lib import posemb_sincos_2d, sincos_2d


def numpy_sincos_2d(h, w, dim, temperature=10000.0):
    quarter = dim // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / (quarter - 1))
    ys, xs = np.divmod(np.arange(h * w), w)  # row-major: position i = y * w + x
    x_angles, y_angles = np.outer(xs, omega), np.outer(ys, omega)
    return np.concatenate([np.sin(x_angles), np.cos(x_angles), np.sin(y_angles), np.cos(y_angles)], 1)


@pytest.mark.parametrize("h, w, dim", [(1, 1, 8), (4, 4, 64), (3, 5, 32), (14, 14, 384), (2, 7, 12)])
def test_matches_numpy_derivation(h, w, dim):
    pe = posemb_sincos_2d(torch.zeros(2, h, w, dim))
    assert pe.shape == (h * w, dim)
    np.testing.assert_allclose(pe.numpy(), numpy_sincos_2d(h, w, dim), atol=2e-5, rtol=0)


@pytest.mark.parametrize("h, w, dim", [(4, 4, 64), (3, 5, 32), (14, 14, 384)])
def test_matches_upstream_exactly(h, w, dim):
    patches = torch.randn(1, h, w, dim)
    assert torch.equal(posemb_sincos_2d(patches), upstream_posemb(patches))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_follows_input_dtype(dtype):
    pe = posemb_sincos_2d(torch.zeros(1, 2, 3, 16, dtype=dtype))
    assert pe.dtype == dtype
    torch.testing.assert_close(pe, sincos_2d(2, 3, 16).to(dtype), atol=0, rtol=0)


def test_first_position_is_sin0_cos0_blocks():
    pe = sincos_2d(3, 3, 16)
    torch.testing.assert_close(pe[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))


def test_every_position_gets_a_distinct_embedding():
    pe = sincos_2d(16, 16, 64)
    assert torch.cdist(pe, pe).add(torch.eye(256) * 1e3).min() > 0.1


@pytest.mark.parametrize("dim", [6, 30, 4])
def test_rejects_dim_that_does_not_split_into_four_blocks(dim):
    with pytest.raises(ValueError, match=f"multiple of 4 and at least 8.*got {dim}"):
        posemb_sincos_2d(torch.zeros(1, 2, 2, dim))


def test_rejects_tokens_that_are_not_a_grid():
    with pytest.raises(ValueError, match=r"\(b, h, w, dim\).*\(2, 16, 64\)"):
        posemb_sincos_2d(torch.zeros(2, 16, 64))
    with pytest.raises(TypeError, match="ndarray"):
        posemb_sincos_2d(np.zeros((1, 2, 2, 8)))


def test_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        sincos_2d(2, 2, 8, temperature=0)
