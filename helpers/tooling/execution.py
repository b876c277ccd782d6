"""Run notebooks in a fresh kernel of *this* environment, the way nbval does.

``python -m helpers execute-solutions`` writes the stored outputs of
``solutions/`` with :func:`execute_notebook`; the test suite sets the same
environment (:func:`apply_kernel_env`) before nbval starts its kernels, so the
outputs compared are produced under the same conditions as the ones stored.
"""

import os
import platform
import sys
import time
from pathlib import Path

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.utils import run_sync

from .notebook_io import normalize_metadata, read_notebook, write_notebook

__all__ = ["KERNEL_ENV", "apply_kernel_env", "execute_notebook", "execute_solutions"]

# Stable warning paths and hashing; MPLBACKEND must stay unset (inline figures).
KERNEL_ENV = {"IPYKERNEL_CELL_NAME": "<IPY-INPUT>", "PYTHONHASHSEED": "0"}
if platform.machine().lower() in ("x86_64", "amd64"):
    # The same arithmetic on every x86 CPU from the last decade, Intel or AMD. Otherwise torch picks its
    # vectorised kernels by instruction set (AVX2 or AVX-512), and MKL picks its matrix products and its
    # vectorised exp and log by instruction set *and* vendor: 150 epochs of lesson 05's training then end
    # tenths of a nat apart on two machines, and the stored outputs would hold only on the machine that wrote
    # them (CI's did not). MKL's "COMPATIBLE" branch is the one it runs identically on every x86 CPU; it was
    # checked by hashing the weights after 20 training steps, natively on an AVX-512 Intel CPU and under
    # QEMU emulating an AMD EPYC (Rome): identical with these settings, different with MKL_CBWR=AVX2.
    KERNEL_ENV.update(ATEN_CPU_CAPABILITY="avx2", MKL_CBWR="COMPATIBLE", ONEDNN_MAX_CPU_ISA="AVX2")
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


def execute_notebook(nb, cwd, timeout=600, allow_errors=False):
    """Execute ``nb`` in place in a fresh kernel started in ``cwd``; return it.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell
    unless ``allow_errors``.
    """
    from nbclient import NotebookClient

    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_CurrentEnvSpecs())
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        allow_errors=allow_errors,
        record_timing=False,
        store_widget_state=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute(env=apply_kernel_env(dict(os.environ)), cwd=str(cwd))
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
