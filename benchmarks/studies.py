"""What the studies behind lessons 06 to 08 share: running their jobs, one process each or in this one, and
writing their rows."""

import contextlib
import csv
from concurrent.futures import ProcessPoolExecutor

__all__ = ["run_jobs", "write_rows"]


def run_jobs(run_one, jobs, n_jobs):
    """Yield ``run_one(*job)`` for each job, in the jobs' order.

    With ``n_jobs > 1``, ``n_jobs`` worker processes run them (submitted all at once); otherwise this process
    runs them one by one: no start-up cost, and a debugger sees every run.
    """
    with contextlib.ExitStack() as stack:
        if n_jobs > 1:
            pool = stack.enter_context(ProcessPoolExecutor(n_jobs))
            futures = [pool.submit(run_one, *job) for job in jobs]
            for future in futures:
                yield future.result()
        else:
            for job in jobs:
                yield run_one(*job)


def write_rows(path, columns, rows):
    """Write ``rows`` (dicts) to the CSV file ``path`` under the header ``columns``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
