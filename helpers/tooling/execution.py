"""Run notebooks in a fresh kernel of *this* environment, the way nbval does.

``python -m helpers execute-solutions`` writes the stored outputs of
``solutions/`` with :func:`execute_notebook`; the test suite sets the same
environment (:func:`apply_kernel_env`) before nbval starts its kernels, so the
outputs compared are produced under the same conditions as the ones stored.
"""

import os
import sys
import time
from pathlib import Path

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.utils import run_sync

from .notebook_io import normalize_metadata, read_notebook, write_notebook

__all__ = ["KERNEL_ENV", "apply_kernel_env", "execute_notebook", "execute_solutions"]

# Stable warning paths and hashing; MPLBACKEND must stay unset (inline figures). The arithmetic is *not*
# pinned: torch and MKL pick their kernels by CPU (AVX2, AVX-512, NEON), so a number that comes out of long
# training differs in its last digits from one machine to the next. Notebooks print such numbers at the
# precision their spread supports, or assert the claim they support (CONTRIBUTING.md, "Stored outputs").
# The allocator: glibc's malloc hands every freed block above its mmap threshold (128 KB, rising to at most
# 32 MB) back to the system, so a loop whose tensors are larger faults in fresh zeroed pages at every step.
# Kernels keep up to 256 MB of freed memory for reuse instead: lesson 05 runs in 25.6 CPU-s instead of 27.8,
# its system time 2.0 s instead of 5.0 (medians of three paired runs), its peak memory 1.46 GB instead of
# 1.14 GB. glibc only; elsewhere the variables are ignored.
# No number changes: only where memory comes from.
KERNEL_ENV = {
    "IPYKERNEL_CELL_NAME": "<IPY-INPUT>",
    "PYTHONHASHSEED": "0",
    "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}
_UNSET = ("MPLBACKEND",)


def apply_kernel_env(environ=None):
    """Put the notebook environment into ``environ`` (default: ``os.environ``) and return it."""
    environ = os.environ if environ is None else environ
    environ.update(KERNEL_ENV)
    for key in _UNSET:
        environ.pop(key, None)
    return environ


class _CurrentEnvSpecs(KernelSpecManager):
    """Resolve every kernel name to ipykernel in the running interpreter (like nbval's --nbval-current-env)."""

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="current environment",
            language="python",
        )


def execute_notebook(nb, cwd, timeout=600, allow_errors=False, figures=True):
    """Execute ``nb`` in place in a fresh kernel started in ``cwd``; return it.

    ``timeout``: seconds per cell, or a function of the cell that returns them. ``figures=False`` runs
    matplotlib on its non-interactive Agg backend, so that no figure is rendered to PNG (a tenth of lesson 01's
    run): for runs whose outputs nobody reads, grading and the lessons' stub run.
    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell
    unless ``allow_errors``.
    """
    from nbclient import NotebookClient

    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_CurrentEnvSpecs())
    per_cell = {"timeout_func": timeout, "timeout": None} if callable(timeout) else {"timeout": timeout}
    client = NotebookClient(
        nb,
        km=km,
        **per_cell,
        allow_errors=allow_errors,
        record_timing=False,
        store_widget_state=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        env = apply_kernel_env(dict(os.environ))
        if not figures:
            env["MPLBACKEND"] = "agg"
        client.execute(env=env, cwd=str(cwd))
    finally:
        # nbclient leaves a kernel it did not create running. Kill it, do not ask (a kernel stuck in a loop
        # never answers a shutdown request): this signals its whole process group, children included.
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    return nb


def execute_solutions(root, names=(), echo=print):
    """Execute solution notebooks and store their outputs (execution counts kept).

    ``names``: file names or paths under ``solutions/``; empty means all.
    Returns the exit status: 0 if every notebook ran without error.
    """
    from nbclient.exceptions import CellExecutionError

    solutions_dir = Path(root) / "solutions"
    paths = sorted(solutions_dir.glob("*.ipynb")) if not names else [solutions_dir / Path(n).name for n in names]
    missing = [p for p in paths if not p.exists()]
    if missing:
        echo("error: no such solution notebook: " + ", ".join(str(p) for p in missing))
        return 2
    status = 0
    for path in paths:
        nb = read_notebook(path)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        start = time.perf_counter()
        try:
            execute_notebook(nb, cwd=path.parent)
        except CellExecutionError as exc:
            echo(f"solutions/{path.name}: FAILED, outputs not written\n{exc}")
            status = 1
            continue
        write_notebook(normalize_metadata(nb), path)
        echo(f"solutions/{path.name}: executed in {time.perf_counter() - start:.1f} s, outputs written")
    return status
