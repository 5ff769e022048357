"""Run every Colab-edition notebook in a fresh venv of the newest releases the registry serves.

    python scripts/newest_packages.py [--keep-venv] [NOTEBOOK ...]   # `make newest`: every colab/*.ipynb

Colab's preinstalled packages drift, and a first cell that breaks is what readers meet first. This
imitates a reader on a new Colab runtime: a fresh virtual environment under ``_build/newest`` gets
the newest torch and torchvision pip will give (capped on a machine whose pip configuration caps
them), plus nbclient and ipykernel to execute; no version of ``requirements.txt`` is used. Then each
notebook of ``colab/`` runs top to bottom from a fresh kernel, and its own set-up cell installs
``vit_lib[book]`` (and with it the newest einops, numpy, scikit-learn, matplotlib, timm, ... and the
vit-pytorch that pyproject.toml pins) from a copy of this checkout, through ``VIT_LIB_SOURCE``.
Only execution is checked (outputs are not compared: newer packages may print other digits).
The resolved versions and times are printed and written to ``_build/newest/report.json``, the
executed notebooks to ``_build/newest/run/``; the venv (several GB with a CUDA torch) is removed
afterwards unless ``--keep-venv``.

Environment: ``NEWEST_TORCH_INDEX_URL`` installs torch and torchvision from that index (CI uses
PyTorch's CPU wheels, not PyPI's multi-GB CUDA build); the runs use the network only through pip.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "_build" / "newest"
REPORTED = [
    "torch", "torchvision", "numpy", "einops", "vit-pytorch", "timm", "matplotlib", "scikit-learn",
    "tqdm", "packaging", "vit-lib", "nbclient", "ipykernel",
]  # fmt: skip

# Runs inside the fresh venv: one notebook from a fresh kernel, cwd = the folder given.
EXECUTE = """
import sys, time, nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
path, cwd, out = sys.argv[1:4]
nb = nbformat.read(path, as_version=4)
start = time.perf_counter()
try:
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
    failed = None
except CellExecutionError as error:
    failed = str(error).strip().splitlines()[-1][:300]
nbformat.write(nb, out)
print(f"{time.perf_counter() - start:.1f}", failed or "", sep="\\t")
"""
VERSIONS = """
import json, platform
from importlib import metadata
names = json.loads(__import__("sys").argv[1])
found = {}
for name in names:
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        found[name] = None
found["python"] = platform.python_version()
import torch
found["torch build"] = torch.__version__  # +cpu, +cu130, ...: which wheel pip chose
print(json.dumps(found))
"""


def clean_environment(**extra: str) -> dict[str, str]:
    """The caller's environment without what would leak this checkout or its venv into the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    env.update(extra)
    return env


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, env=clean_environment(), **kwargs)


def copy_checkout(target: Path) -> None:
    """What pip needs to build vit-lib, so that nothing (build/, *.egg-info) lands in the checkout."""
    target.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, target / name)
    shutil.copytree(ROOT / "vit_lib", target / "vit_lib", ignore=shutil.ignore_patterns("__pycache__"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every colab/*.ipynb")
    parser.add_argument("--keep-venv", action="store_true", help=f"keep {WORK / 'venv'} for a closer look")
    args = parser.parse_args(argv)
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "colab").glob("*.ipynb"))
    if not notebooks:
        raise SystemExit("no notebooks in colab/: run `make colab` first")
    started = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(WORK / "venv")
    python = str(WORK / "venv" / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    index = os.environ.get("NEWEST_TORCH_INDEX_URL")
    run([*pip, "torch", "torchvision", *(["--index-url", index] if index else [])])
    run([*pip, "nbclient", "ipykernel"])
    installed = time.perf_counter() - started
    copy_checkout(WORK / "checkout")
    # the notebooks run where a reader's Colab notebook would: a folder without vit_lib in it; the
    # book's data files beside them, which on Colab book_data() downloads from the repository
    shutil.copytree(ROOT / "book" / "data", WORK / "run" / "data")
    env = clean_environment(VIT_LIB_SOURCE=(WORK / "checkout").as_uri(), MPLBACKEND="Agg")
    results = {}
    for path in notebooks:
        out = WORK / "run" / path.name
        done = subprocess.run(
            [python, "-c", EXECUTE, str(path), str(WORK / "run"), str(out)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            results[path.name] = {"seconds": None, "error": done.stderr.strip()[-300:]}
        else:
            seconds, _, error = done.stdout.strip().splitlines()[-1].partition("\t")
            results[path.name] = {"seconds": float(seconds), "error": error or None}
        result = results[path.name]
        status = f"FAILED: {result['error']}" if result["error"] else "ok"
        print(f"{path.name:32} {result['seconds'] or 0:7.1f} s  {status}", flush=True)
    versions = json.loads(
        subprocess.run(
            [python, "-c", VERSIONS, json.dumps(REPORTED)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    total = time.perf_counter() - started
    report = {
        "versions": versions,
        "notebooks": results,
        "install_seconds": installed,
        "total_seconds": total,
    }
    (WORK / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print("resolved:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(
        f"newest-packages run: {total:.0f} s in all ({installed:.0f} s creating the venv); {WORK}/report.json"
    )
    if not args.keep_venv:
        shutil.rmtree(WORK / "venv")
    failed = [name for name, r in results.items() if r["error"]]
    if failed:
        print(f"failed on the newest packages: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
