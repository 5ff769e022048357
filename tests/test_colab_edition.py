"""The Colab edition (colab/, written by scripts/colab_edition.py): current, free of MyST, runnable.

Colab's Markdown knows no MyST: a role or directive left in colab/ shows as source text or as
nothing. The edition is committed, so that Colab can open it from GitHub; these tests fail when it is
stale (`make colab` rewrites it) or when any MyST-only syntax is left in it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import book_notebooks
import pytest

ROOT = Path(__file__).resolve().parent.parent
COLAB = ROOT / "colab"
sys.path.insert(0, str(ROOT / "scripts"))
_spec = importlib.util.spec_from_file_location("colab_edition", ROOT / "scripts" / "colab_edition.py")
colab_edition = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab_edition)
import myst_to_markdown  # noqa: E402 - from scripts/, put on the path above

NOTEBOOKS = book_notebooks.notebooks()
# What MyST would render and Colab shows as source: roles, directive fences (``` or :::), targets,
# MyST comments, and `$$ ... $$ (label)` equation labels.
MYST_LEFT = {
    "role": re.compile(r"\{[a-z][\w:-]*\}`"),
    "directive": re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*\{", re.MULTILINE),
    "colon fence": re.compile(r"^\s*:{3,}", re.MULTILINE),
    "target": re.compile(r"^\s*\([^()\s]+\)=\s*$", re.MULTILINE),
    "comment": re.compile(r"^%", re.MULTILINE),
    "equation label": re.compile(r"\$\$\s*\([^()\s]+\)\s*$", re.MULTILINE),
    "substitution": re.compile(r"\{\{\s*[\w.]+\s*\}\}"),
    # not MyST, but as dead on Colab: a link or image relative to book/, where the notebook is not
    "relative link": re.compile(r"\]\((?![a-z][\w+.-]*:|#|<)[^()\s]+\)", re.IGNORECASE),
}


@pytest.fixture(scope="module")
def book():
    return colab_edition.Book()


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def without_code_blocks(markdown: str) -> str:
    """Markdown with fenced code blocks removed: code may legitimately show MyST (and does not render it)."""
    return re.sub(r"^(`{3,}|~{3,})[^\n{]*\n.*?^\1\s*$", "", markdown, flags=re.MULTILINE | re.DOTALL)


def test_every_chapter_has_a_colab_edition_and_nothing_else_is_there():
    assert sorted(p.name for p in COLAB.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    assert set(colab_edition.RUNTIMES) == {p.name for p in NOTEBOOKS}, "say in RUNTIMES which runtime"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
class TestEdition:
    def test_committed_edition_is_current(self, path, book):
        text, _ = colab_edition.build(path, book)
        assert (COLAB / path.name).read_text() == text, f"colab/{path.name} is stale: run `make colab`"

    def test_no_myst_syntax_left(self, path):
        for index, cell in enumerate(cells(COLAB / path.name)):
            if cell["cell_type"] != "markdown":
                continue
            text = "".join(cell["source"])
            for what, pattern in MYST_LEFT.items():
                source = text if what == "directive" else without_code_blocks(text)
                found = pattern.search(source)
                assert not found, (
                    f"cell {index}: MyST {what} left: {source[found.start() : found.start() + 60]!r}"
                )

    def test_setup_cell_runs_first_and_hidden_cells_fold(self, path):
        book_cells, colab_cells = cells(path), cells(COLAB / path.name)
        code = [c for c in colab_cells if c["cell_type"] == "code"]
        assert "".join(code[0]["source"]) == book_notebooks.setup_source()
        assert [c["cell_type"] for c in colab_cells[: len(book_cells)]] == [
            c["cell_type"] for c in book_cells
        ]
        for before, after in zip(book_cells, colab_cells):
            if after["cell_type"] != "code":
                continue
            hidden = set(before["metadata"].get("tags", [])) & colab_edition.HIDDEN_TAGS
            if hidden and after is not code[0]:
                assert after["metadata"]["cellView"] == "form"
                assert "".join(after["source"]).startswith("# @title ")
            else:  # the book's code, unchanged, so that the edition runs as the book does
                assert after["source"] == before["source"]

    def test_gpu_runtime_as_the_table_says(self, path):
        metadata = json.loads((COLAB / path.name).read_text())["metadata"]
        gpu = colab_edition.RUNTIMES[path.name]
        assert metadata.get("accelerator") == ("GPU" if gpu else None)
        assert metadata["colab"].get("gpuType") == gpu
        assert metadata["kernelspec"]["name"] == "python3"

    def test_every_citation_is_linked_and_listed_at_the_end(self, path, book):
        book_text = "".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "markdown")
        keys = {
            k.strip() for m in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", book_text) for k in m.split(",")
        }
        last = "".join(cells(COLAB / path.name)[-1]["source"])
        assert last.startswith("### Works cited in this chapter")
        for key in keys:
            assert book.bibliography.url(key) in last, key


def test_chapter_7_asks_for_a_gpu():
    assert colab_edition.RUNTIMES["07_cifar10_gpu.ipynb"] == "T4"


class Recorder(myst_to_markdown.Renderer):
    """Records what the converter hands over, to test the parser apart from the book."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def role(self, name, content):
        return f"<{name}|{content}>"

    def literalinclude(self, argument, options):
        return f"[include {argument} {sorted(options.items())}]"

    def glue_block(self, name, key, options):
        return f"[{name} {key}]"

    def substitution(self, name):
        return f"<sub {name}>"

    def relative_link(self, target):
        return f"https://example.org/{target}"

    def count(self, construct):
        self.counts[construct] = self.counts.get(construct, 0) + 1


