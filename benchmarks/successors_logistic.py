"""``python -m benchmarks.successors_logistic``: SIVI's successors and a flow on lesson 06's logistic regression.

The 31-dimensional posterior of lesson 06 (the breast-cancer data, prior N(0, I)) has no normalised density,
so the 2-D study's KL by quadrature is out of reach. Each fit is scored instead against lesson 06's HMC
reference (the same chains, rebuilt here with the lesson's seed), by three numbers that favour no method: the
largest error of a posterior mean, in HMC standard deviations; the standard deviations' ratios to HMC's
(smallest, median, largest); and the largest error of the 465 pairwise correlations. Each is computed from
20 000 draws of the fit. Also recorded: the ELBO (exact for the flow; for a semi-implicit fit, SIVI's lower
and upper bounds with ``K = 5000``, which sandwich it), at half and at the full run (has training reached
its plateau?), and the training time (CPU seconds of one torch thread, so runs that share the machine
still compare). ``helpers.semi_implicit_fits`` trains each method with its authors'
logistic-regression settings where they published them (its docstring says which, and where we differ);
the full-rank Gaussian of lesson 06 is run beside them as the baseline (its ELBO with 64 draws, Adam from 0.01
decaying to 0.0005, as lesson 06's ``maximize``). Budget held equal: ``--steps`` updates for every method
(20 000, SIVI-SM's and KSIVI's own count). One torch thread per run, ``--jobs`` runs at once.

Writes ``helpers/data/successors_logistic.csv``, which lesson 08 prints. About 1.5 hours of CPU (45 minutes on 2 cores);
``--methods ... --merge`` reruns some rows and keeps the others.
"""

import argparse
import csv
import functools
import math
import os
import sys
import time
import types
from pathlib import Path

from benchmarks.studies import run_jobs, write_rows

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "SIVI",
    "UIVI",
    "UIVI (Adam)",
    "SIVI-SM",
    "SIVI-SM (no TransTrick)",
    "KSIVI",
    "KSIVI (bandwidth detached)",
    "UIVI (31-D noise)",
    "SIVI-SM (31-D noise)",
    "KSIVI (31-D noise)",
    "RealNVP",
    "full-rank Gaussian",
)
OPTIONS = {  # a row's method and options, where they differ from its authors' regression settings
    "UIVI (Adam)": ("UIVI", {"optimizer": "adam"}),
    "SIVI-SM (no TransTrick)": ("SIVI-SM", {"trans_trick": False}),
    "KSIVI (bandwidth detached)": ("KSIVI", {"attached_bandwidth": False}),
    "UIVI (31-D noise)": ("UIVI", {"noise_dim": 31}),  # as many noise dimensions as weights
    "SIVI-SM (31-D noise)": ("SIVI-SM", {"noise_dim": 31}),
    "KSIVI (31-D noise)": ("KSIVI", {"noise_dim": 31}),
}
ONE_SEED = ("UIVI (31-D noise)", "SIVI-SM (31-D noise)", "KSIVI (31-D noise)")  # ablations: one seed each
COLUMNS = [
    "method",
    "seed",
    "steps",
    "train_seconds",
    "elbo_half",
    "elbo",
    "elbo_se",
    "elbo_upper",
    "mean_error",
    "sd_ratio_min",
    "sd_ratio_median",
    "sd_ratio_max",
    "corr_error",
    "mean_error_half",
    "corr_error_half",
]


@functools.cache
def posterior():
    """Lesson 06's model and HMC reference (its cell ``blr-reference``, same seed): ``(blr, draws (8000, 31))``."""
    import torch

    from helpers.datasets import load_breast_cancer
    from helpers.hmc import hmc
    from helpers.logistic_regression import BayesianLogisticRegression

    data = load_breast_cancer()
    blr = BayesianLogisticRegression(data.X_train, data.y_train, prior_std=1.0)
    w_map, cov_laplace = blr.laplace()
    L_laplace = torch.linalg.cholesky(cov_laplace)
    gen = torch.Generator().manual_seed(0)
    init = w_map + 2 * torch.randn(8, w_map.shape[0], generator=gen) @ L_laplace.T
    samples, _ = hmc(
        blr.log_joint_and_grad,
        init,
        step_size=0.3,  # lesson 03's validated sampler: 0.3 x 6 with the step jittered, as lesson 06
        n_leapfrog=6,
        n_samples=1000,
        n_warmup=200,
        scale_tril=L_laplace,
        generator=gen,
        jitter=0.2,
    )
    return blr, samples.reshape(-1, w_map.shape[0])


def moment_errors(draws, reference):
    """Largest mean error (in reference sds), sd ratios (min, median, max), largest correlation error."""
    import torch

    sd_ref = reference.std(0)
    ratio = draws.std(0) / sd_ref
    corr_error = (torch.corrcoef(draws.T) - torch.corrcoef(reference.T)).abs().max()
    mean_error = ((draws.mean(0) - reference.mean(0)).abs() / sd_ref).max()
    return float(mean_error), float(ratio.min()), float(ratio.median()), float(ratio.max()), float(corr_error)


