"""Write the Colab edition of the chapters: ``colab/NN_*.ipynb`` from ``book/NN_*.ipynb``.

    python scripts/colab_edition.py           # rewrite colab/, print what was rendered (`make colab`)
    python scripts/colab_edition.py --check   # exit 1, naming the files, where colab/ is out of date

Colab's Markdown knows no MyST, so the edition renders it (scripts/myst_to_markdown.py): glued values
become the text the HTML book shows, citations "Author et al. (Year)" linked to the work, with the
chapter's works cited listed at the end, each ``literalinclude`` the source it names, admonitions
quotes, dropdowns and hidden solutions ``<details>``, ``{ref}``/``{doc}`` links to the published book.
Code cells are the book's, in the book's order, with their stored outputs (the set-up cell stays the
first code cell); cells the book hides open folded (Colab's form view). The chapters that want a GPU
ask Colab for one (`RUNTIMES`). `tests/test_colab_edition.py` fails when colab/ is stale.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import posixpath
import re
import sys
import types

import nbformat

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bibliography
import myst_to_markdown
import notebooks as book_notebooks

ROOT, BOOK, COLAB = book_notebooks.ROOT, book_notebooks.BOOK, book_notebooks.COLAB
BIBLIOGRAPHY = BOOK / "references.bib"

# The runtime each chapter asks Colab for: None is Colab's default CPU runtime, else a GPU type.
# Every chapter must be listed, so that a new one is a decision, not a default.
RUNTIMES: dict[str, str | None] = {
    "01_patchify.ipynb": None,
    "02_position_embeddings.ipynb": None,
    "03_attention.ipynb": None,
    "04_transformer.ipynb": None,
    "05_simplevit.ipynb": None,
    "06_training_digits.ipynb": None,  # trains in about a minute on a CPU
    "07_cifar10_gpu.ipynb": "T4",  # CIFAR-10 training: minutes on a T4, hours on Colab's CPU
    "07b_distributed_training.ipynb": None,  # two CPU processes (gloo), as tested
    "08_performance.ipynb": "T4",  # benchmarks the kernels of the GPU it runs on
    "09_flash_attention_triton.ipynb": None,  # Triton's interpreter (compiled kernels: untested on a GPU)
}
HIDDEN_TAGS = {"hide-cell", "hide-input", "remove-cell", "remove-input"}
EDITION_TAG = "colab-edition"
# counted constructs, in the order `make colab` prints them
COLUMNS = ("glue", "cite", "literalinclude", "admonition", "dropdown", "ref", "doc", "target", "hidden cell")


class Book:
    """What every chapter's rendering needs: the bibliography, page titles, and the labels of targets."""

    def __init__(self) -> None:
        self.bibliography = bibliography.Bibliography(
            BIBLIOGRAPHY, book_notebooks.book_page_url("book/bibliography")
        )
        self.titles: dict[str, str] = {}
        self.labels: dict[str, tuple[str, str]] = {}  # label -> (page, the heading below it)
        for page in book_notebooks.toc_entries():
            source = ROOT / f"{page}.md"
            if source.exists():
                text = source.read_text()
            else:
                cells = nbformat.read(ROOT / f"{page}.ipynb", as_version=4).cells
                text = "\n\n".join(c.source for c in cells if c.cell_type == "markdown")
            title = re.search(r"^# (.+)$", text, re.MULTILINE)
            self.titles[page] = title.group(1).strip() if title else page
            for match in re.finditer(r"^\(([^()\s]+)\)=\s*\n(?:\s*\n)*(?:#+ (.+))?", text, re.MULTILINE):
                self.labels[match.group(1)] = (page, (match.group(2) or match.group(1)).strip())
            # named figures ({figure} or {glue:figure} with :name:), numbered per page as the book
            # numbers them: {numref} renders "Fig. N"
            figures = re.finditer(
                r"^```\{(?:figure|glue:figure)\}.*\n(?::\w+:.*\n)*?:name:\s*(\S+)", text, re.MULTILINE
            )
            for number, match in enumerate(figures, start=1):
                self.labels[match.group(1)] = (page, f"Fig. {number}")


link = myst_to_markdown.link


def glued_values(nb) -> dict[str, dict]:
    """``{key: {mime type: data}}`` of the glue outputs stored in a notebook (myst_nb.glue)."""
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            scrapbook = output.get("metadata", {}).get("scrapbook")
            if scrapbook:
                prefix = scrapbook["mime_prefix"]
                values[scrapbook["name"]] = {
                    "data": {k.removeprefix(prefix): v for k, v in output["data"].items()},
                    "metadata": output.get("metadata", {}),
                }
    return values


