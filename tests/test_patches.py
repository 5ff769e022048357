"""Patch embedding: shapes, token order, and its equivalence with a strided convolution."""

import pytest
import torch
from torch import nn

from vit_lib import PatchEmbedding, pair


def test_pair():
    assert pair(7) == (7, 7)
    assert pair((3, 5)) == (3, 5)
    assert pair([3, 5]) == (3, 5)


def test_shapes_for_non_square_image_and_patch():
    embed = PatchEmbedding(image_size=(24, 40), patch_size=(4, 8), dim=32, channels=1)
    assert embed.grid_size == (6, 5) and embed.num_patches == 30
    assert embed(torch.randn(2, 1, 24, 40)).shape == (2, 6, 5, 32)


def test_patch_vectors_are_flattened_in_p1_p2_c_order():
    embed = PatchEmbedding(image_size=4, patch_size=2, dim=8, channels=3)
    img = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(1, 3, 4, 4)
    patches = embed[0](img)  # the Rearrange step alone: (1, 2, 2, 12)
    # patch (row 0, col 1) covers pixels rows 0-1, cols 2-3; inner order: p1, then p2, then channel
    expected = torch.stack([img[0, c, p1, 2 + p2] for p1 in range(2) for p2 in range(2) for c in range(3)])
    assert torch.equal(patches[0, 0, 1], expected)


def test_rearrange_plus_linear_equals_strided_conv():
    ph, pw, c, dim = 4, 2, 3, 16
    linear = nn.Linear(ph * pw * c, dim)
    conv = nn.Conv2d(c, dim, kernel_size=(ph, pw), stride=(ph, pw))
    with torch.no_grad():  # Linear's input order is (p1 p2 c); Conv2d's weight is (dim, c, p1, p2)
        conv.weight.copy_(linear.weight.reshape(dim, ph, pw, c).permute(0, 3, 1, 2))
        conv.bias.copy_(linear.bias)
    embed = PatchEmbedding(image_size=(8, 6), patch_size=(ph, pw), dim=dim, channels=c)
    img = torch.randn(2, c, 8, 6)
    via_linear = linear(embed[0](img))  # (b, h, w, dim)
    via_conv = conv(img).permute(0, 2, 3, 1)
    torch.testing.assert_close(via_linear, via_conv, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "image_size, patch_size, message",
    [
        ((30, 32), 4, "image height 30 is not divisible by patch height 4"),
        ((32, 30), 4, "image width 30 is not divisible by patch width 4"),
        (32, (4, 5), "image width 32 is not divisible by patch width 5"),
    ],
)
def test_sizes_that_do_not_divide_are_rejected_naming_the_side(image_size, patch_size, message):
    with pytest.raises(ValueError, match=message):
        PatchEmbedding(image_size, patch_size, dim=8)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(image_size=0), ValueError, "image_size must be a positive int, got 0"),
        (dict(image_size=(32, -4)), ValueError, r"image_size\[1\] \(width\) must be a positive int, got -4"),
        (dict(image_size=(32, 32, 3)), ValueError, r"\(height, width\) pair, got \(32, 32, 3\)"),
        (dict(image_size=32.0), TypeError, "image_size must be an int, got 32.0"),
        (dict(patch_size="4"), TypeError, "patch_size must be an int, got '4'"),
        (dict(dim=0), ValueError, "dim must be a positive int, got 0"),
        (dict(channels=True), TypeError, "channels must be an int, got True"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    args = dict(image_size=32, patch_size=4, dim=8, channels=3) | kwargs
    with pytest.raises(error, match=message):
        PatchEmbedding(**args)
