"""The benchmarks' bookkeeping: FLOP formula, backend discovery, memory measurement, the CLI's JSON.

Speed is never asserted here; `python -m vit_lib.bench` prints and records it.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

from vit_lib import SimpleViT, bench
from vit_lib import device as device_policy
from vit_lib.bench import cli as bench_cli
from vit_lib.bench import measure
from vit_lib.bench import throughput as bench_throughput
from vit_lib.triton_attention import triton_available

QUICK = bench.MODEL_CONFIGS["quick"]


@pytest.mark.parametrize(
    "config",
    [
        QUICK,
        bench.ModelConfig("odd", 24, 6, 7, dim=24, depth=3, heads=3, mlp_dim=40, batch_size=2, dim_head=8),
    ],
    ids=["quick", "odd"],
)
@pytest.mark.parametrize("training", [False, True], ids=["forward", "training"])
def test_flop_formula_matches_flop_counter_exactly(config, training):
    # On the math path every matmul is an aten op FlopCounterMode knows (the CPU's fused SDPA is not).
    model = SimpleViT(**config.simple_vit_kwargs(), use_flash=False)
    images = torch.randn(3, config.channels, config.image_size, config.image_size)
    expected = 3 * bench.vit_flops_per_image(config, training=training)
    assert bench.counted_flops(model, images, training=training) == expected


def test_training_costs_three_forward_passes():
    assert bench.vit_flops_per_image(QUICK, training=True) == 3 * bench.vit_flops_per_image(QUICK)


def test_vit_b16_forward_flops_are_the_known_17_6_gflops():
    # DeiT (Touvron et al., 2021, Table 1) quotes ViT-B/16 at 224 as 17.6 GFLOPs (multiply-adds);
    # SimpleViT-B/16 has 196 tokens (no class token), so slightly fewer than that figure.
    gmacs = bench.vit_flops_per_image(bench.MODEL_CONFIGS["vit-b16"]) / 2 / 1e9
    assert 17.0 < gmacs < 17.6


def test_attention_methods_per_device():
    assert bench.attention_methods("cpu") == ["math", "sdpa", "sdpa:FLASH_ATTENTION", "sdpa:MATH"]
    cuda = bench.attention_methods("cuda")
    assert cuda[:4] == ["math", "sdpa", "sdpa:FLASH_ATTENTION", "sdpa:EFFICIENT_ATTENTION"]
    triton = ["triton"] if triton_available() else []
    assert cuda[-1 - len(triton) :] == ["sdpa:MATH", *triton]  # vit_lib's kernels on CUDA only


def test_triton_method_calls_vit_libs_kernels():
    pytest.importorskip("triton", reason="Triton is not installed here")
    from vit_lib.triton_attention import flash_attention

    assert bench.attention_call("triton") is flash_attention
    assert bench.sdpa_kernel_name("triton", None, None, None) == "vit_lib.triton_kernels.flash_forward_kernel"


def test_unknown_method_and_dtype_are_rejected():
    with pytest.raises(ValueError, match="unknown attention method 'flash'"):
        bench.attention_call("flash")
    with pytest.raises(ValueError, match="unknown floating-point dtype 'int8'"):
        bench.dtype_from_name("int8")
    assert bench.dtype_from_name("torch.bfloat16") is torch.bfloat16


def test_kernel_names_on_cpu():
    q, k, v = bench.qkv_inputs(
        32, batch=1, heads=2, dim_head=16, dtype=torch.float32, device=torch.device("cpu")
    )
    assert bench.sdpa_kernel_name("math", q, k, v) is None
    assert bench.sdpa_kernel_name("sdpa", q, k, v) == "_scaled_dot_product_flash_attention_for_cpu"
    assert (
        bench.sdpa_kernel_name("sdpa:FLASH_ATTENTION", q, k, v)
        == "_scaled_dot_product_flash_attention_for_cpu"
    )
    assert bench.sdpa_kernel_name("sdpa:MATH", q, k, v).startswith("math: ")


def test_forcing_an_unavailable_backend_is_recorded_not_raised():
    report = bench.attention_sweep(
        [16],
        [torch.float32],
        device=torch.device("cpu"),
        heads=2,
        dim_head=16,
        methods=["sdpa:EFFICIENT_ATTENTION"],  # CUDA only
        min_run_time=0.01,
        measure_memory=False,
        show_progress=False,
    )
    (row,) = report["results"]
    assert "time_s" not in row
    assert row["error"]


@pytest.mark.skipif(not pathlib.Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_cpu_peak_memory_is_quadratic_for_math_and_small_for_the_fused_kernel():
    n, shape = 1024, {"batch": 1, "heads": 8, "dim_head": 64}
    scores_bytes = shape["heads"] * n * n * 4  # one fp32 (b, h, n, n) matrix: 32 MiB
    math_peak = bench.peak_memory("math", n, torch.float32, shape, torch.device("cpu"))
    fused_peak = bench.peak_memory("sdpa", n, torch.float32, shape, torch.device("cpu"))
    assert math_peak >= scores_bytes
    assert fused_peak < scores_bytes / 4


def test_peak_flops_table():
    assert bench.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.5e12
    assert bench.peak_bf16_flops("NVIDIA H200") == 989.5e12
    assert bench.peak_bf16_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert bench.peak_bf16_flops("NVIDIA A100 80GB PCIe") == 312e12
    assert bench.peak_bf16_flops("NVIDIA L4") == 121e12
    assert bench.peak_bf16_flops("A100") == 312e12  # chapter 8 asks by the short name
    assert bench.peak_bf16_flops("Tesla T4") is None  # no bf16 tensor cores
    assert bench.peak_flops("Tesla T4", torch.float16) == 65e12
    assert bench.peak_flops("NVIDIA A100-SXM4-80GB", "float16") == 312e12
    assert bench.peak_flops("NVIDIA H100 80GB HBM3", torch.float32) is None  # no fp32 entry: no MFU


@pytest.mark.parametrize(
    "name",
    ["NVIDIA L40S", "NVIDIA L40", "NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA A10", "NVIDIA A100X", ""],
)
def test_peak_lookup_matches_whole_model_names_not_substrings(name):
    # substring matching would give the L40S the L4's peak and the H100 NVL the SXM part's
    assert bench.peak_bf16_flops(name) is None


def test_gpu_model_normalises_vendor_memory_and_separators():
    assert bench.gpu_model("NVIDIA A100-SXM4-40GB") == "a100 sxm4"
    assert bench.gpu_model("NVIDIA H100 80GB HBM3") == "h100"
    assert bench.gpu_model("  nvidia  H100_PCIe ") == "h100 pcie"
    assert bench.gpu_model("Tesla T4") == "t4"


def test_model_cli_uses_the_training_loops_autocast_policy(monkeypatch):
    # on a T4 (sm75) the sweep must run fp16 as training does, not bf16; no GPU needed to check the choice
    seen = {}

    def fake_sweep(config, **kwargs):
        seen["amp_dtype"] = kwargs["amp_dtype"]
        raise SystemExit  # stop before any work

    monkeypatch.setattr(bench_cli, "model_sweep", fake_sweep)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(device_policy, "cuda_capability", lambda index: (7, 5))
    with pytest.raises(SystemExit):
        bench.main(["model", "--quick", "--device", "cuda", "--no-progress"])
    assert seen["amp_dtype"] is torch.float16
    monkeypatch.setattr(device_policy, "cuda_capability", lambda index: (9, 0))
    with pytest.raises(SystemExit):
        bench.main(["model", "--quick", "--device", "cuda", "--no-progress"])
    assert seen["amp_dtype"] is torch.bfloat16


def test_model_sweep_rotates_the_variant_order_each_round(monkeypatch):
    order = []
    real_timed_steps = bench.timed_steps

    def recording_timed_steps(variant, steps, device):
        if steps == 2:  # the timed rounds (warm-up uses 1 and 0 steps here)
            order.append(variant.label)
        return real_timed_steps(variant, steps, device)

    monkeypatch.setattr(bench_throughput, "timed_steps", recording_timed_steps)
    bench.model_sweep(
        QUICK,
        device=torch.device("cpu"),
        models=["vit_lib", "upstream"],
        compile_modes=(False,),
        rounds=2,
        steps=2,
        warmup_steps=0,
        show_progress=False,
        quick=True,
    )
    assert order == ["vit_lib eager", "upstream eager", "upstream eager", "vit_lib eager"]


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        bench.build_models(QUICK, ["resnet"])


def test_attention_cli_quick_writes_every_point(tmp_path, capsys):
    out = tmp_path / "attention.json"
    bench.main(["attention", "--quick", "--no-progress", "--dtypes", "float32", "--out", str(out)])
    report = json.loads(out.read_text())
    methods = bench.attention_methods("cpu")
    assert [(r["n"], r["method"]) for r in report["results"]] == [(n, m) for n in (16, 32) for m in methods]
    for row in report["results"]:
        assert "error" not in row, row
        assert row["time_s"] > 0 and row["calls"] >= 1
        assert len(row["time_s_blocks"]) >= 1 and min(row["time_s_blocks"]) <= row["time_s"]
        assert row["peak_bytes"] >= 0
    assert report["kernels"]["sdpa float32"] == "_scaled_dot_product_flash_attention_for_cpu"
    assert report["environment"]["torch"] == torch.__version__
    # what decides the bfloat16 figures: the machine's vector flags and the kernels ATen dispatches to
    assert report["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    flags = report["environment"]["cpu_flags"]
    assert flags == [f for f in measure.VECTOR_FLAGS if f in flags]  # a subset, in the table's order
    assert "sdpa:FLASH_ATTENTION" in capsys.readouterr().out


def test_cpu_flags_reads_the_flags_line(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 sse4_2 avx512_bf16 avx\n")
    real_path = measure.Path
    monkeypatch.setattr(measure, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert measure.cpu_flags() == ["sse4_2", "avx", "avx2", "avx512_bf16"]
    monkeypatch.setattr(measure, "Path", lambda p: tmp_path / "missing")
    assert measure.cpu_flags() == []  # no /proc (macOS, Windows): nothing claimed


def test_model_cli_quick_compares_same_weights_and_reports_ratios(tmp_path, capsys):
    out = tmp_path / "model.json"
    # dynamo with the "eager" backend exercises graph capture without a C++ compile
    bench.main(["model", "--quick", "--no-progress", "--compile-backend", "eager", "--out", str(out)])
    (sweep,) = json.loads(out.read_text())["sweeps"]
    assert sweep["checks"]["vit_lib_vs_upstream_max_abs_logit_diff"] < 1e-5
    rows = {(r["model"], r["compiled"]): r for r in sweep["results"]}
    assert set(rows) == {(m, c) for m in ("vit_lib", "upstream", "timm") for c in (False, True)}
    assert rows["upstream", False]["ratio_vs_upstream_eager"] == 1.0
    assert rows["vit_lib", False]["params"] == rows["upstream", False]["params"]
    for row in rows.values():
        assert len(row["images_per_s_rounds"]) == sweep["rounds"]
        assert row["images_per_s"] > 0 and row["first_step_s"] > 0
    assert rows["vit_lib", False]["achieved_flops"] == pytest.approx(
        rows["vit_lib", False]["images_per_s"] * sweep["checks"]["flops_per_image_training"]
    )
    assert rows["vit_lib", False]["mfu"] is None  # no dense bf16 peak for a CPU
    assert "vit_lib compiled" in capsys.readouterr().out


def test_default_output_is_book_data_in_the_repository_else_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cpu = torch.device("cpu")
    assert bench.default_out("model", cpu) == pathlib.Path("bench_model_cpu.json")
    (tmp_path / "book" / "data").mkdir(parents=True)
    assert bench.default_out("attention", cpu) == pathlib.Path("book/data/bench_attention_cpu.json")


def test_timm_vit_does_simplevits_matrix_products_except_the_images_gradient():
    # why model_sweep credits timm with SimpleViT's FLOPs in its MFU: the same matmuls, except that its
    # patch convolution reads the images directly and so skips their gradient
    config = QUICK
    timm_vit = bench.build_models(config, ["timm"])["timm"]
    for module in timm_vit.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False  # explicit matmuls, which FlopCounterMode counts on the CPU
    images = torch.randn(2, config.channels, config.image_size, config.image_size)
    patch_projection = 2 * config.num_tokens * config.channels * config.patch_size**2 * config.dim
    expected = 2 * (bench.vit_flops_per_image(config, training=True) - patch_projection)
    assert bench.counted_flops(timm_vit, images, training=True) == expected


def test_a_variant_that_fails_to_compile_is_recorded_and_the_others_timed():
    def broken_compiler(graph_module, example_inputs):
        raise RuntimeError("no compiler here")

    report = bench.model_sweep(
        QUICK,
        device=torch.device("cpu"),
        models=["vit_lib"],
        compile_backend=broken_compiler,
        rounds=1,
        steps=1,
        warmup_steps=0,
        show_progress=False,
        quick=True,
    )
    eager, compiled = report["results"]
    assert eager["images_per_s"] > 0 and "error" not in eager
    assert compiled["compiled"] and "no compiler here" in compiled["error"]
    assert "images_per_s" not in compiled
    assert report["baseline"] == "vit_lib eager"


def test_triton_method_that_cannot_run_is_recorded_not_raised():
    # a head width the kernel does not take (24): its ValueError becomes the row's error
    report = bench.attention_sweep(
        [16],
        [torch.float32],
        device=torch.device("cpu"),
        heads=2,
        dim_head=24,
        methods=["triton"],
        min_run_time=0.01,
        measure_memory=False,
        show_progress=False,
    )
    (row,) = report["results"]
    assert row["method"] == "triton" and row["error"] and "time_s" not in row


def test_flops_breakdown_sums_to_the_forward_count():
    from vit_lib.flops import vit_flops_breakdown

    parts = vit_flops_breakdown(QUICK)
    assert sum(parts.values()) == bench.vit_flops_per_image(QUICK)
    assert parts["scores"] == parts["attention_values"] == QUICK.depth * 2 * QUICK.num_tokens**2 * 32


def test_bench_uses_the_training_autocast_policy():
    from vit_lib import training

    assert training.amp_dtype is device_policy.amp_dtype
    assert device_policy.amp_dtype(torch.device("cpu")) is None


@pytest.mark.skipif(not pathlib.Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_worker_is_its_own_entry_point():
    import subprocess

    from vit_lib.bench.memory import worker_command

    # n = 512: the (1, 2, 512, 512) fp32 scores (2 MiB) are above glibc's mmap threshold, so they show
    # in the peak RSS; a small tensor can reuse resident heap pages and stay invisible (review R39)
    command = worker_command("math", 512, torch.float32, {"batch": 1, "heads": 2, "dim_head": 16})
    assert command[1:3] == ["-m", "vit_lib.bench.memory_worker"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["peak_bytes"] >= 2 * 512 * 512 * 4
    bad = subprocess.run([*command[:5], "int8", *command[6:]], capture_output=True, text=True)
    assert bad.returncode == 2 and "'int8'" in bad.stderr.splitlines()[-1]


def test_build_model_by_name_or_config():
    from vit_lib.configs import build_model

    assert sum(p.numel() for p in build_model("quick").parameters()) == bench.count_parameters(
        build_model(QUICK)
    )
    with pytest.raises(ValueError, match="unknown model config 'vit-h14'"):
        build_model("vit-h14")


def test_a_sweep_too_big_for_the_gpu_is_refused_before_any_work(monkeypatch):
    from vit_lib.bench import throughput

    # ViT-B/16: 86.6 M parameters, 6 variants + 3 models: 27 fp32 copies, about 8.7 GiB
    assert throughput.sweep_state_bytes(86_567_656, 6, 3) == 4 * 86_567_656 * 27
    model = torch.nn.Linear(1000, 1000)  # 1.0 M parameters: 27 copies are 108 MB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (150_000_000, 16_000_000_000))
    with pytest.raises(ValueError, match=r"more than half of the 0.1 GiB free on this GPU"):
        throughput.check_sweep_fits(
            bench.MODEL_CONFIGS["quick"], {"a": model, "b": model, "c": model}, 6, torch.device("cuda")
        )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (16_000_000_000, 16_000_000_000))
    throughput.check_sweep_fits(bench.MODEL_CONFIGS["quick"], {"a": model}, 6, torch.device("cuda"))
    throughput.check_sweep_fits(bench.MODEL_CONFIGS["quick"], {"a": model}, 6, torch.device("cpu"))
