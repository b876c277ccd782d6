"""``python -m benchmarks.sivi_2d_seeds``: lesson 06's SIVI fits of the three 2-D targets, over more seeds.

Lesson 06 fits SIVI once per target (seeds 10, 11, 12), with its own settings: the paper's 2-D family (10-D
noise, ReLU 40-60-40) with a *learned* sigma from 0.3, S = 64 draws of z and K = 50 extra draws of psi a
step, Adam from 4e-3 decaying to a tenth over 1500 steps. This reruns exactly those fits from ``--seeds``
other seeds (100, 101, ... by default) and writes each fit's sandwich (the SIVI lower and upper bounds on its
ELBO with K = 5000 and 2000 draws of z), its learned sigma and its training time to
``helpers/data/sivi_2d_seeds.csv``, which lesson 06 reads to say, seed by seed, whether SIVI beats the best
Gaussian under these settings. Lesson 08's ``successors_2d.csv`` holds the same comparison under the
settings of the authors' ``SIVI_2d.py`` (sigma fixed at 0.1, Adam at 1e-3 x 0.75^(t/100), 5000 steps).
About a minute on one core.
"""

import sys
import time

from benchmarks.studies import seed_study_arguments, write_rows

COLUMNS = ["target", "seed", "lower", "upper", "sigma_1", "sigma_2", "train_seconds"]


def run_seed(target, seed):
    """Lesson 06's cell ``sivi-fits`` for one target and seed; one CSV row."""
    import torch

    from helpers.semi_implicit import SemiImplicitGaussian, sivi_bound, sivi_sandwich
    from helpers.targets import TARGETS
    from helpers.training import maximize

    log_p = TARGETS[target]
    torch.manual_seed(seed)
    start = time.perf_counter()
    q = SemiImplicitGaussian.mlp(L=2, noise_dim=10, hidden=(40, 60, 40), sigma=0.3, learn_sigma=True)
    maximize(lambda: sivi_bound(log_p, q, 64, 50), q.parameters(), steps=1500, lr=4e-3, final_lr_factor=0.1)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        lower, upper = sivi_sandwich(log_p, q, S=2000, K=5000)
        sigma = q.sigma.tolist()
    return {
        "target": target,
        "seed": seed,
        "lower": f"{float(lower):.4f}",
        "upper": f"{float(upper):.4f}",
        "sigma_1": f"{sigma[0]:.3f}",
        "sigma_2": f"{sigma[1]:.3f}",
        "train_seconds": f"{seconds:.1f}",
    }


def main(argv=None):
    args = seed_study_arguments("python -m benchmarks.sivi_2d_seeds", __doc__, "sivi_2d_seeds.csv", argv)
    import torch

    from helpers.targets import TARGETS

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)  # lesson 06's dtype
    rows = []
    for target in TARGETS:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row = run_seed(target, seed)
            rows.append(row)
            print(f"{target:<18} seed {seed}  lower {row['lower']}  upper {row['upper']}", flush=True)
    write_rows(args.out, COLUMNS, rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
