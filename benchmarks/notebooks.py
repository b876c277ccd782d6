"""Every solution notebook's execution time from a fresh kernel, as ``python -m helpers execute-solutions`` runs it."""

import time
from pathlib import Path

import nbformat

from helpers.tooling.execution import execute_notebook

__all__ = ["notebook_times"]


def notebook_times(root, echo=print):
    """``[(name, seconds, ok)]`` for ``root/solutions/*.ipynb``, each run top to bottom in a new kernel.

    Outputs are not written back: this measures, it does not regenerate.
    """
    rows = []
    for path in sorted(Path(root, "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        try:
            execute_notebook(nb, cwd=path.parent)
            ok = True
        except Exception as exc:  # a failing notebook is reported in the table, not raised
            echo(f"{path.name}: failed ({type(exc).__name__})")
            ok = False
        rows.append((path.stem, time.perf_counter() - start, ok))
        echo(f"  {path.stem:<32}{rows[-1][1]:6.1f} s{'' if ok else '  FAILED'}")
    return rows
