"""What the studies behind lessons 06 to 08 share: running their jobs, one process each or in this one, and
writing their rows."""

import argparse
import contextlib
import csv
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

__all__ = ["run_jobs", "write_rows", "seed_study_arguments"]

ROOT = Path(__file__).resolve().parents[1]


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


def seed_study_arguments(prog, doc, csv_name, argv=None):
    """The options of a study rerun from several seeds: ``--seeds`` (5), ``--first-seed`` (100) and ``--out``
    (``helpers/data/csv_name``); the parsed arguments, a usage error for a non-positive ``--seeds``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=100, help="seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--out", type=Path, default=ROOT / "helpers" / "data" / csv_name)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be positive")
    return args
