"""vit_lib.notebook: the reproducible set-up and the book-data loader the chapters share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vit_lib.notebook import book_data, book_data_path, setup


def test_setup_seeds_and_pins_threads():
    threads = torch.get_num_threads()
    try:
        device = setup(seed=3, threads=1)
        first = (torch.rand(2), np.random.rand(2))  # noqa: NPY002 - setup seeds the legacy generator
        setup(seed=3, threads=1)
        second = (torch.rand(2), np.random.rand(2))  # noqa: NPY002
        assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
        assert torch.get_num_threads() == 1
        assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    finally:
        torch.set_num_threads(threads)


def test_book_data_reads_the_local_file(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.json").write_text(json.dumps({"source": "disk"}))
    monkeypatch.chdir(tmp_path)
    assert book_data("x.json", "https://example.invalid/never-used") == {"source": "disk"}


def test_book_data_downloads_from_the_repository_when_missing(tmp_path, monkeypatch):
    # a file:// "repository" stands in for GitHub's raw URLs: same path layout, no network
    raw = tmp_path / "repo" / "raw" / "main" / "book" / "data"
    raw.mkdir(parents=True)
    (raw / "x.json").write_text(json.dumps({"source": "repository"}))
    monkeypatch.chdir(tmp_path)  # no data/ folder here
    assert book_data("x.json", (tmp_path / "repo").as_uri()) == {"source": "repository"}


def test_book_data_prefers_the_first_folder_that_has_the_file(tmp_path, monkeypatch):
    # chapter 8 on a GPU: the reader's own bench output in the current folder beats the stored copy
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.json").write_text(json.dumps({"source": "book"}))
    monkeypatch.chdir(tmp_path)
    never = "https://example.invalid/never-used"
    assert book_data("x.json", never, folders=(".", "data")) == {"source": "book"}
    (tmp_path / "x.json").write_text(json.dumps({"source": "reader"}))
    assert book_data("x.json", never, folders=(".", "data")) == {"source": "reader"}
    assert book_data("x.json", never) == {"source": "book"}  # default: data/ only
    assert book_data_path("x.json", (".", "data")) == Path("x.json")
    assert book_data_path("missing.json", (".", "data")) is None


def test_round_significant_keeps_what_the_prose_shows_and_drops_the_cpu_dependent_digits():
    from vit_lib.notebook import round_significant

    # the same float32 result computed on two CPUs (chapter 6's loss on an AMD EPYC and under
    # ATEN_CPU_CAPABILITY=default): different last digits, the same stored value
    assert round_significant(0.43241795897483826) == round_significant(0.43241915106773376) == 0.4324
    assert round_significant(np.float32(13.856178)) == 13.86
    assert round_significant(65504.0, digits=6) == 65504.0
    assert round_significant(3) == 3 and round_significant(True) is True and round_significant("a") == "a"
    with pytest.raises(ValueError, match="digits must be >= 1, got 0"):
        round_significant(1.0, digits=0)
