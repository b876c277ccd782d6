"""``python -m benchmarks``: course code against Pyro, every solution notebook's run time, the test command's.

The course code must be at least 1/0.6 = 1.67 times as fast as Pyro per step (ratio <= 0.6) at an equal final ELBO
(within ``svi.ELBO_TOLERANCE``); each notebook must run in at most 60 s, and all of them in at most 6 minutes
(the budgets in CONTRIBUTING.md); with ``--tests``, the README's test command must finish in at most 3 minutes.
The exit status is 0 when every criterion holds, 1 otherwise; the last lines
name those that fail.
"""

import argparse
import sys
from pathlib import Path

# torch, Pyro and nbformat are imported in main(), after the options are read: --help and a usage error
# answer at once instead of after 6 s of imports.

ROOT = Path(__file__).resolve().parents[1]
RATIO_LIMIT, NOTEBOOK_LIMIT, COURSE_LIMIT, TESTS_LIMIT = 0.6, 60.0, 360.0, 180.0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for the SVI rows (default 1, as in the notebooks)"
    )
    parser.add_argument("--blr-steps", type=int, default=2000)
    parser.add_argument("--vae-epochs", type=int, default=150, help="default 150, lesson 05's training")
    parser.add_argument("--skip-svi", action="store_true", help="only the notebook table")
    parser.add_argument("--skip-notebooks", action="store_true", help="only the course-against-Pyro table")
    parser.add_argument(
        "--tests",
        action="store_true",
        help="also time the README's test command (about 4 minutes; run it on an otherwise idle machine)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.blr_steps < 1 or args.vae_epochs < 1:
        parser.error("--threads, --blr-steps and --vae-epochs must be positive")
    failures = []
    import torch

    from . import svi
    from .notebooks import notebook_times
    from .tests import time_test_command

    if not args.skip_svi:
        torch.set_num_threads(args.threads)
        print(
            f"Course code against Pyro ({args.threads} thread{'s' if args.threads > 1 else ''}; time per "
            "optimisation step; final ELBO by the course's estimator for both)"
        )
        header = f"  {'':<54}{'course':>10}{'Pyro':>10}{'ELBO course':>13}{'ELBO Pyro':>11}"
        print(header)
        for row in (svi.logistic_regression_row(steps=args.blr_steps), svi.vae_row(epochs=args.vae_epochs)):
            ratio = row["course_seconds"] / row["pyro_seconds"]
            print(
                f"  {row['name']:<54}{1e3 * row['course_seconds']:8.2f}ms{1e3 * row['pyro_seconds']:8.2f}ms"
                f"{row['course_elbo']:13.2f}{row['pyro_elbo']:11.2f}   ratio {ratio:.2f}"
            )
            if "floor_seconds" in row:
                print(
                    f"  {'':<4}of which the networks' matrix products alone, forward and backward: "
                    f"{1e3 * row['floor_seconds']:.2f} ms (a ratio of {RATIO_LIMIT} needs the course at "
                    f"{1e3 * RATIO_LIMIT * row['pyro_seconds']:.2f} ms)"
                )
            if ratio > RATIO_LIMIT:
                failures.append(f"{row['kind']}: ratio {ratio:.2f} > {RATIO_LIMIT}")
            gap, tolerance = abs(row["course_elbo"] - row["pyro_elbo"]), svi.ELBO_TOLERANCE[row["kind"]]
            if gap > tolerance:
                failures.append(f"{row['kind']}: final ELBOs {gap:.2f} apart (> {tolerance}, not equal)")
        print(
            f"  (ratio = course time / Pyro time; the target is <= {RATIO_LIMIT}, "
            f"course at least {1 / RATIO_LIMIT:.2f}x as fast)"
        )

    if not args.skip_notebooks:
        print("\nSolution notebooks, each from a fresh kernel:")
        rows = notebook_times(ROOT)
        total = sum(seconds for _, seconds, _ in rows)
        print(f"  {'all':<32}{total:6.1f} s   (budgets: {NOTEBOOK_LIMIT:.0f} s each, {COURSE_LIMIT:.0f} s in all)")
        failures += [
            f"{name}: {'failed' if not good else f'{seconds:.1f} s > {NOTEBOOK_LIMIT:.0f} s'}"
            for name, seconds, good in rows
            if not good or seconds > NOTEBOOK_LIMIT
        ]
        if total > COURSE_LIMIT:
            failures.append(f"all notebooks: {total:.1f} s > {COURSE_LIMIT:.0f} s")

    if args.tests:
        print("\nThe README's test command (python -m pytest), from the repository root:")
        seconds, status, slowest, summary = time_test_command(ROOT)
        print(f"  {summary}; {seconds:.0f} s wall (budget {TESTS_LIMIT:.0f} s at idle). The slowest ten:")
        for line in slowest:
            print(f"    {line}")
        if status != 0:
            failures.append(f"the test command exited {status}")
        if seconds > TESTS_LIMIT:
            failures.append(f"the test command: {seconds:.0f} s > {TESTS_LIMIT:.0f} s")
    for failure in failures:
        print(f"not met: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
