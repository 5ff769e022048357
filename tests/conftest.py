import os

import pytest
import torch

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
