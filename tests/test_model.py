"""SimpleViT: shapes, bad input, and parity with upstream vit-pytorch (same weights, same logits)."""

import ast
import pathlib
import subprocess
import sys

import pytest
import torch
from vit_pytorch.simple_flash_attn_vit import SimpleViT as UpstreamSimpleViT

import vit_lib
from vit_lib import SimpleViT

CONFIGS = {
    "square": dict(
        image_size=32, patch_size=4, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=128, dim_head=16
    ),
    "non-square": dict(
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


def images(config, batch=4, dtype=torch.float32):
    h, w = vit_lib.pair(config["image_size"])
    return torch.randn(batch, config.get("channels", 3), h, w, dtype=dtype)


# Upstream's flash path uses the deprecated torch.backends.cuda.sdp_kernel, which warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*sdp_kernel.*:FutureWarning")


@pytest.mark.parametrize("name", CONFIGS)
def test_output_shape(name):
    config = CONFIGS[name]
    assert SimpleViT(**config)(images(config, batch=3)).shape == (3, config["num_classes"])


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dicts_interchange_strictly_with_upstream_in_both_directions(name):
    config = CONFIGS[name]
    ours, upstream = SimpleViT(**config), UpstreamSimpleViT(**config)
    assert ours.state_dict().keys() == upstream.state_dict().keys()
    ours.load_state_dict(upstream.state_dict(), strict=True)
    for key, value in upstream.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    fresh_upstream = UpstreamSimpleViT(**config)
    fresh_upstream.load_state_dict(SimpleViT(**config).state_dict(), strict=True)


@pytest.mark.parametrize("use_flash", [True, False])
@pytest.mark.parametrize("name", CONFIGS)
def test_same_weights_give_upstream_logits(name, use_flash):
    config = CONFIGS[name]
    upstream = UpstreamSimpleViT(**config).eval()  # upstream's math path crashes: compare with its SDPA
    ours = SimpleViT(**config, use_flash=use_flash).eval()
    ours.load_state_dict(upstream.state_dict())
    img = images(config)
    with torch.no_grad():
        torch.testing.assert_close(ours(img), upstream(img), atol=1e-5, rtol=0)
        ours.double(), upstream.double()
        torch.testing.assert_close(ours(img.double()), upstream(img.double()), atol=1e-12, rtol=0)


def test_gradients_match_upstream():
    config = CONFIGS["non-square"]
    upstream = UpstreamSimpleViT(**config).double()
    ours = SimpleViT(**config).double()
    ours.load_state_dict(upstream.state_dict())
    img = images(config, dtype=torch.float64)
    ours(img).square().sum().backward()
    upstream(img).square().sum().backward()
    upstream_params = dict(upstream.named_parameters())
    for key, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, upstream_params[key].grad, atol=1e-10, rtol=0)


def test_position_embedding_follows_the_model_to_another_dtype():
    model = SimpleViT(**CONFIGS["square"]).to(torch.float64)
    assert model.pos_embedding.dtype == torch.float64
    assert model(images(CONFIGS["square"], dtype=torch.float64)).dtype == torch.float64
    assert "pos_embedding" not in model.state_dict()


def test_upstream_bugs_that_vit_lib_fixes_are_real():
    """Upstream's math path crashes; its SDPA path warns on every call. Ours does neither."""
    config = CONFIGS["square"]
    with pytest.raises(NameError, match="einsum"):
        UpstreamSimpleViT(**config, use_flash=False)(images(config))
    with pytest.warns(FutureWarning, match="sdp_kernel"):
        UpstreamSimpleViT(**config)(images(config))


BASE = CONFIGS["square"]


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(image_size=(30, 32)), ValueError, "image height 30 is not divisible by patch height 4"),
        (dict(image_size=(32, 30)), ValueError, "image width 30 is not divisible by patch width 4"),
        (dict(dim=30), ValueError, "dim must be a multiple of 4 and at least 8.*got 30"),
        (dict(dim=4, dim_head=4), ValueError, "dim must be a multiple of 4 and at least 8.*got 4"),
        (dict(depth=0), ValueError, "depth must be a positive int, got 0"),
        (dict(heads=-2), ValueError, "heads must be a positive int, got -2"),
        (dict(heads=2.0), TypeError, r"heads must be an int, got 2.0 \(float\)"),
        (dict(mlp_dim=0), ValueError, "mlp_dim must be a positive int, got 0"),
        (dict(num_classes=0), ValueError, "num_classes must be a positive int, got 0"),
        (dict(dim_head=0), ValueError, "dim_head must be a positive int, got 0"),
        (dict(channels=0), ValueError, "channels must be a positive int, got 0"),
        (dict(patch_size=0), ValueError, "patch_size must be a positive int, got 0"),
        (dict(use_flash="yes"), TypeError, "use_flash must be a bool, got 'yes'"),
    ],
)
def test_bad_constructor_arguments(change, error, message):
    with pytest.raises(error, match=message):
        SimpleViT(**(BASE | change))


@pytest.mark.parametrize(
    "img, error, message",
    [
        (torch.randn(3, 32, 32), ValueError, r"4-D image batch.*\(3, 32, 32\).*unsqueeze\(0\)"),
        (torch.randn(2, 1, 32, 32), ValueError, "expected 3 channels, got 1"),
        (
            torch.randn(2, 3, 64, 64),
            ValueError,
            r"expected images of size \(height, width\) = \(32, 32\), "
            r"got \(64, 64\)",
        ),
        (torch.randn(2, 3, 32, 28), ValueError, r"= \(32, 32\), got \(32, 28\)"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, "floating-point.*torch.uint8"),
        ([[0.0]], TypeError, "torch.Tensor, got list"),
    ],
)
def test_bad_forward_input(img, error, message):
    with pytest.raises(error, match=message):
        SimpleViT(**BASE)(img)


def test_layers_reject_tokens_of_the_wrong_width():
    attention = vit_lib.Attention(dim=32, heads=2, dim_head=8)
    with pytest.raises(ValueError, match=r"\(batch, tokens, 32\), got \(1, 5, 16\)"):
        attention(torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match=r"\(batch, heads, tokens, dim_head\), got \(5, 8\)"):
        vit_lib.Attend()(torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="same dim_head, got 8 and 4"):
        vit_lib.Attend()(torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 8))


def test_library_has_no_assert_statements():
    """User input is checked with ValueError/TypeError; asserts vanish under python -O."""
    for path in pathlib.Path(vit_lib.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)], path


def test_importing_vit_lib_stays_light():
    # `import vit_lib` is what every chapter does first: no benchmark, plotting, timm or Triton imports
    heavy = ("timm", "torch.utils.benchmark", "matplotlib", "triton", "vit_lib.bench")
    code = f"import sys, vit_lib; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
