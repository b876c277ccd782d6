"""The course's public address is set once (``[project.urls] Source``); everything that links to it agrees."""

import re
from pathlib import Path

import nbformat
import pytest

from helpers.tooling.links import (
    INSTALL_CELL_ID,
    archive_url,
    binder_url,
    colab_url,
    install_cell_source,
    source_url,
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_every_solution_starts_with_the_install_cell(path):
    """The first code cell installs the course from the one address, only where ``helpers`` is missing."""
    nb = nbformat.read(path, 4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.id == INSTALL_CELL_ID, f"{path.name}: the first code cell must be the install cell"
    assert first.source == install_cell_source(), (
        f"{path.name}: the install cell differs from helpers.tooling.links.install_cell_source(); "
        "paste its text into the cell and run `python -m helpers build-lessons`"
    )
    assert first.outputs == [] and first.execution_count == 1


def test_addresses_derive_from_the_one_source_url():
    source = source_url()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", source)
    owner_name = source.removeprefix("https://github.com/")
    assert archive_url().startswith(source + "/archive/")
    assert f"/gh/{owner_name}/" in binder_url() and binder_url().endswith("lessons")
    assert colab_url("01_elbo.ipynb").endswith(f"github/{owner_name}/blob/main/lessons/01_elbo.ipynb")


def test_the_readme_links_derive_from_the_source_url():
    """The README cannot compute its links: check that its Binder and Colab links are the ones derived."""
    readme = (ROOT / "README.md").read_text()
    owner_name = source_url().removeprefix("https://github.com/")
    assert binder_url() in readme, "README: the Binder badge must link to helpers.tooling.links.binder_url()"
    for url in re.findall(r"https://(?:mybinder\.org/v2|colab\.research\.google\.com/github)/[^\s)\"']+", readme):
        assert owner_name in url, f"README: {url} does not point at {source_url()}"
    for path in SOLUTIONS:
        assert colab_url(path.name) in readme, f"README: no Colab link for {path.name}"
