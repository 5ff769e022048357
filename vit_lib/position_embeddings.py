"""Fixed 2D sine-cosine position embeddings (Beyer et al., 2022, "Better plain ViT baselines").

Built in chapter 2 (book/02_position_embeddings.ipynb).
"""

from __future__ import annotations

import torch

from vit_lib._checks import check_positive_int


def posemb_sincos_2d(patches: torch.Tensor, temperature: float = 10000.0) -> torch.Tensor:
    """Sin-cos embedding for a ``(b, h, w, dim)`` grid of patch tokens; returns ``(h * w, dim)``.

    Row-major position ``i = y * w + x`` gets, for ``k = 0 .. dim/4 - 1`` and
    ``omega_k = 1 / temperature ** (k / (dim/4 - 1))``, the four blocks
    ``[sin(x omega), cos(x omega), sin(y omega), cos(y omega)]``, each ``dim/4`` wide. Values equal
    vit-pytorch's. They are computed in float32 (like upstream) on ``patches.device`` and returned in
    ``patches.dtype``, so the sum ``tokens + pe`` never changes dtype or device.
    """
    if not isinstance(patches, torch.Tensor):
        raise TypeError(f"patches must be a torch.Tensor, got {type(patches).__name__}")
    if patches.ndim != 4:
        raise ValueError(f"patches must have shape (b, h, w, dim), got {tuple(patches.shape)}")
    _, h, w, dim = patches.shape
    return sincos_2d(h, w, dim, temperature, device=patches.device).to(patches.dtype)


def sincos_2d(
    h: int,
    w: int,
    dim: int,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The float32 ``(h * w, dim)`` table behind :func:`posemb_sincos_2d`, from sizes alone."""
    check_positive_int("h", h)
    check_positive_int("w", w)
    check_positive_int("dim", dim)
    # dim/4 frequencies per axis and sin + cos per frequency; with dim/4 == 1 the exponent
    # k / (dim/4 - 1) divides by zero (upstream silently returns NaN there).
    if dim % 4 or dim < 8:
        raise ValueError(f"dim must be a multiple of 4 and at least 8 for 2D sin-cos embeddings, got {dim}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    omega = torch.arange(dim // 4, device=device) / (dim // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)
