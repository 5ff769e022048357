"""The model sweep: training-step throughput of each model x mode (eager, compiled), interleaved
round by round in one process so that the variants share the machine's state; MFU from
``vit_lib.flops``.

Part of ``vit_lib.bench`` (chapter 8, book/08_performance.ipynb reads its results from
``book/data/bench_model_*.json``).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from vit_lib.bench.measure import environment, first_line, measured_matmul_flops, progress
from vit_lib.bench.models import (
    Variant,
    build_models,
    count_parameters,
    make_variant,
    profile_step,
    timed_steps,
)
from vit_lib.configs import ModelConfig
from vit_lib.flops import mfu, peak_flops, vit_flops_per_image


def random_batch(config: ModelConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images ``(batch, channels, size, size)`` and labels ``(batch,)``."""
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch_size, config.channels, config.image_size, config.image_size)
    images = torch.randn(shape, generator=generator).to(device)
    labels = torch.randint(config.num_classes, (config.batch_size,), generator=generator).to(device)
    return images, labels


def sweep_state_bytes(params: int, n_variants: int, n_models: int) -> int:
    """fp32 bytes the sweep keeps alive between rounds: each variant trains its own copy of the
    weights, with their gradients and AdamW's two moments (4 x params), beside the built models."""
    return 4 * params * (4 * n_variants + n_models)


def check_sweep_fits(
    config: ModelConfig, built: dict[str, nn.Module], n_variants: int, device: torch.device
) -> None:
    """On CUDA, refuse before any work a sweep whose variants' training state would take more than
    half of the GPU's free memory (ViT-B/16, 3 models x 2 modes: about 9 GiB, too much for a 16 GB
    T4 once activations come on top); the variants are interleaved, so all of them stay alive."""
    if device.type != "cuda":
        return
    params = max(count_parameters(model) for model in built.values())
    needed = sweep_state_bytes(params, n_variants, len(built))
    free, _ = torch.cuda.mem_get_info(device)
    if needed > free / 2:
        raise ValueError(
            f"the {config.name} sweep would keep {needed / 2**30:.1f} GiB of weights, gradients and AdamW "
            f"state alive for {n_variants} variants, more than half of the {free / 2**30:.1f} GiB free on "
            "this GPU; sweep fewer variants at a time (--no-compile, fewer models)"
        )


