"""Pre-norm transformer encoder: multi-head self-attention and MLP blocks with residuals.

Built in chapter 4 (book/04_transformer.ipynb).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vit_lib._checks import check_positive_int
from vit_lib.attention import Attend


def check_tokens(x: torch.Tensor, dim: int) -> None:
    """Raise unless ``x`` is a ``(batch, tokens, dim)`` float tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected tokens as a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"expected tokens of shape (batch, tokens, {dim}), got {tuple(x.shape)}")


class FeedForward(nn.Module):
    """Pre-norm MLP: ``(b, n, dim) -> (b, n, dim)`` through a ``hidden_dim`` GELU layer."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden_dim", hidden_dim)
        self.dim = dim
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.dim)
        return self.net(x)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention: ``(b, n, dim) -> (b, n, dim)``.

    ``heads * dim_head`` need not equal ``dim``: ``to_qkv`` and ``to_out`` (bias-free, as upstream)
    map between the two widths.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, use_flash: bool = True) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("heads", heads)
        check_positive_int("dim_head", dim_head)
        inner_dim = heads * dim_head
        self.dim = dim
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.attend = Attend(use_flash=use_flash)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.dim)
        x = self.norm(x)
        qkv = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in qkv)
        out = self.attend(q, k, v)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.to_out(out)


class Transformer(nn.Module):
    """``depth`` blocks of ``x = x + Attention(x); x = x + FeedForward(x)`` on ``(b, n, dim)``."""

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, use_flash: bool = True
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("dim_head", dim_head),
            ("mlp_dim", mlp_dim),
        ):
            check_positive_int(name, value)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Attention(dim, heads=heads, dim_head=dim_head, use_flash=use_flash),
                    FeedForward(dim, mlp_dim),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x