class Chapter(myst_to_markdown.Renderer):
    """Renders one chapter's constructs and counts them."""

    def __init__(self, book: Book, path: pathlib.Path, nb) -> None:
        self.book, self.path = book, path
        self.page = str(path.relative_to(ROOT).with_suffix(""))
        self.glue = glued_values(nb)
        self.counts: collections.Counter[str] = collections.Counter()
        self.cited: list[str] = []

    def count(self, construct: str) -> None:
        self.counts[construct] += 1

    def glued(self, key: str) -> dict:
        if "::" in key:  # glued in another notebook: path::key
            other, key = key.split("::", 1)
            values = glued_values(nbformat.read(self.path.parent / f"{other}.ipynb", as_version=4))
        else:
            values = self.glue
        if key not in values:
            raise ValueError(f"{self.path.name}: nothing glued under {key!r} in the stored outputs")
        return values[key]

    def role(self, name: str, content: str) -> str:
        if name.startswith("glue"):
            self.count("glue")
            return self.glue_role(name, content)
        if name in ("cite", "cite:p", "cite:t"):
            self.count("cite")
            return self.cite([k.strip() for k in content.split(",")], textual=name == "cite:t")
        if name in ("ref", "doc", "numref", "eq"):
            self.count(name)
            return self.cross_reference(name, content)
        if name == "math":
            self.count("math")
            return f"${content}$"
        if name in ("sub", "sup"):
            return f"<{name}>{content}</{name}>"
        raise ValueError(f"{self.path.name}: no Colab rendering for the MyST role {{{name}}}`{content}`")

    def glue_role(self, name: str, content: str) -> str:
        from myst_nb.core.variables import format_plain_text

        if name == "glue:text":  # key:format, as myst_nb's PasteTextRole splits it
            key, colon, spec = content.rpartition(":")
            key, spec = (key, spec) if colon else (content, "s")
            return format_plain_text(self.glued(key)["data"]["text/plain"], spec)
        if name in ("glue", "glue:", "glue:any"):
            glued = self.glued(content)
            text = glued["data"]["text/plain"]
            quoted = re.fullmatch(r"(['\"]).*\1", text, re.DOTALL)
            return text[1:-1] if quoted and glued["metadata"].get("strip_text_quotes") else text
        if name == "glue:md":
            return self.glued(content)["data"]["text/markdown"]
        raise ValueError(f"{self.path.name}: no Colab rendering for the role {{{name}}}")

    def cite(self, keys: list[str], textual: bool) -> str:
        for key in keys:
            if key not in self.book.bibliography.entries:
                raise ValueError(f"{self.path.name}: {key!r} is not in {BIBLIOGRAPHY.name}")
            if key not in self.cited:
                self.cited.append(key)
        return self.book.bibliography.cite(keys, textual)

    def cross_reference(self, name: str, content: str) -> str:
        explicit = re.fullmatch(r"(.+?)\s*<([^<>]+)>", content, re.DOTALL)
        text, target = (explicit.group(1), explicit.group(2)) if explicit else (None, content.strip())
        if name == "doc":
            page = posixpath.normpath(
                target.lstrip("/") if target.startswith("/") else posixpath.join("book", target)
            )
            page = re.sub(r"\.(md|ipynb)$", "", page)
            if page not in self.book.titles:
                raise ValueError(f"{self.path.name}: {{doc}}`{content}` names no page of the book")
            return link(text or self.book.titles[page], book_notebooks.book_page_url(page))
        if target not in self.book.labels:
            raise ValueError(f"{self.path.name}: {{{name}}}`{content}`: no target ({target})= in the book")
        page, title = self.book.labels[target]
        return link(text or title, book_notebooks.book_page_url(page, target))

    def substitution(self, name: str) -> str:
        substitutions = {"repository_url": book_notebooks.repository_url()}  # _config.yml's
        if name not in substitutions:
            raise ValueError(f"{self.path.name}: no value for the substitution {{{{ {name} }}}}")
        self.count("substitution")
        return substitutions[name]

    def relative_link(self, target: str) -> str:
        path, _, anchor = target.partition("#")
        page = posixpath.normpath(posixpath.join("book", path))
        self.count("link")
        if re.search(r"\.(md|ipynb)$", page):
            page = page.rsplit(".", 1)[0]
            if page not in self.book.titles:
                raise ValueError(f"{self.path.name}: the link ({target}) names no page of the book")
            return book_notebooks.book_page_url(page, anchor)
        if not (ROOT / page).exists():
            raise ValueError(f"{self.path.name}: the link ({target}) names no file of the repository")
        return book_notebooks.github_file_url(page) + "?raw=true"  # images and data, from GitHub

    def literalinclude(self, argument: str, options: dict[str, str]) -> str:
        from sphinx.directives.code import LiteralIncludeReader

        path = ROOT / argument.lstrip("/") if argument.startswith("/") else self.path.parent / argument
        reader_options: dict[str, object] = dict(options)
        for key in ("dedent", "lineno-start", "tab-width"):
            if key in reader_options:
                reader_options[key] = int(reader_options[key])
        config = types.SimpleNamespace(source_encoding="utf-8-sig")
        code, _ = LiteralIncludeReader(str(path.resolve()), reader_options, config).read()
        language = options.get("language") or {".py": "python", ".sh": "bash"}.get(path.suffix, "")
        caption = f"**{options['caption']}**\n\n" if options.get("caption") else ""
        return caption + myst_to_markdown.code_fence(code, language)

    def glue_block(self, name: str, key: str, options: dict[str, str]) -> str:
        self.count("glue")
        data = self.glued(key)["data"]
        if name == "glue:math":
            return f"$$\n{data['text/latex'].strip('$')}\n$$"
        if name == "glue:figure" or "image/png" in data:
            return f'<img src="data:image/png;base64,{data["image/png"].strip()}" alt="{key}">'
        return myst_to_markdown.code_fence(data["text/plain"], "")

    def references_cell(self) -> str:
        page = link("Bibliography", book_notebooks.book_page_url("book/bibliography"))
        return (
            "### Works cited in this chapter\n\n"
            f"From the book's {page} (`book/references.bib`).\n\n"
            + "\n".join(f"- {entry}" for entry in self.book.bibliography.full_entries(self.cited))
        )