def same_weights_check(built: dict[str, nn.Module], images: torch.Tensor) -> dict[str, float]:
    """vit_lib's and upstream's logits on two images: they hold the same weights, so they must agree."""
    if "vit_lib" not in built or "upstream" not in built:
        return {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # upstream's deprecated sdp_kernel
        diff = (built["vit_lib"](images[:2]) - built["upstream"](images[:2])).abs().max().item()
    return {"vit_lib_vs_upstream_max_abs_logit_diff": diff}


def run_rounds(
    variants: Sequence[Variant],
    device: torch.device,
    *,
    rounds: int,
    steps: int,
    warmup_steps: int,
    batch_size: int,
    bar: Any,
) -> list[Variant]:
    """Warm every variant up (a failure is recorded in its ``error``, and it is not timed), then time
    the others round by round, their order rotated one place per round; returns the variants that ran."""
    # A cold compile: without this, inductor's on-disk cache from an earlier run would make the
    # first compiled step look cheap.
    from torch._inductor import config as inductor_config

    with warnings.catch_warnings(), inductor_config.patch(force_disable_caches=True):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")
        for variant in variants:  # warm-up: compilation, allocator, thread pools
            try:
                variant.first_step_s = timed_steps(variant, 1, device)
                timed_steps(variant, warmup_steps, device)
            except Exception as error:
                variant.error = first_line(error)
            bar.update()
        running = [v for v in variants if v.error is None]
        for round_ in range(rounds):
            # rotate the order one place per round: no variant always runs first (or right after the
            # same neighbour), which would bias it by whatever the machine does at a round's start
            shift = round_ % max(1, len(running))
            for variant in running[shift:] + running[:shift]:
                seconds = timed_steps(variant, steps, device)
                variant.images_per_s.append(steps * batch_size / seconds)
                bar.update()
    return running


def result_row(
    variant: Variant,
    model: nn.Module,
    *,
    baseline_images_per_s: float,
    flops_per_image: int,
    matmul_flops: float,
    peak: float | None,
) -> dict[str, Any]:
    """The figures of one variant, or its ``error``."""
    if variant.error is not None:
        return {"model": variant.model_name, "compiled": variant.compiled, "error": variant.error}
    median = statistics.median(variant.images_per_s)
    achieved = median * flops_per_image
    return {
        "model": variant.model_name,
        "compiled": variant.compiled,
        "params": count_parameters(model),
        "images_per_s": median,
        "images_per_s_rounds": variant.images_per_s,
        "ratio_vs_upstream_eager": median / baseline_images_per_s,
        "first_step_s": variant.first_step_s,
        "achieved_flops": achieved,
        "fraction_of_matmul_peak": achieved / matmul_flops,
        "mfu": mfu(median, flops_per_image, peak),
    }


def pick_baseline(variants: Sequence[Variant], running: Sequence[Variant]) -> Variant:
    """Upstream eager where it ran, else the first variant that ran (else the first of all)."""
    baseline = next((v for v in running if v.model_name == "upstream" and not v.compiled), None)
    return baseline or (running[0] if running else variants[0])


def model_sweep(
    config: ModelConfig,
    *,
    device: torch.device,
    models: Sequence[str] = ("vit_lib", "upstream", "timm"),
    compile_modes: Sequence[bool] = (False, True),
    amp_dtype: torch.dtype | None = None,
    rounds: int = 5,
    steps: int = 10,
    warmup_steps: int = 3,
    compile_backend: str | Callable = "inductor",
    show_progress: bool = True,
    quick: bool = False,
) -> dict[str, Any]:
    """Training-step throughput of each model x mode, interleaved round by round.

    A variant whose warm-up raises (a compiler error, say) gets a row with its ``error`` and is not
    timed; the others are. MFU counts SimpleViT's matmul FLOPs for every model, timm's too: its ViT
    of the same config does the same matrix products (only its patch convolution skips the gradient
    of the images, 0.4 % of ViT-S/16's FLOPs), so equal work per image is credited equally.
    """
    images, labels = random_batch(config, device)
    built = build_models(config, models)
    check_sweep_fits(config, built, len(built) * len(compile_modes), device)
    built = {name: model.to(device) for name, model in built.items()}
    flops_per_image = vit_flops_per_image(config, training=True)
    checks: dict[str, Any] = {
        "flops_per_image_training": flops_per_image,
        **same_weights_check(built, images),
    }

    variants = [
        make_variant(name, model, compiled, images, labels, amp_dtype, compile_backend)
        for compiled in compile_modes
        for name, model in built.items()
    ]
    bar = progress(len(variants) * (rounds + 1), f"model {config.name}", show_progress)
    running = run_rounds(
        variants,
        device,
        rounds=rounds,
        steps=steps,
        warmup_steps=warmup_steps,
        batch_size=config.batch_size,
        bar=bar,
    )
    bar.close()
    # after the timed rounds, so the profiler's overhead cannot disturb them
    profiles = [profile_step(v) for v in running if v.model_name == "vit_lib"] if device.type == "cpu" else []

    baseline = pick_baseline(variants, running)
    base = statistics.median(baseline.images_per_s) if baseline.images_per_s else math.nan
    env = environment(device)
    peak = peak_flops(env.get("gpu", ""), amp_dtype) if amp_dtype is not None else None
    matmul_flops = measured_matmul_flops(device, amp_dtype or torch.float32, size=256 if quick else 2048)
    rows = [
        result_row(
            v,
            built[v.model_name],
            baseline_images_per_s=base,
            flops_per_image=flops_per_image,
            matmul_flops=matmul_flops,
            peak=peak,
        )
        for v in variants
    ]
    return {
        "kind": "model",
        "environment": env,
        "config": asdict(config),
        "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
        "compile_backend": compile_backend,
        "rounds": rounds,
        "steps_per_round": steps,
        "baseline": baseline.label,
        "peak_flops": peak,  # dense tensor-core peak in amp_dtype (PEAK_FLOPS), None where unknown
        "round_order": "variants rotated one place per round",
        "measured_matmul_flops": matmul_flops,
        "checks": checks,
        "profiles": profiles,
        "results": rows,
    }
