"""Notebook hygiene: what the book shows and nbval compares must come from a clean, in-order run."""

import json
import pathlib
import re

import book_notebooks
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

NOTEBOOKS = book_notebooks.notebooks()
TOC_FILES = book_notebooks.toc_entries()


def load(path):
    return json.loads(path.read_text())


def code_cells(path):
    return [c for c in load(path)["cells"] if c["cell_type"] == "code"]


def test_colab_urls_are_built_from_the_repository_setting():
    # the badge (and the header's launch button) open the Colab edition, colab/, not the MyST source
    owner_repo = book_notebooks.repository_url().removeprefix("https://github.com/")
    url = book_notebooks.colab_url("01_patchify.ipynb")
    assert url == (
        f"https://colab.research.google.com/github/{owner_repo}/blob/"
        f"{book_notebooks.repository_branch()}/colab/01_patchify.ipynb"
    )
    assert (ROOT / "colab" / "01_patchify.ipynb").is_file()
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", owner_repo), owner_repo
    assert (ROOT / "book" / book_notebooks.BADGE_IMAGE).is_file()


def test_every_toc_entry_exists():
    for entry in TOC_FILES:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), entry


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
class TestNotebook:
    def test_listed_in_toc(self, path):
        assert str(path.relative_to(ROOT).with_suffix("")) in TOC_FILES

    def test_first_code_cell_is_the_canonical_setup_cell(self, path):
        first = code_cells(path)[0]
        assert "".join(first["source"]) == book_notebooks.setup_source()
        assert "remove-cell" in first["metadata"]["tags"]
        assert book_notebooks.repository_url() in "".join(first["source"])

    def test_colab_badge_above_the_title_matches_the_repository(self, path):
        cells = load(path)["cells"]
        assert cells[1]["cell_type"] == "markdown" and "".join(cells[1]["source"]).startswith("# ")
        badge = cells[0]
        assert badge["metadata"].get("tags") == [book_notebooks.BADGE_TAG]
        assert "".join(badge["source"]) == book_notebooks.badge_source(path.name)

    def test_executed_in_order_from_a_fresh_kernel(self, path):
        counts = [c["execution_count"] for c in code_cells(path)]
        assert counts == list(range(1, len(counts) + 1))

    def test_no_errors_paths_or_user_names_in_outputs(self, path):
        for cell in code_cells(path):
            for output in cell["outputs"]:
                assert output["output_type"] != "error", output.get("ename")
                plain = output.get("data", {}).get("text/plain", "")
                text = json.dumps(output.get("text", "")) + json.dumps(plain)
                assert not re.search(r"/(home|root|work|tmp|Users)/", text), text[:200]

    def test_clean_metadata_and_python3_kernel(self, path):
        nb = load(path)
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        assert not {"colab", "vscode", "widgets"} & set(nb["metadata"])
        for cell in nb["cells"]:
            assert not {"colab", "vscode", "id", "execution"} & set(cell["metadata"])

    def test_ends_with_exercises_summary_and_references(self, path):
        headings = [
            line.lower()
            for cell in load(path)["cells"]
            if cell["cell_type"] == "markdown"
            for line in "".join(cell["source"]).splitlines()
            if line.startswith("#")
        ]
        for section in ("exercises", "summary", "references"):
            assert any(section in h for h in headings), section


# --- Portable outputs: what nbval compares must be the same on any CPU -------------------------------
IGNORE_TAG = "nbval-ignore-output"
# Many digits, or an error magnitude (1e-5 and below): the last digits depend on the CPU's vector
# width and BLAS. The same pattern as the project's before-stop check.
FRAGILE = re.compile(r"\d\.\d{7,}|\b\d\.\de-(0[5-9]|1\d)\b")


def compared(cell) -> bool:
    return IGNORE_TAG not in cell["metadata"].get("tags", [])


def output_texts(output) -> list[str]:
    data = output.get("data", {})
    # glued values (papermill records) are checked by test_glued_floats_are_rounded instead: a
    # rounded constant such as 2**-10 = 0.0009766 has many decimals but only four figures
    texts = [output.get("text", "")] + [
        v for k, v in data.items() if k.endswith("text/plain") and "papermill.record" not in k
    ]
    return ["".join(t) if isinstance(t, list) else str(t) for t in texts]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_compared_outputs_print_no_cpu_dependent_digits(path):
    for index, cell in enumerate(load(path)["cells"]):
        if cell["cell_type"] != "code" or not compared(cell):
            continue
        for output in cell["outputs"]:
            for text in output_texts(output):
                match = FRAGILE.search(text)
                assert not match, f"cell {index} prints {match.group(0)!r}: round it, or tag it {IGNORE_TAG}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glued_floats_are_rounded(path):
    # vit_lib.notebook.glue rounds floats to the figures the prose shows; a float glued with
    # myst_nb.glue directly would carry 17 digits, the last of them machine-dependent
    for index, cell in enumerate(load(path)["cells"]):
        for output in cell.get("outputs", []) if compared(cell) else []:
            record = output.get("data", {}).get("application/papermill.record/text/plain")
            if record is None or not re.fullmatch(r"-?\d+\.\d+(e[-+]\d+)?", record):
                continue
            mantissa = record.split("e")[0].replace("-", "").replace(".", "").strip("0")
            assert len(mantissa) <= 6, f"cell {index} glues {record}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_excluded_cells_still_assert_their_claim(path):
    for index, cell in enumerate(load(path)["cells"]):
        source = "".join(cell["source"])
        assert "NBVAL_IGNORE_OUTPUT" not in source, f"cell {index}: use the {IGNORE_TAG} tag, not a comment"
        timing = re.search(r"perf_counter|benchmark\.Timer", source)
        if cell["cell_type"] == "code" and not compared(cell) and not timing:
            # a cell that times something shows a figure, not a claim; every other one asserts its claim
            assert "assert" in source, f"cell {index} is excluded from nbval but asserts nothing"


def test_three_quarters_of_the_cells_with_outputs_are_compared():
    with_outputs = [c for path in NOTEBOOKS for c in code_cells(path) if c["outputs"]]
    share = sum(compared(c) for c in with_outputs) / len(with_outputs)
    assert share >= 0.75, f"{share:.0%} of {len(with_outputs)} cells compared"
