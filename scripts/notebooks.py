"""Keep the book's notebooks in shape: the canonical Colab set-up cell, clean metadata, execution.

    python scripts/notebooks.py sync      # rewrite every notebook's set-up cell and metadata
    python scripts/notebooks.py execute [NOTEBOOK ...]   # run from a fresh kernel, store outputs

The repository URL in the set-up cell and in the "Open in Colab" badge above each title comes from
`repository.url` (and `repository.branch`) in `_config.yml`, the one place it lives;
`tests/test_notebooks.py` fails if a notebook drifts from what `sync` writes. Every address derived
from it (Colab's, GitHub's, the published book's on GitHub Pages) is built here. The badge opens the
notebook's Colab edition, `colab/<name>.ipynb` (written by `scripts/colab_edition.py`).
"""

from __future__ import annotations

import pathlib
import re
import sys
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
COLAB = ROOT / "colab"  # the Colab edition of each chapter (scripts/colab_edition.py)
SETUP_TAG = "colab-setup"
BADGE_TAG = "colab-badge"
# A local image, so that the badge renders in the offline book and in the browser test; GitHub's
# notebook viewer resolves the relative path too.
BADGE_IMAGE = "images/colab-badge.svg"

SETUP_TEMPLATE = """\
# Set-up: on Colab (or anywhere vit_lib is missing) install it from the book's repository.
# torch is left as it is; where vit_lib is already installed this cell does nothing. The [book]
# extra adds what the chapters import besides vit_lib (upstream vit-pytorch, scikit-learn, ...).
import importlib.util
import os
import subprocess
import sys

REPOSITORY_URL = "{url}"
if importlib.util.find_spec("vit_lib") is None:
    source = os.environ.get("VIT_LIB_SOURCE", f"git+{{REPOSITORY_URL}}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"vit-lib[book] @ {{source}}"],
        check=True,
    )"""

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {"name": "python"}


def repository_url() -> str:
    config = (ROOT / "_config.yml").read_text()
    match = re.search(r"^repository:\s*\n\s+url:\s*(?:&\S+\s+)?(\S+)", config, re.MULTILINE)
    if not match:
        raise SystemExit("_config.yml has no repository.url")
    return match.group(1)


def repository_branch() -> str:
    config = (ROOT / "_config.yml").read_text()
    match = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+branch:\s*(\S+)", config, re.MULTILINE)
    return match.group(1) if match else "main"


def setup_source() -> str:
    return SETUP_TEMPLATE.format(url=repository_url())


def github_owner_repo() -> str:
    """``owner/name`` of the GitHub repository in ``_config.yml`` (Colab and Pages need GitHub)."""
    prefix = "https://github.com/"
    url = repository_url()
    if not url.startswith(prefix):
        raise SystemExit(f"Colab opens notebooks from GitHub; repository.url {url!r} is not a GitHub URL")
    return url.removeprefix(prefix).removesuffix(".git").strip("/")


def colab_url(notebook_name: str) -> str:
    """Colab's address for the Colab edition ``colab/<notebook_name>`` in the repository's branch."""
    return (
        f"https://colab.research.google.com/github/{github_owner_repo()}/blob/{repository_branch()}"
        f"/{COLAB.name}/{notebook_name}"
    )


def book_url() -> str:
    """The published book: GitHub Pages of the repository, ``https://OWNER.github.io/REPO/``."""
    owner, repo = github_owner_repo().split("/")
    return f"https://{owner.lower()}.github.io/{repo}/"


def book_page_url(page: str, anchor: str = "") -> str:
    """The published page of a source path without suffix (``book/01_patchify``), optionally ``#anchor``."""
    return f"{book_url()}{page}.html" + (f"#{anchor}" if anchor else "")


def github_file_url(path: str) -> str:
    """GitHub's page for a file of the repository's branch, e.g. ``book/01_patchify.ipynb``."""
    return f"https://github.com/{github_owner_repo()}/blob/{repository_branch()}/{path}"


def badge_source(notebook_name: str) -> str:
    return f"[![Open in Colab]({BADGE_IMAGE})]({colab_url(notebook_name)})"


def toc_entries() -> list[str]:
    """The pages listed in ``_toc.yml`` (root first), as paths without suffix: ``book/01_patchify``."""
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*-?\s*(?:file|root):\s*(\S+)", toc, re.MULTILINE)


def notebooks() -> list[pathlib.Path]:
    return sorted(p for p in BOOK.glob("*.ipynb"))


def sync(path: pathlib.Path) -> bool:
    """Make the first code cell the set-up cell and drop editor metadata; True if changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    if code_cells and SETUP_TAG in code_cells[0].metadata.get("tags", []):
        code_cells[0].source = setup_source()
    else:
        cell = nbformat.v4.new_code_cell(setup_source())
        index = nb.cells.index(code_cells[0]) if code_cells else len(nb.cells)
        nb.cells.insert(index, cell)
        code_cells.insert(0, cell)
    code_cells[0].metadata["tags"] = [SETUP_TAG, "remove-cell"]
    badges = [c for c in nb.cells if BADGE_TAG in c.metadata.get("tags", [])]
    badge = badges[0] if badges else nbformat.v4.new_markdown_cell()
    if badges:
        nb.cells.remove(badge)
    nb.cells.insert(0, badge)  # above the title, where readers look for it
    badge.source = badge_source(path.name)
    badge.metadata["tags"] = [BADGE_TAG]
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    for cell in nb.cells:
        for key in ("colab", "id", "vscode", "collapsed", "scrolled", "ExecuteTime", "execution"):
            cell.metadata.pop(key, None)
        cell.pop("id", None)
    nb.nbformat, nb.nbformat_minor = 4, 4
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + "\n")
    return after != before


def execute(path: pathlib.Path) -> float:
    """Run the notebook from a fresh kernel with the book folder as working directory."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    resources = {"metadata": {"path": str(BOOK)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    path.write_text(nbformat.writes(nb) + "\n")
    return seconds


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("sync", "execute"):
        raise SystemExit(__doc__)
    paths = [pathlib.Path(a).resolve() for a in argv[1:]] or notebooks()
    for path in paths:
        if argv[0] == "sync":
            print(f"{path.relative_to(ROOT)}: {'updated' if sync(path) else 'in sync'}")
        else:
            sync(path)
            print(f"{path.relative_to(ROOT)}: executed in {execute(path):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
