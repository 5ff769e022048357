"""Sphinx extension: the header's Colab launch button opens the chapter's Colab edition.

sphinx-book-theme builds the button from ``repository.url`` and the page's source path, i.e.
``.../blob/main/book/NN.ipynb``: the MyST notebook, whose roles and directives Colab shows as source
text. The Colab edition ``colab/NN.ipynb`` (scripts/colab_edition.py) is the same chapter rendered
for Colab; the button gets the address that ``scripts/notebooks.py`` gives the badge above the title,
so both come from the one function. Runs after the theme has added its buttons (priority 501).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


@functools.cache
def _book_notebooks(srcdir: str):
    spec = importlib.util.spec_from_file_location(
        "book_notebooks", Path(srcdir) / "scripts" / "notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def point_colab_at_the_edition(app, pagename, templatename, context, doctree) -> None:
    source = Path(app.srcdir) / f"{pagename}.ipynb"
    if not source.exists():
        return
    colab_url = _book_notebooks(app.srcdir).colab_url(source.name)
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("text") == "Colab":
                button["url"] = colab_url


def setup(app):
    app.connect("html-page-context", point_colab_at_the_edition, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
