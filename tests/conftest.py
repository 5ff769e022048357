import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

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
