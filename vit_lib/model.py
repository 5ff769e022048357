"""SimpleViT (Beyer et al., 2022): patch embedding + fixed 2D sin-cos positions + pre-norm
transformer + mean pooling + linear head. State dicts interchange with vit-pytorch's.

Built in chapter 5 (book/05_simplevit.ipynb).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vit_lib._checks import check_positive_int
from vit_lib.patches import PatchEmbedding
from vit_lib.position_embeddings import sincos_2d
from vit_lib.transformer import Transformer


class SimpleViT(nn.Module):
    """Images ``(b, channels, H, W)`` -> class logits ``(b, num_classes)``.

    Same constructor as ``vit_pytorch.simple_flash_attn_vit.SimpleViT``. The position embedding
    depends only on the sizes, so it is computed once and kept as a non-persistent buffer (it
    follows ``.to()`` but is not in the state dict, which therefore matches upstream's key for key).
    """

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        channels: int = 3,
        dim_head: int = 64,
        use_flash: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("mlp_dim", mlp_dim),
            ("channels", channels),
            ("dim_head", dim_head),
        ):
            check_positive_int(name, value)
        if dim % 4 or dim < 8:
            raise ValueError(
                f"dim must be a multiple of 4 and at least 8 (2D sin-cos position embeddings), got {dim}"
            )
        self.to_patch_embedding = PatchEmbedding(image_size, patch_size, dim, channels)
        grid_h, grid_w = self.to_patch_embedding.grid_size
        self.register_buffer("pos_embedding", sincos_2d(grid_h, grid_w, dim), persistent=False)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, use_flash)
        self.to_latent = nn.Identity()
        self.linear_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.to_patch_embedding(img)  # (b, h, w, dim); checks img
        x = rearrange(x, "b h w d -> b (h w) d") + self.pos_embedding.to(x.dtype)
        x = self.transformer(x)  # (b, h*w, dim)
        x = x.mean(dim=1)  # (b, dim): mean pooling instead of a class token
        return self.linear_head(self.to_latent(x))
