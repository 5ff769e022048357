import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# Triton's interpreter (TRITON_INTERPRET=1) has to be on before triton is first imported. Where no GPU
# is present (CI), no Triton kernel can be compiled anyway: switch it on for the session, so that
# tests/test_triton_attention.py runs vit_lib's kernels on the CPU. On a GPU machine leave it as the
# user set it: the compiled kernels are tested there (`TRITON_INTERPRET=1 pytest ...` for the CPU ones).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# scripts/notebooks.py (the set-up cell, the Colab badge, the table of contents) as `book_notebooks`,
# for the tests that check the notebooks and the built book against it. It needs nbformat, which a bare
# GPU machine lacks: there `make gpu-evidence` runs only the CUDA tests, which do not use it.
if importlib.util.find_spec("nbformat") is not None:
    _spec = importlib.util.spec_from_file_location(
        "book_notebooks", Path(__file__).resolve().parent.parent / "scripts" / "notebooks.py"
    )
    book_notebooks = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(book_notebooks)
    sys.modules["book_notebooks"] = book_notebooks

# The browser check needs a built book and Chromium: `make browser` runs it (VIT_BOOK_BROWSER=1),
# the default run does not collect it.
collect_ignore = [] if os.environ.get("VIT_BOOK_BROWSER") else ["browser"]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``@pytest.mark.cuda`` are skipped, with a reason, where no GPU is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
