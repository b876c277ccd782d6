"""``python -m benchmarks.sivi_logistic_seeds``: lesson 06's full-rank Gaussian against SIVI with the paper's family,
on the 31-dimensional logistic regression, over several seeds.

Lesson 06 fits each once (seed 6); this reruns the two fits that decide its verdict, with the lesson's own
settings, from ``--seeds`` seeds, and writes each fit's ELBO (full rank: exact log q, 20 000 draws) or SIVI
lower and upper bounds (``K = 5000``, 2000 draws), with their Monte Carlo standard errors, to
``helpers/data/sivi_logistic_seeds.csv``, which lesson 06 reads. About 30 s a seed on one core.
"""

import sys
import time

from benchmarks.studies import seed_study_arguments, write_rows

COLUMNS = ["seed", "family", "value", "se", "upper", "se_upper", "train_seconds"]


def run_seed(seed):
    import torch

    from helpers.datasets import load_breast_cancer
    from helpers.estimators import elbo, standard_error
    from helpers.families import FullRankGaussian
    from helpers.logistic_regression import BayesianLogisticRegression
    from helpers.semi_implicit import SemiImplicitGaussian, sivi_bound, sivi_sandwich
    from helpers.training import maximize

    data = load_breast_cancer()  # float32, as lesson 06 (setup_notebook's default)
    blr = BayesianLogisticRegression(data.X_train, data.y_train, prior_std=1.0)
    D = data.X_train.shape[1]
    torch.manual_seed(seed)
    start = time.perf_counter()
    q_fr = FullRankGaussian(D, log_scale=-2.0)
    maximize(lambda: elbo(blr.log_joint, q_fr.distribution(), 64), q_fr.parameters(), steps=3000, lr=0.01)
    fr_seconds = time.perf_counter() - start
    start = time.perf_counter()
    q = SemiImplicitGaussian.mlp(
        L=D, noise_dim=20, hidden=(100, 200, 100), sigma=0.1, learn_sigma=True, full_covariance=True
    )
    maximize(
        lambda: sivi_bound(blr.log_joint, q, 50, 100),
        q.parameters(),
        steps=1500,
        lr=0.01,
        final_lr_factor=0.9 ** (1500 / 100),
    )
    sivi_seconds = time.perf_counter() - start
    with torch.no_grad():
        d = q_fr.distribution()
        w = d.sample((20000,))
        values = blr.log_joint(w) - d.log_prob(w)
        lower, upper, se_lower, se_upper = sivi_sandwich(blr.log_joint, q, S=2000, K=5000, with_se=True)
    return [
        {
            "seed": seed,
            "family": "full rank",
            "value": f"{values.mean().item():.4f}",
            "se": f"{standard_error(values).item():.4f}",
            "upper": "",
            "se_upper": "",
            "train_seconds": f"{fr_seconds:.1f}",
        },
        {
            "seed": seed,
            "family": "SIVI, paper's",
            "value": f"{lower:.4f}",
            "se": f"{se_lower:.4f}",
            "upper": f"{upper:.4f}",
            "se_upper": f"{se_upper:.4f}",
            "train_seconds": f"{sivi_seconds:.1f}",
        },
    ]


def main(argv=None):
    args = seed_study_arguments("python -m benchmarks.sivi_logistic_seeds", __doc__, "sivi_logistic_seeds.csv", argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for row in run_seed(seed):
            rows.append(row)
            print(f"seed {seed}  {row['family']:<14} {row['value']} ({row['se']})  upper {row['upper']}", flush=True)
    write_rows(args.out, COLUMNS, rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
