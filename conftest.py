"""Root pytest configuration.

- Notebook kernels (nbval's and ours) get the same environment that
  ``python -m helpers execute-solutions`` used to store the outputs they are
  compared with.
- Under pytest-xdist, all the cells of one notebook form one unit of work, so
  they run in order in one kernel on one worker; every other test is a unit of
  its own, so the slow ones (a lesson run, a grading run) spread over the
  workers, each with one torch thread. The notebooks go first (the largest
  units), then the tests that run kernels, then the short unit tests.
  (``--dist loadgroup`` with marks would say the same, but pytest 9.2 ignores
  the node ids it rewrites: pytest-xdist issue 1386.)
- Where bubblewrap cannot run, the grading tests that test containment are
  skipped (``needs_sandbox`` in tests/test_grading.py) and the summary says so
  in one line; under ``VI_COURSE_REQUIRE_SANDBOX=1`` (``.ci/run``) that is an
  error instead.
"""

import os

import pytest

from helpers.tooling.execution import apply_kernel_env

apply_kernel_env()


def pytest_configure(config):
    # One torch thread in every test process. Parallel workers replace torch's own threads: two workers with
    # two threads each on two cores spend their time waiting for each other (a unit test ran 15 times slower);
    # and with `-n 0` on a loaded machine, a second thread makes the checkers' timing tests depend on the
    # load. Notebooks pin one thread anyway.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    _retry_nbval_kernel_start()
    if not os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("VI_COURSE_REQUIRE_SANDBOX") == "1":
        from helpers.tooling.sandbox import why_unavailable  # CI: every grading test runs contained

        why = why_unavailable()
        if why:
            raise pytest.UsageError(f"VI_COURSE_REQUIRE_SANDBOX=1, but the grader's sandbox cannot run here: {why}")


def _retry_nbval_kernel_start(attempts=3):
    """Give nbval's kernel start two more tries, each a fresh kernel on fresh ports.

    jupyter_client picks a kernel's TCP ports by binding free ones and releasing them; the kernel binds them a
    moment later. When both workers start a notebook's kernel at the same instant, one can be handed a port the
    other has just released, and its client then waits nbval's 60 s for a reply that never comes (a fresh-clone
    CI run lost lesson 03 that way, with the machine idle). nbval shuts the failed kernel down before raising.
    """
    import nbval.kernel

    start = nbval.kernel.start_new_kernel
    if getattr(start, "retries", False):
        return

    def start_new_kernel(*args, **kwargs):
        for attempt in range(1, attempts + 1):
            try:
                return start(*args, **kwargs)
            except RuntimeError:  # "Kernel didn't respond" or "Kernel died before replying"
                if attempt == attempts:
                    raise

    start_new_kernel.retries = True
    nbval.kernel.start_new_kernel = start_new_kernel  # RunningKernel looks it up in nbval.kernel at each start


SANDBOX_SKIP = "needs bubblewrap, the grader's sandbox"  # the reason of the tests skipped without it


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if SANDBOX_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"bubblewrap cannot run here: {len(skipped)} grading tests that need the sandbox were skipped; "
            "install it with `apt-get install -y bubblewrap` (CI does)"
        )


# Tests that run whole Jupyter kernels (a lesson top to bottom, a grading run): each takes 5 to 20 s. Handed
# out right after the notebooks, so that the many short unit tests fill the gaps at the end.
_KERNEL_TESTS = ("tests/test_notebooks.py::", "tests/test_grading")  # test_grading*.py


# nbval waits 5 s (fixed) for a cell's outputs once the kernel has answered; on a loaded machine a cell with a
# figure can take longer to deliver them, and the cell failed "waiting for output". 120 s only bounds a hang.
NBVAL_OUTPUT_TIMEOUT = 120


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.nodeid.startswith(_KERNEL_TESTS))  # stable: otherwise in order
    for item in items:
        if hasattr(item, "output_timeout"):  # nbval's cells
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class NotebookScheduling(LoadScopeScheduling):
        """``--dist loadscope`` with one scope per notebook and one per test; the largest scopes go first."""

        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return path if path.endswith(".ipynb") else nodeid

    return NotebookScheduling(config, log)
