"""Small helpers for the book's notebooks: reproducible set-up and gluing numbers into the prose.

Not needed to use the model; kept here so that every chapter starts the same way (every chapter from
book/01_patchify.ipynb on calls ``setup`` and ``glue``).
"""

from __future__ import annotations

import pathlib
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vit_lib.device import default_device


def setup(seed: int = 0, threads: int | None = 1) -> torch.device:
    """Seed Python, NumPy and torch, pin the CPU thread count, and return the device to use.

    One thread makes CPU results independent of the machine's core count (the order of floating
    point reductions can depend on it), so stored outputs reproduce anywhere. On a GPU (e.g. Colab)
    the returned device is CUDA.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds code that uses the legacy global generator
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    return default_device()


def glue(name: str, value: Any, display: bool = False, digits: int = 4) -> None:
    """``myst_nb.glue`` when the book is built; elsewhere (e.g. Colab) just show the value.

    A float is stored rounded to ``digits`` significant figures. The prose shows at most that many,
    and nbval compares the stored value: the digits beyond the fourth of a float32 result depend on
    the CPU (its vector width, its BLAS), so a full ``repr`` would make the book's tests fail on a
    machine other than the one that executed it. Pass a larger ``digits`` for a value the prose shows
    with more figures (an exact constant such as fp16's largest value, 65504).
    """
    value = round_significant(value, digits)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        from IPython.display import display as show

        if display:
            show(value)
        return
    myst_glue(name, value, display=display)


def round_significant(value: Any, digits: int = 4) -> Any:
    """``value`` rounded to ``digits`` significant figures if it is a float (Python or NumPy), else as is."""
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    if isinstance(value, (float, np.floating)) and not isinstance(value, bool):
        return float(f"{float(value):.{digits}g}")
    return value


def book_data_path(name: str, folders: Sequence[str] = ("data",)) -> pathlib.Path | None:
    """The first ``<folder>/<name>`` that exists, in the order given, else ``None``."""
    return next((path for path in (pathlib.Path(f) / name for f in folders) if path.exists()), None)


def book_data(
    name: str, repository_url: str, branch: str = "main", folders: Sequence[str] = ("data",)
) -> Any:
    """The JSON file ``book/data/<name>``: read from disk next to the notebook, or (e.g. on Colab,
    where the notebook travels alone) downloaded from the repository.

    ``folders`` are searched in order before downloading: chapter 8 passes ``(".", "data")`` for the
    GPU results, so that on a GPU the reader's own ``python -m vit_lib.bench`` output (written to the
    current folder outside the repository) is shown in place of the stored one.
    """
    import json
    import urllib.request

    path = book_data_path(name, folders)
    if path is not None:
        return json.loads(path.read_text())
    url = f"{repository_url}/raw/{branch}/book/data/{name}"
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())
