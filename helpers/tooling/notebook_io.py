"""Reading and writing notebooks deterministically.

Every notebook the tooling writes goes through :func:`write_notebook`, so the
bytes depend only on the content: sorted keys, one-space indent, a trailing
newline, normalised metadata (no versions, timings or widget state).
"""

import json
from pathlib import Path

import nbformat

from ..exercise_format import METADATA_KEY

__all__ = ["read_notebook", "copy_notebook", "render_notebook", "write_notebook", "normalize_metadata", "KERNELSPEC"]

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
_CELL_KEYS = ("tags", METADATA_KEY)  # cell metadata worth keeping; the rest is editor noise


def read_notebook(path):
    """Read a notebook as nbformat 4, with a clear error for a file that is not one."""
    path = Path(path)
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable Jupyter notebook ({type(exc).__name__}: {exc})") from None


def copy_notebook(nb):
    """A deep copy of notebook ``nb`` (a dict or a ``NotebookNode``), as a ``NotebookNode``."""
    return nbformat.from_dict(json.loads(json.dumps(nb)))


def normalize_metadata(nb):
    """Keep only what the course needs: kernelspec, language name, cell tags and the course's cell metadata."""
    nb.metadata = nbformat.from_dict({"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}})
    nb.nbformat, nb.nbformat_minor = 4, 5
    for cell in nb.cells:
        cell.metadata = nbformat.from_dict({k: cell.metadata[k] for k in _CELL_KEYS if k in cell.metadata})
        if "attachments" in cell and not cell.attachments:
            del cell["attachments"]
    return nb


def render_notebook(nb):
    """The exact text :func:`write_notebook` would write."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb, path):
    Path(path).write_text(render_notebook(nb), encoding="utf-8")
