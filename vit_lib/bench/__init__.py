"""Benchmarks that print and record figures: attention kernels vs sequence length, and whole-model
training throughput of vit_lib, upstream vit-pytorch and timm. Chapter 8 (book/08_performance.ipynb)
reads and explains their results.

    python -m vit_lib.bench attention [--quick] [--out FILE]   # time and peak memory per backend
    python -m vit_lib.bench model [--quick] [--out FILE]       # training images/s, eager and compiled

Without ``--out`` the results go to ``book/data/bench_<kind>_<cpu|gpu>.json`` when run from the
repository root (elsewhere, to that file name in the current folder; ``--quick`` runs write nothing
unless asked); chapter 8 reads them from the current folder or ``book/data``. These are measurements,
not tests: the tests run ``--quick`` on tiny sizes and check the bookkeeping, never a speed.

How things are measured:

- time: ``torch.utils.benchmark.Timer.blocked_autorange`` (median over blocks of calls, with CUDA
  synchronisation, on torch's thread count), forward pass only for attention;
- attention memory, CUDA: ``torch.cuda.max_memory_allocated`` during one call, minus what was allocated
  before it (so it counts the output and every temporary, not q, k, v);
- attention memory, CPU: the growth of the peak resident set size (``VmHWM`` in ``/proc/self/status``,
  reset through ``/proc/self/clear_refs``) during one call, in a fresh subprocess per point
  (``python -m vit_lib.bench.memory_worker``) so that no earlier point's freed-but-kept heap hides it;
- model throughput: a full training step (forward, cross-entropy, backward, AdamW step) on random data,
  the variants interleaved round by round in one process so that they share the machine's state, and
  their order rotated one place per round, and the median images/s over rounds; on CUDA under the
  training loop's autocast dtype (``vit_lib.device.amp_dtype``: bf16 from compute capability 8.0,
  else fp16).

``model --quick`` takes seconds only with ``--compile-backend eager`` (or ``--no-compile``); by default
it compiles with inductor, which needs a C++ compiler and takes tens of seconds.

The modules: ``measure`` (environment, timer, matmul ceiling), ``attention_methods`` and ``memory``
(what one attention point runs and how its memory is read), ``attention`` (the attention sweep),
``models`` and ``throughput`` (the model sweep), ``report`` (tables and JSON), ``cli``. Model sizes
live in ``vit_lib.configs``, FLOPs and GPU peaks in ``vit_lib.flops``; both are re-exported here for
the chapters.
"""

from vit_lib.bench.attention import attention_sweep, measure_point, time_attention
from vit_lib.bench.attention_methods import (
    FORCEABLE_BACKENDS,
    attention_call,
    attention_methods,
    dtype_from_name,
    method_context,
    qkv_inputs,
    sdpa_kernel_name,
)
from vit_lib.bench.cli import main
from vit_lib.bench.measure import (
    blocked_autorange,
    cpu_model,
    environment,
    first_line,
    measured_matmul_flops,
    package_version,
    progress,
)
from vit_lib.bench.memory import MiB, memory_method, peak_memory, peak_memory_here, read_status_kib
from vit_lib.bench.models import (
    MATMUL_OPS,
    Variant,
    build_models,
    count_parameters,
    make_variant,
    profile_step,
    timed_steps,
)
from vit_lib.bench.report import (
    BOOK_DATA,
    default_out,
    format_bytes,
    print_attention,
    print_model,
    write_report,
)
from vit_lib.bench.throughput import model_sweep
from vit_lib.configs import MODEL_CONFIGS, ModelConfig
from vit_lib.device import default_device, synchronize
from vit_lib.flops import (
    PEAK_BF16_FLOPS,
    PEAK_FLOPS,
    counted_flops,
    gpu_model,
    mfu,
    peak_bf16_flops,
    peak_flops,
    vit_flops_per_image,
)

__all__ = [
    "BOOK_DATA",
    "FORCEABLE_BACKENDS",
    "MATMUL_OPS",
    "MODEL_CONFIGS",
    "PEAK_BF16_FLOPS",
    "PEAK_FLOPS",
    "MiB",
    "ModelConfig",
    "Variant",
    "attention_call",
    "attention_methods",
    "attention_sweep",
    "blocked_autorange",
    "build_models",
    "count_parameters",
    "counted_flops",
    "cpu_model",
    "default_device",
    "default_out",
    "dtype_from_name",
    "environment",
    "first_line",
    "format_bytes",
    "gpu_model",
    "main",
    "make_variant",
    "measure_point",
    "measured_matmul_flops",
    "memory_method",
    "method_context",
    "mfu",
    "model_sweep",
    "package_version",
    "peak_bf16_flops",
    "peak_flops",
    "peak_memory",
    "peak_memory_here",
    "print_attention",
    "print_model",
    "profile_step",
    "progress",
    "qkv_inputs",
    "read_status_kib",
    "sdpa_kernel_name",
    "synchronize",
    "time_attention",
    "timed_steps",
    "vit_flops_per_image",
    "write_report",
]