def test_converter_renders_roles_directives_and_leaves_code_alone():
    source = "\n".join(
        [
            "(intro)=",
            "# Title with {glue:text}`x:.2f` and `{cite}`not-a-role``",
            "",
            "````{admonition} Solution 1",
            ":class: dropdown",
            "See {cite:t}`key`.",
            "```python",
            "{doc}`inside code`",
            "```",
            "````",
            "",
            ":::{note}",
            "A note.",
            ":::",
            "```{literalinclude} ../vit_lib/model.py",
            ":pyobject: SimpleViT",
            "```",
            "% a comment",
            "$$ x = 1 $$ (eq-one)",
            "From {{ repository_url }}: [a page](other.md), [`code`](https://example.com/x).",
        ]
    )
    recorder = Recorder()
    out = myst_to_markdown.convert(source, recorder)
    assert "(intro)=" not in out and "a comment" not in out and "(eq-one)" not in out
    assert "# Title with <glue:text|x:.2f> and `{cite}`not-a-role``" in out
    assert "<details>\n<summary><b>Solution 1</b></summary>\n\nSee <cite:t|key>." in out
    assert "```python\n{doc}`inside code`\n```" in out
    assert "> **Note**\n>\n> A note." in out
    assert "[include ../vit_lib/model.py [('pyobject', 'SimpleViT')]]" in out
    assert (
        "From <sub repository_url>: [a page](https://example.org/other.md), [`code`](https://example.com/x)."
        in out
    )
    assert recorder.counts == {"target": 2, "dropdown": 1, "admonition": 1, "literalinclude": 1, "comment": 1}


def test_converter_refuses_what_it_cannot_render():
    with pytest.raises(ValueError, match=r"\{figure\}"):
        myst_to_markdown.convert("```{figure} a.png\n```", Recorder())
    with pytest.raises(ValueError, match="unclosed"):
        myst_to_markdown.convert("```{note}\nnever closed", Recorder())


def test_roles_render_as_the_book_shows_them(book):
    chapter = colab_edition.Chapter(book, ROOT / "book" / "01_patchify.ipynb", _notebook("01_patchify"))
    glued = chapter.glue["num_patches"]["data"]["text/plain"]
    assert chapter.role("glue:", "num_patches") == glued == "196"
    assert chapter.role("glue:text", "num_patches:.1f") == "196.0"
    assert (
        chapter.role("cite:t", "dao2024flashattention2") == "[Dao (2024)](https://arxiv.org/abs/2307.08691)"
    )
    assert chapter.role("cite", "loshchilov2019adamw,dao2024flashattention2") == (
        "([Loshchilov and Hutter, 2019](https://arxiv.org/abs/1711.05101); "
        "[Dao, 2024](https://arxiv.org/abs/2307.08691))"
    )
    assert chapter.role("doc", "starting-point") == (
        f"[Where we start]({book_notebooks.book_url()}book/starting-point.html)"
    )
    assert chapter.role("ref", "colab-steps").endswith("book/07_cifar10_gpu.html#colab-steps)")
    with pytest.raises(ValueError, match="nothing glued"):
        chapter.role("glue:text", "no_such_key:.2f")
    with pytest.raises(ValueError, match=r"not in references\.bib"):
        chapter.role("cite", "no_such_key")
    assert "def pair(" in chapter.literalinclude("../vit_lib/patches.py", {"pyobject": "pair"})
    assert chapter.relative_link("02_position_embeddings.ipynb#summary") == (
        f"{book_notebooks.book_url()}book/02_position_embeddings.html#summary"
    )
    assert chapter.relative_link("images/colab-badge.svg").endswith("/book/images/colab-badge.svg?raw=true")
    assert chapter.substitution("repository_url") == book_notebooks.repository_url()


def test_book_url_is_github_pages_of_the_repository():
    owner, repo = book_notebooks.github_owner_repo().split("/")
    assert book_notebooks.book_url() == f"https://{owner.lower()}.github.io/{repo}/"


def _notebook(name: str):
    import nbformat

    return nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
