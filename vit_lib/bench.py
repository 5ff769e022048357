"""Benchmarks that print and record figures: attention kernels vs sequence length, and whole-model
training throughput of vit_lib, upstream vit-pytorch and timm.

    python -m vit_lib.bench attention [--quick] [--out FILE]   # time and peak memory per backend
    python -m vit_lib.bench model [--quick] [--out FILE]       # training images/s, eager and compiled

Without ``--out`` the results go to ``book/data/bench_<kind>_<cpu|gpu>.json`` when run from the
repository root (elsewhere, to that file name in the current folder; ``--quick`` runs write nothing
unless asked); chapter 8 reads them from the current folder or ``book/data``. These are measurements,
not tests: the tests run ``--quick`` on tiny sizes and check the bookkeeping, never a speed.
``model --quick`` takes seconds only with ``--compile-backend eager`` (or ``--no-compile``); by default
it compiles with inductor, which needs a C++ compiler and takes tens of seconds.

How things are measured:

- time: ``torch.utils.benchmark.Timer.blocked_autorange`` (median over blocks of calls, with CUDA
  synchronisation), forward pass only for attention;
- attention memory, CUDA: ``torch.cuda.max_memory_allocated`` during one call, minus what was allocated
  before it (so it counts the output and every temporary, not q, k, v);
- attention memory, CPU: the growth of the peak resident set size (``VmHWM`` in ``/proc/self/status``,
  reset through ``/proc/self/clear_refs``) during one call, in a fresh subprocess per point so that no
  earlier point's freed-but-kept heap hides it;
- model throughput: a full training step (forward, cross-entropy, backward, AdamW step) on random data,
  the variants interleaved round by round in one process so that they share the machine's state (their
  order rotated one place per round), and the median images/s over rounds; on CUDA under the training
  loop's autocast dtype (``vit_lib.training.amp_dtype``: bf16 from compute capability 8.0, else fp16).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark

from vit_lib.attention import SDPBackend, attention_math, restrict_sdpa
from vit_lib.model import SimpleViT
from vit_lib.training import amp_dtype as training_amp_dtype
from vit_lib.triton_attention import triton_available

BOOK_DATA = Path("book") / "data"  # where chapter 8 reads results, relative to the repository root
MiB = 2**20

# Dense 16-bit tensor-core peaks, FLOP/s, per GPU model: half the "with sparsity" figures of NVIDIA's
# data sheets (book/references.bib: nvidia2023h100, nvidia2024h200, nvidia2020a100, nvidia2023l4,
# nvidia2018t4). Keys are model names as `gpu_model` normalises torch.cuda.get_device_name(): exact
# matches only, so that "L4" is not taken for an L40S, nor "H100" for an H100 NVL (models not listed
# have no peak, and so no MFU, rather than a wrong one). The T4 has no bf16 tensor cores.
PEAK_FLOPS = {
    "h100": {"bfloat16": 989.5e12, "float16": 989.5e12},  # SXM5: "NVIDIA H100 80GB HBM3"
    "h100 sxm": {"bfloat16": 989.5e12, "float16": 989.5e12},
    "h100 sxm5": {"bfloat16": 989.5e12, "float16": 989.5e12},
    "h100 pcie": {"bfloat16": 756e12, "float16": 756e12},
    "h200": {"bfloat16": 989.5e12, "float16": 989.5e12},  # SXM: "NVIDIA H200"
    "a100": {"bfloat16": 312e12, "float16": 312e12},  # "NVIDIA A100 80GB PCIe" and the like
    "a100 sxm4": {"bfloat16": 312e12, "float16": 312e12},  # "NVIDIA A100-SXM4-40GB"
    "a100 pcie": {"bfloat16": 312e12, "float16": 312e12},  # "NVIDIA A100-PCIE-40GB"
    "l4": {"bfloat16": 121e12, "float16": 121e12},
    "t4": {"float16": 65e12},  # "Tesla T4": fp16 with fp32 accumulation
}


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: hardware, thread count and library versions."""
    env = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "vit_pytorch": package_version("vit-pytorch"),
        "timm": package_version("timm"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (imported only when shown), or a stand-in with the same two methods."""
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False)

    class Silent:
        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    return Silent()


# ----------------------------------------------------------------------------- attention sweep

# The backends worth forcing one at a time on each device type. On the CPU, PyTorch registers its
# fused kernel as FLASH_ATTENTION; the CUDA list includes cuDNN where torch has it.
FORCEABLE_BACKENDS = {
    "cpu": ("FLASH_ATTENTION", "MATH"),
    "cuda": ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"),
}


def attention_methods(device_type: str) -> list[str]:
    """``math`` (vit_lib's explicit path), ``sdpa`` (PyTorch's own choice), ``sdpa:<BACKEND>``, and on
    CUDA, where Triton is installed, ``triton`` (vit_lib's FlashAttention-2 kernels; never on the CPU,
    where they would run in Triton's interpreter, which cannot be timed meaningfully)."""
    forced = [b for b in FORCEABLE_BACKENDS.get(device_type, ("MATH",)) if hasattr(SDPBackend, b)]
    triton = ["triton"] if device_type == "cuda" and triton_available() else []
    return ["math", "sdpa"] + [f"sdpa:{b}" for b in forced] + triton


def method_context(method: str) -> contextlib.AbstractContextManager:
    """The context to run ``method`` in: a one-backend restriction for ``sdpa:<BACKEND>``."""
    if method.startswith("sdpa:"):
        return restrict_sdpa([getattr(SDPBackend, method.split(":", 1)[1])])
    if method in ("math", "sdpa", "triton"):
        return contextlib.nullcontext()
    raise ValueError(
        f"unknown attention method {method!r}; expected 'math', 'sdpa', 'sdpa:<BACKEND>' or 'triton'"
    )


def attention_call(method: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The function that runs ``method``; ``triton`` is ``vit_lib.triton_attention.flash_attention``
    (CUDA only; an ImportError where that module or Triton is missing)."""
    method_context(method)  # validates the name
    if method == "triton":
        from vit_lib.triton_attention import flash_attention  # imports triton

        return flash_attention
    return attention_math if method == "math" else F.scaled_dot_product_attention


def qkv_inputs(
    n: int, *, batch: int, heads: int, dim_head: int, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (3, batch, heads, n, dim_head)
    q, k, v = torch.randn(shape, generator=generator).to(device=device, dtype=dtype).unbind(0)
    return q, k, v


def sdpa_kernel_name(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """The ATen op that ``method`` dispatches to, e.g. ``_scaled_dot_product_flash_attention_for_cpu``.

    Recorded with a dispatch mode (silent and cheap, unlike the profiler). The math backend is a
    composite that decomposes into ``bmm``/``_safe_softmax`` before reaching the mode.
    """
    if method == "math":
        return None
    if method == "triton":
        return "vit_lib.triton_kernels.flash_forward_kernel"
    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with method_context(method), RecordOps() as recorder:
        F.scaled_dot_product_attention(q, k, v)
    fused = [op for op in recorder.ops if op.startswith("_scaled_dot_product")]
    return fused[0] if fused else "math: " + " ".join(dict.fromkeys(recorder.ops))


def time_attention(
    method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, min_run_time: float
) -> tuple[float, int, list[float]]:
    """Median seconds per forward call, how many calls the median came from, and the seconds per call
    of each timed block (their spread is the point's noise; a slow point may have only 1-3 blocks)."""
    fn = attention_call(method)
    with method_context(method), torch.inference_mode():
        fn(q, k, v)  # raises here, not inside the timer, when the backend cannot run these inputs
        timer = benchmark.Timer(
            stmt="fn(q, k, v)",
            globals={"fn": fn, "q": q, "k": k, "v": v},
            num_threads=torch.get_num_threads(),  # Timer defaults to one thread
        )
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return measurement.median, len(measurement.times) * measurement.number_per_run, list(measurement.times)


def read_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_here(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Extra bytes at the peak of one ``method`` call over what was in use just before it."""
    fn = attention_call(method)
    device = q.device
    with method_context(method), torch.inference_mode():
        if device.type == "cuda":
            fn(q, k, v)  # lazy CUDA/cuBLAS initialisation happens outside the measurement
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            out = fn(q, k, v)
            torch.cuda.synchronize(device)
            del out
            return torch.cuda.max_memory_allocated(device) - before
        # Warm up on a tiny problem: the code pages and thread pools that a first call maps in would
        # otherwise count as memory of the kernel. Its few KiB stay in the heap's free lists.
        fn(*(t[..., :8, :] for t in (q, k, v)))
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = read_status_kib("VmRSS")
        out = fn(q, k, v)
        peak = read_status_kib("VmHWM")
        del out
        return (peak - before) * 1024


def peak_memory(method: str, n: int, dtype: torch.dtype, shape: dict[str, int], device: torch.device) -> int:
    """Peak extra bytes for one call; on the CPU measured in a fresh Python process."""
    if device.type == "cuda":
        q, k, v = qkv_inputs(n, dtype=dtype, device=device, **shape)
        return peak_memory_here(method, q, k, v)
    args = [sys.executable, "-m", "vit_lib.bench", "_attention-memory", method, str(n), str(dtype)]
    args += [f"--{key.replace('_', '-')}={value}" for key, value in shape.items()]
    args += [f"--threads={torch.get_num_threads()}"]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return json.loads(done.stdout)["peak_bytes"]


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during one call, minus memory allocated before it"
    return (
        "growth of peak resident set size (VmHWM after resetting it via /proc/self/clear_refs) during "
        "one call, in a fresh subprocess per point; inputs allocated before the reset"
    )


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"unknown floating-point dtype {name!r}; expected e.g. float32 or bfloat16")
    return dtype


def attention_sweep(
    seq_lens: Sequence[int],
    dtypes: Sequence[torch.dtype],
    *,
    device: torch.device,
    batch: int = 1,
    heads: int = 8,
    dim_head: int = 64,
    methods: Sequence[str] | None = None,
    min_run_time: float = 0.2,
    measure_memory: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Time (and measure the memory of) every method at every sequence length and dtype."""
    methods = list(methods or attention_methods(device.type))
    shape = {"batch": batch, "heads": heads, "dim_head": dim_head}
    rows: list[dict[str, Any]] = []
    kernels: dict[str, str | None] = {}
    bar = progress(len(seq_lens) * len(dtypes) * len(methods), "attention", show_progress)
    for dtype in dtypes:
        for n in seq_lens:
            q, k, v = qkv_inputs(n, dtype=dtype, device=device, **shape)
            for method in methods:
                row: dict[str, Any] = {"method": method, "dtype": str(dtype).removeprefix("torch."), "n": n}
                try:
                    row["time_s"], row["calls"], row["time_s_blocks"] = time_attention(
                        method, q, k, v, min_run_time
                    )
                    if measure_memory:
                        row["peak_bytes"] = peak_memory(method, n, dtype, shape, device)
                    key = f"{method} {row['dtype']}"
                    if key not in kernels:
                        kernels[key] = sdpa_kernel_name(method, q, k, v)
                # e.g. "No available kernel" for a forced backend, a kernel that rejects a dtype: one
                # point's failure is recorded, and the sweep goes on
                except Exception as error:
                    row["error"] = first_line(error)
                rows.append(row)
                bar.update()
            del q, k, v
    bar.close()
    return {
        "kind": "attention",
        "environment": environment(device),
        "shape": shape,
        "memory_method": memory_method(device) if measure_memory else None,
        "time_method": "torch.utils.benchmark.Timer.blocked_autorange median, forward only",
        "kernels": kernels,
        "results": rows,
    }


def first_line(error: BaseException) -> str:
    """The error's first line, and the next one where the first only introduces it (dynamo's
    ``backend='inductor' raised:`` before the compiler's own error)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text[:300]


# ----------------------------------------------------------------------------- model sweep


@dataclass(frozen=True)
class ModelConfig:
    """A SimpleViT size, and the batch to train it with. ``heads * dim_head == dim`` so that a timm
    ViT (whose attention width is always ``dim``) can match it."""

    name: str
    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    batch_size: int
    dim_head: int = 64
    channels: int = 3

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def simple_vit_kwargs(self) -> dict[str, int]:
        kwargs = asdict(self)
        del kwargs["name"], kwargs["batch_size"]
        return kwargs


MODEL_CONFIGS = {
    config.name: config
    for config in (
        # ViT-Ti width at CIFAR resolution, half the depth: small enough for a CPU.
        ModelConfig("cpu-small", 32, 4, 10, dim=192, depth=6, heads=3, mlp_dim=768, batch_size=64),
        ModelConfig("vit-s16", 224, 16, 1000, dim=384, depth=12, heads=6, mlp_dim=1536, batch_size=128),
        ModelConfig("vit-b16", 224, 16, 1000, dim=768, depth=12, heads=12, mlp_dim=3072, batch_size=128),
        ModelConfig("quick", 16, 4, 10, dim=32, depth=2, heads=2, mlp_dim=64, batch_size=4, dim_head=16),
    )
}


def vit_flops_per_image(config: ModelConfig, training: bool = False) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of SimpleViT on one image.

    Counts what dominates and what ``FlopCounterMode`` counts: the patch projection, per block the qkv
    projection, ``q k^T``, ``attn v``, the output projection and the two MLP layers, and the head;
    not norms, softmax or GELU. A training step costs 3x the forward pass: backward computes two
    matrix products (gradients of both operands) for each one of the forward pass.
    """
    n, dim, inner = config.num_tokens, config.dim, config.heads * config.dim_head
    patch_dim = config.channels * config.patch_size**2
    block = (
        2 * n * dim * 3 * inner
        + 2 * (2 * n * n * inner)
        + 2 * n * inner * dim
        + 2 * (2 * n * dim * config.mlp_dim)
    )
    forward = 2 * n * patch_dim * dim + config.depth * block + 2 * dim * config.num_classes
    return 3 * forward if training else forward


def counted_flops(model: nn.Module, images: torch.Tensor, training: bool = False) -> int:
    """FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` counts for a forward (+ backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = model(images)
        if training:
            out.float().sum().backward()
    return counter.get_total_flops()


def gpu_model(gpu_name: str) -> str:
    """The model part of a GPU name, normalised: lower case, no vendor or brand word, no memory size,
    separators as single spaces. ``"NVIDIA A100-SXM4-40GB"`` -> ``"a100 sxm4"``, ``"Tesla T4"`` ->
    ``"t4"``, ``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``, ``"NVIDIA H100 NVL"`` -> ``"h100 nvl"``."""
    words = re.split(r"[\s_-]+", gpu_name.lower().strip())
    vendor = {"nvidia", "tesla", "geforce", "quadro"}
    memory = re.compile(r"^\d+gb$|^hbm\d?e?$")
    return " ".join(w for w in words if w and w not in vendor and not memory.match(w))


def peak_flops(gpu_name: str, dtype: torch.dtype | str = torch.bfloat16) -> float | None:
    """The GPU's dense tensor-core peak in ``dtype`` (FLOP/s), or ``None`` where the model is not in
    ``PEAK_FLOPS`` or has no tensor cores for that dtype. Exact model matching (see ``gpu_model``)."""
    name = str(dtype).removeprefix("torch.")
    return PEAK_FLOPS.get(gpu_model(gpu_name), {}).get(name)


def peak_bf16_flops(gpu_name: str) -> float | None:
    return peak_flops(gpu_name, torch.bfloat16)


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """FLOP/s of one large square matmul: the practical ceiling that the model's matmuls run at."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device=device, dtype=dtype) for _ in range(2))
    timer = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2 * size**3 / timer.blocked_autorange(min_run_time=0.5).median


def build_models(config: ModelConfig, names: Iterable[str], seed: int = 0) -> dict[str, nn.Module]:
    """vit_lib's SimpleViT, upstream's with the same weights, and a timm ViT of the same size."""
    torch.manual_seed(seed)
    ours = SimpleViT(**config.simple_vit_kwargs())
    models: dict[str, nn.Module] = {}
    for name in names:
        if name == "vit_lib":
            models[name] = ours
        elif name == "upstream":
            from vit_pytorch.simple_flash_attn_vit import SimpleViT as UpstreamSimpleViT

            upstream = UpstreamSimpleViT(**config.simple_vit_kwargs(), use_flash=True)
            upstream.load_state_dict(ours.state_dict())
            models[name] = upstream
        elif name == "timm":
            from timm.models.vision_transformer import VisionTransformer

            models[name] = VisionTransformer(
                img_size=config.image_size,
                patch_size=config.patch_size,
                in_chans=config.channels,
                num_classes=config.num_classes,
                embed_dim=config.dim,
                depth=config.depth,
                num_heads=config.heads,
                mlp_ratio=config.mlp_dim / config.dim,
                qkv_bias=False,
                class_token=False,
                global_pool="avg",
            )
        else:
            raise ValueError(f"unknown model {name!r}; expected 'vit_lib', 'upstream' or 'timm'")
    return models


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Variant:
    """One model in one mode (eager or compiled), with its own optimizer and timings."""

    model_name: str
    compiled: bool
    step: Callable[[], torch.Tensor]
    images_per_s: list[float]
    first_step_s: float = math.nan
    error: str | None = None  # why its warm-up failed (e.g. a compiler error); then it is not timed

    @property
    def label(self) -> str:
        return f"{self.model_name} {'compiled' if self.compiled else 'eager'}"


def make_variant(
    model_name: str,
    model: nn.Module,
    compiled: bool,
    images: torch.Tensor,
    labels: torch.Tensor,
    amp_dtype: torch.dtype | None,
    compile_backend: str | Callable,
) -> Variant:
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model, backend=compile_backend) if compiled else model
    device_type = images.device.type

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    return Variant(model_name, compiled, step, [])


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_step(variant: Variant, steps: int = 2, top: int = 8) -> dict[str, Any]:
    """Where a training step's CPU time goes (``torch.profiler``, self time per op).

    ``kernel_share`` is the fraction spent in matrix multiplies and fused attention: work that
    compilation hands to the same BLAS/attention kernels, so ``1 / kernel_share`` bounds what fusing
    everything else could gain.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            variant.step()
    ops = list(prof.key_averages())  # self times partition the profiled time: no double counting
    total = sum(e.self_cpu_time_total for e in ops)
    kernels = sum(
        e.self_cpu_time_total
        for e in ops
        if e.key in MATMUL_OPS or e.key.startswith("aten::_scaled_dot_product")
    )
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "variant": variant.label,
        "kernel_share": kernels / total,
        "top_ops": [
            {"op": e.key[:60], "share": e.self_cpu_time_total / total, "calls": e.count // steps}
            for e in ops[:top]
        ],
    }


def timed_steps(variant: Variant, steps: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        variant.step()
    synchronize(device)
    return time.perf_counter() - start


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
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch_size, config.channels, config.image_size, config.image_size)
    images = torch.randn(shape, generator=generator).to(device)
    labels = torch.randint(config.num_classes, (config.batch_size,), generator=generator).to(device)
    built = {name: model.to(device) for name, model in build_models(config, models).items()}

    flops_per_image = vit_flops_per_image(config, training=True)
    checks: dict[str, Any] = {"flops_per_image_training": flops_per_image}
    if "vit_lib" in built and "upstream" in built:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # upstream's deprecated sdp_kernel
            diff = (built["vit_lib"](images[:2]) - built["upstream"](images[:2])).abs().max().item()
        checks["vit_lib_vs_upstream_max_abs_logit_diff"] = diff

    variants = [
        make_variant(name, model, compiled, images, labels, amp_dtype, compile_backend)
        for compiled in compile_modes
        for name, model in built.items()
    ]
    bar = progress(len(variants) * (rounds + 1), f"model {config.name}", show_progress)
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
                variant.images_per_s.append(steps * config.batch_size / seconds)
                bar.update()
    bar.close()
    # after the timed rounds, so the profiler's overhead cannot disturb them
    profiles = [profile_step(v) for v in running if v.model_name == "vit_lib"] if device.type == "cpu" else []

    baseline = next((v for v in running if v.model_name == "upstream" and not v.compiled), None)
    baseline = baseline or (running[0] if running else variants[0])
    base = statistics.median(baseline.images_per_s) if baseline.images_per_s else math.nan
    env = environment(device)
    peak = peak_flops(env.get("gpu", ""), amp_dtype) if amp_dtype is not None else None
    matmul_flops = measured_matmul_flops(device, amp_dtype or torch.float32, size=256 if quick else 2048)
    rows = []
    for variant in variants:
        if variant.error is not None:
            rows.append({"model": variant.model_name, "compiled": variant.compiled, "error": variant.error})
            continue
        median = statistics.median(variant.images_per_s)
        row = {
            "model": variant.model_name,
            "compiled": variant.compiled,
            "params": count_parameters(built[variant.model_name]),
            "images_per_s": median,
            "images_per_s_rounds": variant.images_per_s,
            "ratio_vs_upstream_eager": median / base,
            "first_step_s": variant.first_step_s,
        }
        row["achieved_flops"] = median * flops_per_image
        row["fraction_of_matmul_peak"] = row["achieved_flops"] / matmul_flops
        row["mfu"] = row["achieved_flops"] / peak if peak else None
        rows.append(row)
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


# ----------------------------------------------------------------------------- printing and CLI


def format_bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / MiB:.1f} MiB"


def print_attention(report: dict[str, Any]) -> None:
    env = report["environment"]
    hardware = env.get("gpu") or env["cpu"]
    print(f"attention, {env['device']} ({hardware}), torch {env['torch']}, {report['shape']}")
    print(f"{'dtype':9} {'n':>6}  {'method':24} {'time':>11} {'peak memory':>13}")
    for row in report["results"]:
        if "error" in row:
            result = f"unsupported: {row['error'][:60]}"
        else:
            result = f"{row['time_s'] * 1e3:8.3f} ms {format_bytes(row.get('peak_bytes')):>13}"
        print(f"{row['dtype']:9} {row['n']:>6}  {row['method']:24} {result}")


def print_model(report: dict[str, Any]) -> None:
    env, config = report["environment"], report["config"]
    print(
        f"training step, {config['name']} batch {config['batch_size']}, {env['device']} "
        f"({env.get('gpu') or env['cpu']}, {env['torch_threads']} threads), torch {env['torch']}, "
        f"amp {report['amp_dtype']}"
    )
    matmul_gflops = report["measured_matmul_flops"] / 1e9
    print(f"measured {report['amp_dtype'] or 'float32'} matmul peak: {matmul_gflops:.1f} GFLOP/s")
    header = f"{'model':22} {'params':>10} {'images/s':>10} {'vs ' + report['baseline']:>20}"
    print(f"{header} {'of matmul peak':>15} {'MFU':>7}")
    for row in report["results"]:
        label = f"{row['model']} {'compiled' if row['compiled'] else 'eager'}"
        if "error" in row:
            print(f"{label:22} failed: {row['error'][:80]}")
            continue
        mfu = "-" if row.get("mfu") is None else f"{row['mfu']:.1%}"
        of_peak = "-" if "fraction_of_matmul_peak" not in row else f"{row['fraction_of_matmul_peak']:.1%}"
        print(
            f"{label:22} {row['params']:>10,} {row['images_per_s']:>10.1f} "
            f"{row['ratio_vs_upstream_eager']:>19.2f}x {of_peak:>15} {mfu:>7}"
        )


def default_out(kind: str, device: torch.device) -> Path:
    """``book/data/bench_<kind>_<cpu|gpu>.json`` from the repository root, else in the current folder
    (an installed vit_lib, e.g. on Colab, has no book next to it)."""
    name = f"bench_{kind}_{'gpu' if device.type == 'cuda' else 'cpu'}.json"
    return BOOK_DATA / name if BOOK_DATA.is_dir() else Path(name)


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(prog="python -m vit_lib.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, a few calls: checks the plumbing (writes nothing unless --out is given); "
        "the model sweep still compiles with inductor (tens of seconds, needs a C++ compiler) unless "
        "--no-compile or --compile-backend eager",
    )
    common.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    common.add_argument("--out", type=Path, default=None, help="JSON file to write")
    common.add_argument("--no-progress", action="store_true")

    attention = sub.add_parser("attention", parents=[common], help="attention time and memory vs length")
    attention.add_argument("--seq-lens", type=int, nargs="+", default=None)
    attention.add_argument("--dtypes", nargs="+", default=None, help="default: float32 bfloat16")
    attention.add_argument("--no-memory", action="store_true")

    model = sub.add_parser("model", parents=[common], help="training throughput of whole models")
    model.add_argument("--configs", nargs="+", default=None, choices=sorted(MODEL_CONFIGS))
    model.add_argument("--rounds", type=int, default=None)
    model.add_argument("--steps", type=int, default=None)
    model.add_argument("--no-compile", action="store_true")
    model.add_argument("--compile-backend", default="inductor")

    memory = sub.add_parser("_attention-memory", help=argparse.SUPPRESS)  # one point, in a subprocess
    memory.add_argument("method")
    memory.add_argument("n", type=int)
    memory.add_argument("dtype")
    for name in ("batch", "heads", "dim-head", "threads"):
        memory.add_argument(f"--{name}", type=int, required=True)

    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.kind == "_attention-memory":
        q, k, v = qkv_inputs(
            args.n,
            batch=args.batch,
            heads=args.heads,
            dim_head=args.dim_head,
            dtype=dtype_from_name(args.dtype),
            device=torch.device("cpu"),
        )
        print(json.dumps({"peak_bytes": peak_memory_here(args.method, q, k, v)}))
        return None

    device = torch.device(args.device) if args.device else default_device()
    show = not args.no_progress
    out = args.out or (None if args.quick else default_out(args.kind, device))
    if args.kind == "attention":
        if args.quick:
            seq_lens, min_run_time = args.seq_lens or [16, 32], 0.01
        else:
            top = 16384 if device.type == "cuda" else 4096
            seq_lens, min_run_time = args.seq_lens or [2**i for i in range(6, top.bit_length())], 0.5
        dtype_names = args.dtypes or ["float32", "bfloat16"]
        report = attention_sweep(
            seq_lens,
            [dtype_from_name(d) for d in dtype_names],
            device=device,
            min_run_time=min_run_time,
            measure_memory=not args.no_memory,
            show_progress=show,
            **({"heads": 2, "dim_head": 16} if args.quick else {}),
        )
        print_attention(report)
    else:
        if args.quick:
            names, rounds, steps = args.configs or ["quick"], args.rounds or 2, args.steps or 2
        else:
            default_names = ["vit-s16", "vit-b16"] if device.type == "cuda" else ["cpu-small"]
            names, rounds, steps = args.configs or default_names, args.rounds or 10, args.steps or 10
        reports = []
        for name in names:
            config = MODEL_CONFIGS[name]
            amp = training_amp_dtype(device)  # the training loop's policy: bf16 from sm80, fp16 below
            reports.append(
                model_sweep(
                    config,
                    device=device,
                    amp_dtype=amp,
                    rounds=rounds,
                    steps=steps,
                    warmup_steps=1 if args.quick else 3,
                    compile_modes=(False,) if args.no_compile else (False, True),
                    compile_backend=args.compile_backend,
                    show_progress=show,
                    quick=args.quick,
                )
            )
            print_model(reports[-1])
            if out is not None:  # after every sweep: one that crashes later (out of memory) loses only itself
                write_report({"kind": "model", "sweeps": reports}, out)
        return {"kind": "model", "sweeps": reports}
    if out is not None:
        write_report(report, out)
    return report


if __name__ == "__main__":
    main()
