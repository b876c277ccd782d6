"""``python -m benchmarks.successors``: SIVI, UIVI, SIVI-SM, KSIVI and RealNVP on the three 2-D targets, over seeds.

Each method is trained as its authors train it (``helpers.semi_implicit_fits`` says how, and where this
differs: learning rates decay at the authors' own intervals, so 5000 updates are the first tenth of the
authors' 50 000 runs), for the same number of updates, from several seeds, and scored by the KL divergence to the target
in both directions, by quadrature on a grid (``helpers.quadrature``), at half and at the full run (has
training reached its plateau?). On the two-mode target it also records the weight each fit gives the right
mode, and adds KSIVI as lesson 07 ran it (RBF kernel, no annealing) and with each of the authors' two
changes alone (the IMQ kernel; the annealed score). Training times are measured with one
torch thread per run; ``--jobs`` runs that many at once, so they are comparable only within one study.
``--timing STEPS`` times each method alone instead, on an idle machine, for lesson 08's time column.

The CSV it writes (``helpers/data/successors_2d.csv`` by default) is what lesson 08's table reads: the study
takes about an hour on two cores, far beyond a lesson's minute. Rerun it after changing a method. A run of
other than 5000 updates labels its rows ``"METHOD (N updates)"``; ``--merge`` adds them to the file's other
rows instead of replacing the file, for example the authors' full runs on the X:
``python -m benchmarks.successors --steps 50000 --seeds 1 --targets "X shape" --methods "SIVI-SM;KSIVI" --merge``.
"""

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

from benchmarks.studies import run_jobs, write_rows

ROOT = Path(__file__).resolve().parents[1]
STUDY_STEPS = 5000  # every method's updates in lesson 08's table
COLUMNS = [
    "target",
    "method",
    "seed",
    "steps",
    "train_seconds",
    "kl_qp_half",
    "kl_pq_half",
    "kl_qp",
    "kl_pq",
    "right_mode_weight",
]


def _configurations(targets):
    rows = []
    for target in targets:
        two_modes = target == "Gaussian mixture"
        for method in ("SIVI", "UIVI", "SIVI-SM", "KSIVI", "RealNVP"):
            options = {}
            if method in ("SIVI-SM", "KSIVI") and two_modes:
                options["anneal"] = True
            if method == "KSIVI":
                options["kernel"] = "imq" if two_modes else "rbf"
                options["sigma"] = 0.5 if target == "banana" else 1.0
            rows.append((target, method, options))
        if two_modes:  # lesson 07's set-up, and each of the authors' two changes alone
            rows.append((target, "KSIVI (RBF, no annealing)", {"kernel": "rbf", "anneal": False}))
            rows.append((target, "KSIVI (IMQ, no annealing)", {"kernel": "imq", "anneal": False}))
            rows.append((target, "KSIVI (RBF, annealing)", {"kernel": "rbf", "anneal": True}))
    return rows


def _score(fit_result, target_name, grid, log_p, K):
    from helpers.quadrature import kl_on_grid
    from helpers.semi_implicit_fits import mode_weight

    log_q = fit_result.log_density(grid, K=K)
    weight = mode_weight(fit_result.sample(100_000)) if target_name == "Gaussian mixture" else math.nan
    return float(kl_on_grid(log_q, log_p)), float(kl_on_grid(log_p, log_q)), weight


