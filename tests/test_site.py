"""The website's sources: every figure of the solutions has alternative text; the landing page's inputs parse."""

from pathlib import Path

import nbformat
import pytest

from helpers.tooling.site import alt_texts, figure_cells, lesson_map, quick_start

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_every_figure_has_alternative_text(path):
    """A cell that draws a figure needs an entry in site/alt_text.toml; an entry needs a figure cell."""
    figures = figure_cells(nbformat.read(path, 4))
    texts = alt_texts(ROOT).get(path.name, {})
    missing = [cell for cell in figures if not texts.get(cell, "").strip()]
    assert not missing, f"site/alt_text.toml: describe the figure of {path.name} cells {missing}"
    stale = sorted(set(texts) - set(figures))
    assert not stale, f"site/alt_text.toml: {path.name} cells {stale} draw no figure (renamed or removed?)"


def test_alt_text_names_only_solutions():
    assert set(alt_texts(ROOT)) <= {p.name for p in SOLUTIONS}


def test_the_landing_page_reads_the_readme():
    assert [name for name, _ in lesson_map(ROOT)] == [p.name for p in SOLUTIONS]
    assert all(learn.strip() for _, learn in lesson_map(ROOT))
    assert len(quick_start(ROOT).splitlines()) == 2