def fold(source: str) -> str:
    """A code cell the book hides, as Colab's form view shows it: folded under a ``# @title``."""
    first, newline, rest = source.partition("\n")
    if re.match(r"#\s*(?!NBVAL|noqa|@title)\S", first):  # a comment that says what the cell is
        return f"# @title {first.lstrip('#').strip()}{newline}{rest}"
    return f"# @title Hidden in the book: show the code\n{source}"


def edition_note(path: pathlib.Path, title: str) -> str:
    page = str(path.relative_to(ROOT).with_suffix(""))
    source = str(path.relative_to(ROOT))
    gpu = RUNTIMES[path.name]
    runtime = (
        f" It asks Colab for a GPU runtime ({gpu}): *Runtime → Change runtime type* to change it."
        if gpu
        else ""
    )
    return (
        f"*Colab edition of {link(title, book_notebooks.book_page_url(page))}, generated from "
        f"{link(f'`{source}`', book_notebooks.github_file_url(source))} by `scripts/colab_edition.py` "
        f"(edit that notebook, not this one).{runtime} Run the set-up cell first.*"
    )


def build(path: pathlib.Path, book: Book) -> tuple[str, collections.Counter]:
    """The Colab edition of one chapter, as the text written to ``colab/<name>``, and its counts."""
    if path.name not in RUNTIMES:
        raise SystemExit(f"{path.name} is not in RUNTIMES of {__file__}: say which Colab runtime it wants")
    nb = nbformat.read(path, as_version=4)
    chapter = Chapter(book, path, nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    setup = code_cells[0] if code_cells else None
    for index, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        try:
            if book_notebooks.BADGE_TAG in tags:
                cell.source = edition_note(path, book.titles[chapter.page])
                cell.metadata["tags"] = [EDITION_TAG]
            elif cell.cell_type == "markdown":
                cell.source = myst_to_markdown.convert(cell.source, chapter)
            elif cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if "scrapbook" not in o.get("metadata", {})]
                if cell is not setup and tags & HIDDEN_TAGS:
                    chapter.count("hidden cell")
                    cell.source = fold(cell.source)
                    cell.metadata["cellView"] = "form"
        except ValueError as error:
            raise SystemExit(f"{path.relative_to(ROOT)}, cell {index}: {error}") from error
    if chapter.cited:
        nb.cells.append(nbformat.v4.new_markdown_cell(chapter.references_cell()))
    for cell in nb.cells:
        cell.pop("id", None)
    colab: dict[str, object] = {"provenance": [], "toc_visible": True}
    nb.metadata = nbformat.from_dict(
        {
            "kernelspec": book_notebooks.KERNELSPEC,
            "language_info": book_notebooks.LANGUAGE_INFO,
            "colab": colab,
        }
    )
    if RUNTIMES[path.name]:
        nb.metadata["accelerator"] = "GPU"
        nb.metadata["colab"]["gpuType"] = RUNTIMES[path.name]
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nbformat.writes(nb) + "\n", chapter.counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files of colab/ that are stale")
    args = parser.parse_args(argv)
    book = Book()
    sources = book_notebooks.notebooks()
    stale = []
    print(f"{'notebook':32}" + "".join(f"{c:>15}" for c in COLUMNS))
    for path in sources:
        text, counts = build(path, book)
        print(f"{path.name:32}" + "".join(f"{counts[c]:>15}" for c in COLUMNS))
        target = COLAB / path.name
        if not target.exists() or target.read_text() != text:
            stale.append(target)
            if not args.check:
                COLAB.mkdir(exist_ok=True)
                target.write_text(text)
    orphans = sorted(set(COLAB.glob("*.ipynb")) - {COLAB / p.name for p in sources})
    for orphan in orphans:
        if not args.check:
            orphan.unlink()
    changed = [str(p.relative_to(ROOT)) for p in stale + orphans]
    if args.check and changed:
        print(f"stale Colab edition: {', '.join(changed)}; run `make colab`", file=sys.stderr)
        return 1
    print(f"{'updated' if changed else 'up to date'}: {', '.join(changed) or 'colab/'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
