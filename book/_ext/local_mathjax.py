"""Sphinx extension: serve MathJax 3 from the book's own ``_static`` instead of a CDN.

The MathJax files come from the PyPI package ``django-static-mathjax`` (MathJax 3.2.2 as package
data; the Django part is not used). Only the combined ``tex-chtml.js`` component and the pieces it
loads on demand (TeX extensions, CHTML fonts, menu, accessibility, speech) are copied, about 10 MB.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mathjax  # the django-static-mathjax package

ES5 = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
COMPONENT = "tex-chtml.js"
TARGET = "mathjax"  # under _static


def _top_level_bundles_except_ours(directory: str, names: list[str]) -> list[str]:
    if Path(directory).resolve() != ES5:
        return []
    return [name for name in names if name.endswith(".js") and name != COMPONENT]


def copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    destination = Path(app.outdir) / "_static" / TARGET
    shutil.copytree(
        ES5, destination, ignore=_top_level_bundles_except_ours, dirs_exist_ok=True
    )


def setup(app):
    if not (ES5 / COMPONENT).is_file():
        raise RuntimeError(
            f"MathJax not found at {ES5 / COMPONENT}; pip install django-static-mathjax"
        )
    # a relative mathjax_path is taken relative to _static
    app.config.mathjax_path = f"{TARGET}/{COMPONENT}"
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