def run_one(target_name, method, options, seed, steps, K, grid_n):
    import torch

    torch.set_num_threads(1)
    from helpers.quadrature import grid_2d
    from helpers.semi_implicit_fits import fit
    from helpers.targets import BOXES, TARGETS

    log_target = TARGETS[target_name]
    grid, _ = grid_2d(BOXES[target_name], grid_n)
    log_p = log_target(grid)
    half = {}

    def at_half(f):
        state = torch.random.get_rng_state()  # scoring must not change the rest of the run's draws
        half["kl"] = _score(f, target_name, grid, log_p, K)[:2]
        torch.random.set_rng_state(state)

    base = method.split(" ")[0]
    result = fit(base, log_target, steps, seed, checkpoint=(steps // 2, at_half), **options)
    kl_qp, kl_pq, weight = _score(result, target_name, grid, log_p, K)
    return {
        "target": target_name,
        "method": method if steps == STUDY_STEPS else f"{method} ({steps:,} updates)".replace(",", " "),
        "seed": seed,
        "steps": steps,
        "train_seconds": f"{result.seconds:.1f}",
        "kl_qp_half": f"{half['kl'][0]:.4f}",
        "kl_pq_half": f"{half['kl'][1]:.4f}",
        "kl_qp": f"{kl_qp:.4f}",
        "kl_pq": f"{kl_pq:.4f}",
        "right_mode_weight": "" if math.isnan(weight) else f"{weight:.4f}",
    }


def time_per_update(target_name, method, options, steps, study_steps):
    """Seconds per update of one method at the study's settings (UIVI's batch as in a ``study_steps`` run)."""
    import torch

    torch.set_num_threads(1)
    from helpers.semi_implicit_fits import fit, uivi_batch
    from helpers.targets import TARGETS

    base = method.split(" ")[0]
    if base == "UIVI":
        options = {**options, "batch": uivi_batch(study_steps)}
    fit(base, TARGETS[target_name], 5, 0, **options)  # warm-up: first-call costs are not the method's
    return fit(base, TARGETS[target_name], steps, 0, **options).seconds / steps


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.successors", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STUDY_STEPS)
    parser.add_argument("--K", type=int, default=20_000, help="mixing draws for a semi-implicit density on the grid")
    parser.add_argument("--grid", type=int, default=120, help="grid points per axis")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--targets", default="banana,Gaussian mixture,X shape")
    parser.add_argument("--methods", default=None, help="a subset of the methods, separated by ';' (default: all)")
    # helpers.semi_implicit_fits.STUDY_CSV and TIMING_CSV, written out: importing helpers imports torch, and
    # --help should answer at once
    parser.add_argument("--out", type=Path, default=ROOT / "helpers" / "data" / "successors_2d.csv")
    parser.add_argument(
        "--timing",
        type=int,
        metavar="STEPS",
        default=0,
        help="instead of the study, time STEPS updates of each method, one at a time, and write TIMING_CSV "
        "(run it on an idle machine: the study's own times are taken two runs at a time)",
    )
    parser.add_argument("--merge", action="store_true", help="keep --out's rows of other targets and methods")
    parser.add_argument("--timing-out", type=Path, default=ROOT / "helpers" / "data" / "successors_2d_timing.csv")
    args = parser.parse_args(argv)
    if min(args.seeds, args.steps, args.K, args.jobs) < 1 or args.grid < 2:
        parser.error("--seeds, --steps, --K and --jobs must be positive and --grid at least 2")
    configurations = _configurations(args.targets.split(","))
    if args.methods:
        keep = set(args.methods.split(";"))
        configurations = [c for c in configurations if c[1] in keep]
    if args.timing:
        with open(args.timing_out, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["target", "method", "ms_per_update"])
            for target, method, options in configurations:
                ms = 1e3 * time_per_update(target, method, options, args.timing, args.steps)
                writer.writerow([target, method, f"{ms:.2f}"])
                print(f"{target:<17}{method:<27}{ms:8.2f} ms per update", flush=True)
        print(f"wrote {args.timing_out}")
        return 0
    jobs = [(*c, seed, args.steps, args.K, args.grid) for c in configurations for seed in range(args.seeds)]
    start = time.perf_counter()
    rows = []
    for i, row in enumerate(run_jobs(run_one, jobs, args.jobs)):
        rows.append(row)
        print(
            f"[{i + 1}/{len(jobs)}] {row['target']:<17}{row['method']:<27}seed {row['seed']}  "
            f"{row['train_seconds']:>6} s  KL(q||p) {row['kl_qp']}  KL(p||q) {row['kl_pq']}  "
            f"{row['right_mode_weight']}",
            flush=True,
        )
    if args.merge and args.out.is_file():  # keep the other rows of an earlier run
        new = {(r["target"], r["method"]) for r in rows}
        with open(args.out, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if (r["target"], r["method"]) not in new] + rows
    write_rows(args.out, COLUMNS, rows)
    print(f"{len(rows)} runs in {time.perf_counter() - start:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
