"""Cutting an image into patches and embedding each patch as a token.

Built in chapter 1 (book/01_patchify.ipynb).
"""

from __future__ import annotations

from typing import Any

import torch
from einops.layers.torch import Rearrange
from torch import nn

from vit_lib._checks import check_positive_int


def pair(value: Any, name: str = "size") -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(h, w) -> (h, w)``. Both entries must be positive ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
        height, width = value
        return check_positive_int(f"{name}[0] (height)", height), check_positive_int(
            f"{name}[1] (width)", width
        )
    side = check_positive_int(name, value)
    return side, side


class PatchEmbedding(nn.Sequential):
    """Image batch ``(b, c, H, W)`` -> grid of patch tokens ``(b, H/ph, W/pw, dim)``.

    Each ``ph x pw x c`` patch is flattened in ``(p1 p2 c)`` order, normalised, projected to ``dim``
    and normalised again (LayerNorm -> Linear -> LayerNorm, as in upstream SimpleViT). It is an
    ``nn.Sequential`` so that its state-dict keys (``1.weight`` ...) match vit-pytorch's.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        dim: int,
        channels: int = 3,
    ) -> None:
        image_height, image_width = pair(image_size, "image_size")
        patch_height, patch_width = pair(patch_size, "patch_size")
        check_positive_int("dim", dim)
        check_positive_int("channels", channels)
        for side, image_side, patch_side in (
            ("height", image_height, patch_height),
            ("width", image_width, patch_width),
        ):
            if image_side % patch_side:
                raise ValueError(
                    f"image {side} {image_side} is not divisible by patch {side} {patch_side}; "
                    f"choose a patch {side} that divides it (or resize the image)"
                )
        patch_dim = channels * patch_height * patch_width
        super().__init__(
            Rearrange("b c (h p1) (w p2) -> b h w (p1 p2 c)", p1=patch_height, p2=patch_width),
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, dim),
            nn.LayerNorm(dim),
        )
        self.image_size = (image_height, image_width)
        self.patch_size = (patch_height, patch_width)
        self.channels = channels
        self.grid_size = (image_height // patch_height, image_width // patch_width)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``(b, channels, H, W)`` -> ``(b, H/ph, W/pw, dim)``; H, W must equal ``image_size``."""
        check_image_batch(img, self.channels, self.image_size)
        return super().forward(img)


def check_image_batch(img: Any, channels: int, image_size: tuple[int, int]) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``img`` is a float ``(b, channels, H, W)`` batch."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"expected an image batch as a torch.Tensor, got {type(img).__name__}")
    if img.ndim != 4:
        raise ValueError(
            f"expected a 4-D image batch (batch, channels, height, width), got shape "
            f"{tuple(img.shape)}; for a single image use img.unsqueeze(0)"
        )
    if not img.is_floating_point():
        raise TypeError(f"expected a floating-point image batch, got dtype {img.dtype}; try img.float()")
    if img.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got {img.shape[1]} (shape {tuple(img.shape)})")
    if tuple(img.shape[-2:]) != image_size:
        raise ValueError(
            f"expected images of size (height, width) = {image_size}, got {tuple(img.shape[-2:])}"
        )
