"""Print the measured max abs differences that the tests' tolerances are set against.

- attention: math path vs SDPA (outputs and gradients), fp32 and fp64, over the tests' shapes;
- SimpleViT: vit_lib (SDPA and math paths) vs upstream vit-pytorch with the same weights;
- Triton FlashAttention (vit_lib.triton_attention) vs the math path, fp32, per shape family of
  tests/test_triton_attention.py: on the CPU through Triton's interpreter, switched on here (below)
  when no GPU is present, as tests/conftest.py does.
"""

import os
import warnings

import torch

if not torch.cuda.is_available():  # before triton is first imported (vit_pytorch's imports do)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from vit_pytorch.simple_flash_attn_vit import SimpleViT as UpstreamSimpleViT

from vit_lib import Attend, SimpleViT, attention_math, pair
from vit_lib.triton_attention import triton_available

SHAPES = [(1, 1, 1, 8), (2, 4, 7, 16), (1, 3, 50, 32), (2, 2, 197, 64), (1, 8, 65, 40)]
# the families of tests/test_triton_attention.py: (b, h, n, d) and (block_m, block_n)
TRITON_FAMILIES = {
    "lengths n=1..197, d=64, tiles 64x64": [((1, 2, n, 64), (64, 64)) for n in (1, 7, 16, 17, 50, 65, 197)],
    "widths d=16..128, n=17, tiles 16x16": [((2, 1, 17, d), (16, 16)) for d in (16, 32, 64, 128)],
    "tiles 16x32, 32x16, 128x128, n=50": [((1, 1, 50, 32), t) for t in ((16, 32), (32, 16), (128, 128))],
}
CONFIGS = {
    "square 32/4": dict(
        image_size=32, patch_size=4, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=128, dim_head=16
    ),
    "non-square 24x40/4x8": dict(
        image_size=(24, 40),
        patch_size=(4, 8),
        num_classes=7,
        dim=48,
        depth=3,
        heads=3,
        mlp_dim=96,
        channels=1,
        dim_head=16,
    ),
}


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def attention_diffs(dtype: torch.dtype) -> tuple[float, float]:
    worst_out = worst_grad = 0.0
    for shape in SHAPES:
        q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
        out_math, out_sdpa = Attend(False)(q, k, v), Attend(True)(q, k, v)
        g = torch.randn_like(out_math)
        grads = zip(torch.autograd.grad(out_math, (q, k, v), g), torch.autograd.grad(out_sdpa, (q, k, v), g))
        worst_out = max(worst_out, max_abs(out_math, out_sdpa))
        worst_grad = max(worst_grad, *(max_abs(a, b) for a, b in grads))
    return worst_out, worst_grad


def triton_diffs(cases) -> tuple[float, float]:
    from vit_lib.triton_attention import flash_attention

    device = "cuda" if torch.cuda.is_available() else "cpu"
    worst_out = worst_grad = 0.0
    for shape, (block_m, block_n) in cases:
        q, k, v = (torch.randn(shape, device=device, requires_grad=True) for _ in range(3))
        out = flash_attention(q, k, v, block_m=block_m, block_n=block_n)
        expected = attention_math(q, k, v)
        g = torch.randn_like(out)
        grads = zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(expected, (q, k, v), g))
        worst_out = max(worst_out, max_abs(out, expected))
        worst_grad = max(worst_grad, *(max_abs(a, b) for a, b in grads))
    return worst_out, worst_grad


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}")
    for dtype in (torch.float32, torch.float64):
        out, grad = attention_diffs(dtype)
        print(f"attention math vs SDPA, {dtype}: outputs {out:.2e}, gradients {grad:.2e}")
    warnings.filterwarnings("ignore", message=".*sdp_kernel.*", category=FutureWarning)
    for name, config in CONFIGS.items():
        upstream = UpstreamSimpleViT(**config).eval()
        h, w = pair(config["image_size"])
        img = torch.randn(4, config.get("channels", 3), h, w)
        for use_flash in (True, False):
            ours = SimpleViT(**config, use_flash=use_flash).eval()
            ours.load_state_dict(upstream.state_dict())
            with torch.no_grad():
                d32 = max_abs(ours(img), upstream.float()(img))
                d64 = max_abs(ours.double()(img.double()), upstream.double()(img.double()))
            upstream.float()
            path = "SDPA" if use_flash else "math"
            print(f"SimpleViT {name}, vit_lib {path} path vs upstream logits: fp32 {d32:.2e}, fp64 {d64:.2e}")
    if not triton_available():
        print("Triton FlashAttention: not measured (triton is not installed)")
        return
    for family, cases in TRITON_FAMILIES.items():
        out, grad = triton_diffs(cases)
        print(f"Triton FlashAttention vs math, float32, {family}: outputs {out:.2e}, gradients {grad:.2e}")


if __name__ == "__main__":
    main()
