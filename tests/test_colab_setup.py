"""The Colab path: a notebook's set-up cell, run where vit_lib is missing, installs it from the
repository (here: a copy of this checkout, through the VIT_LIB_SOURCE override) and leaves torch alone.

Colab has torch and the book's other imports preinstalled. The fresh virtual environment imitates it
by seeing the project's site-packages through a ``.pth`` line: packages there are importable and pip
sees their metadata, but ``.pth`` files *inside* that directory are not processed, so the project's
editable vit_lib (installed through one) is not importable until the cell installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import book_notebooks
import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib.util, json
info = {"vit_lib": None}
if importlib.util.find_spec("vit_lib") is not None:
    import vit_lib
    info["vit_lib"] = vit_lib.__file__
import torch
info.update(torch_version=torch.__version__, torch_file=torch.__file__)
print(json.dumps(info))
"""


def run_python(python: Path, code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    environment.update(env)
    return subprocess.run(
        [str(python), "-c", code], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


def probe(python: Path, cwd: Path) -> dict:
    done = run_python(python, PROBE, cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def colab_like(tmp_path_factory):
    """A fresh venv that sees the project's packages (torch, ...) but not vit_lib; and a checkout copy."""
    base = tmp_path_factory.mktemp("colab")
    venv.create(base / "venv", with_pip=True)
    python = base / "venv" / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = run_python(python, purelib, base).stdout.strip()
    (Path(site) / "preinstalled.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip builds vit-lib from a copy, so that nothing (build/, *.egg-info) is written into the checkout
    checkout = base / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "vit_lib", checkout / "vit_lib", ignore=shutil.ignore_patterns("__pycache__"))
    return python, Path(site), checkout, base


def test_setup_cell_installs_vit_lib_and_keeps_torch(colab_like):
    python, site, checkout, workdir = colab_like
    before = probe(python, workdir)
    assert before["vit_lib"] is None, "vit_lib must be missing before the cell runs"

    done = run_python(python, book_notebooks.setup_source(), workdir, VIT_LIB_SOURCE=checkout.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    pip_output = done.stdout + done.stderr
    print(f"set-up cell output ({len(pip_output)} characters): {pip_output[-500:]!r}")
    # pip -q names what it collects, downloads, uninstalls or installs only when it does; torch must
    # be none of them (vit-pytorch and torchvision are other packages)
    acted_on_torch = re.search(
        r"(collecting|downloading|uninstall(?:ing|ed)|installing|building)\b[^\n]*(?<![\w-])torch(?![\w])",
        pip_output,
        re.IGNORECASE,
    )
    assert acted_on_torch is None, pip_output[-2000:]

    after = probe(python, workdir)
    assert after["vit_lib"] is not None and Path(after["vit_lib"]).is_relative_to(site), after
    assert (after["torch_version"], after["torch_file"]) == (before["torch_version"], before["torch_file"])
    assert not list(site.glob("torch*")), "torch was installed into the fresh environment"
    version = re.search(r'^__version__ = "(.+)"', (ROOT / "vit_lib" / "__init__.py").read_text(), re.M)[1]
    assert sorted(p.name for p in site.glob("vit_lib*")) == ["vit_lib", f"vit_lib-{version}.dist-info"]
    # every module of every subpackage (vit_lib.bench, ...) is installed, not only the top level
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "vit_lib").rglob("*.py"))
    assert sorted(str(p.relative_to(site)) for p in (site / "vit_lib").rglob("*.py")) == modules


def test_setup_cell_does_nothing_where_vit_lib_is_installed(tmp_path):
    # the project environment has vit_lib: the cell must not call pip (any subprocess call fails here)
    guard = (
        "import subprocess\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError(f'the cell ran {args}')\n"
        "subprocess.run = refuse\n"
    )
    done = run_python(Path(sys.executable), guard + book_notebooks.setup_source(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