def _elbo(family, log_target):
    """``(value, se, upper)``: exact for a flow or a Gaussian, SIVI's sandwich (K = 5000) for a semi-implicit fit."""
    import torch

    from helpers.estimators import standard_error
    from helpers.flows import RealNVP
    from helpers.semi_implicit import SemiImplicitGaussian, sivi_sandwich

    with torch.no_grad():
        if isinstance(family, SemiImplicitGaussian):
            lower, upper, se, _ = sivi_sandwich(log_target, family, S=2000, K=5000, with_se=True)
            return lower, se, upper
        if isinstance(family, RealNVP):
            z, log_q = family.rsample_with_log_prob(20_000)
        else:
            d = family.distribution()
            z = d.sample((20_000,))
            log_q = d.log_prob(z)
        values = log_target(z) - log_q
        return float(values.mean()), float(standard_error(values)), math.nan


def _draws(family, n=20_000):
    import torch

    from helpers.flows import RealNVP

    with torch.no_grad():
        if isinstance(family, RealNVP):
            return family.rsample_with_log_prob(n)[0]
        if hasattr(family, "distribution"):
            return family.distribution().sample((n,))
        return family.rsample(n)[0]


def run_one(method, seed, steps):
    import torch

    torch.set_num_threads(1)
    from helpers.estimators import elbo
    from helpers.families import FullRankGaussian
    from helpers.semi_implicit_fits import fit

    blr, reference = posterior()
    half = {}

    def at_half(result):
        state = torch.random.get_rng_state()  # scoring must not change the rest of the run's draws
        half["elbo"] = _elbo(result.family, blr.log_joint)[0]
        half["moments"] = moment_errors(_draws(result.family), reference)
        torch.random.set_rng_state(state)

    if method == "full-rank Gaussian":  # lesson 06's baseline: its ELBO, 64 draws, Adam from 0.01 to 0.0005
        torch.manual_seed(seed)
        family = FullRankGaussian(reference.shape[1], log_scale=-2.0)
        optimizer = torch.optim.Adam(family.parameters(), lr=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.05 ** (t / steps))  # maximize()'s
        seconds = 0.0
        for t in range(steps):
            start = time.process_time()  # CPU seconds, as helpers.semi_implicit_fits.fit counts them
            optimizer.zero_grad()
            (-elbo(blr.log_joint, family.distribution(), 64)).backward()  # loss = -elbo
            optimizer.step()
            schedule.step()
            seconds += time.process_time() - start
            if t + 1 == steps // 2:
                at_half(types.SimpleNamespace(family=family))
        run_steps = steps
    else:
        base, options = OPTIONS.get(method, (method, {}))
        result = fit(
            base, blr.log_joint, steps, seed, problem="logistic regression", checkpoint=(steps // 2, at_half), **options
        )
        family, seconds, run_steps = result.family, result.seconds, steps
    torch.manual_seed(1000 + seed)
    value, se, upper = _elbo(family, blr.log_joint)
    mean_error, lo, med, hi, corr_error = moment_errors(_draws(family), reference)
    return {
        "method": method,
        "seed": seed,
        "steps": run_steps,
        "train_seconds": f"{seconds:.1f}",
        "elbo_half": f"{half['elbo']:.4f}",
        "elbo": f"{value:.4f}",
        "elbo_se": f"{se:.4f}",
        "elbo_upper": "" if math.isnan(upper) else f"{upper:.4f}",
        "mean_error": f"{mean_error:.4f}",
        "sd_ratio_min": f"{lo:.4f}",
        "sd_ratio_median": f"{med:.4f}",
        "sd_ratio_max": f"{hi:.4f}",
        "corr_error": f"{corr_error:.4f}",
        "mean_error_half": f"{half['moments'][0]:.4f}",
        "corr_error_half": f"{half['moments'][4]:.4f}",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.successors_logistic", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (the 31-D noise ablations: one)")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--methods", default=",".join(METHODS), help="a subset, separated by commas")
    parser.add_argument("--merge", action="store_true", help="replace only these methods' rows in --out")
    parser.add_argument("--out", type=Path, default=ROOT / "helpers" / "data" / "successors_logistic.csv")
    args = parser.parse_args(argv)
    if min(args.seeds, args.steps, args.jobs) < 1:
        parser.error("--seeds, --steps and --jobs must be positive")
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    # the slowest first, so that two workers finish together
    jobs = [
        (m, seed, args.steps)
        for m in sorted(methods, key=lambda m: "UIVI" not in m)
        for seed in range(1 if m in ONE_SEED else args.seeds)
    ]
    start = time.perf_counter()
    rows = []
    for i, row in enumerate(run_jobs(run_one, jobs, args.jobs)):
        rows.append(row)
        print(
            f"[{i + 1}/{len(jobs)}] {row['method']:<19}seed {row['seed']}  {row['train_seconds']:>6} s  "
            f"ELBO {row['elbo']} (half {row['elbo_half']})  mean error {row['mean_error']}  "
            f"sd ratio {row['sd_ratio_min']}-{row['sd_ratio_max']}  corr error {row['corr_error']}",
            flush=True,
        )
    if args.merge and args.out.is_file():  # keep the other methods' rows of an earlier run
        with open(args.out, newline="") as handle:
            rows += [r for r in csv.DictReader(handle) if r["method"] not in methods]
    rows.sort(key=lambda r: (METHODS.index(r["method"]), int(r["seed"])))
    write_rows(args.out, COLUMNS, rows)
    print(f"{len(rows)} runs in {time.perf_counter() - start:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
