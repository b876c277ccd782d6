"""``python -m benchmarks.semi_implicit_vae``: lesson 07's semi-implicit and Gaussian VAEs, trained to their plateau.

Lesson 07 trains both for 40 epochs, on one seed, inside its one-minute budget: early training. This trains
the same two models (the same data, decoder, initial weights, optimiser, batches and SIVI surrogate with
``K = 10``) for ``--epochs`` epochs from ``--seeds`` seeds, and at each checkpoint records the seconds of
training so far, the training average of the objective, and the importance-weighted bound on the validation
and on the test digits (``M = 200`` draws; ``K_psi = 50`` extra mixing draws for the semi-implicit one, whose
bound is a true lower bound, lesson 07), and the share of the variance of :math:`q(z\\mid x)` carried by the
mixing variable. Training has reached its plateau when the validation bound stops rising: the table says
at which epoch it peaks. One torch thread; about 2 minutes a seed at 1000 epochs on this course's 2-core CPU.

Writes ``helpers/data/semi_implicit_vae.csv``, which lesson 07 prints.
"""

import argparse
import math
import sys
import time
from pathlib import Path

from benchmarks.studies import write_rows

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    "seed",
    "model",
    "epoch",
    "train_seconds",
    "train_objective",
    "val_bound",
    "test_bound",
    "test_se",
    "psi_share",
]
CHECKPOINTS = (20, 40, 80, 150, 300, 500, 750, 1000, 1500, 2000)


def _evaluate(model, x, semi_implicit):
    import torch

    with torch.no_grad():
        if semi_implicit:
            return model.iw_bound(x, 200, K_psi=50)
        return model.iwae_bound(x, 200)


def _psi_share(model, x):
    """Median over digits and coordinates of Var(psi | x) / (Var(psi | x) + sigma(x)^2), as lesson 07 prints it."""
    import torch

    with torch.no_grad():
        features, mean, log_scale = model.encoder(x)
        psi = model.encoder.sample_psi(features, mean, 500)
        return float((psi.var(0) / (psi.var(0) + (2 * log_scale).exp())).median())


def run_seed(seed, epochs, checkpoints):
    import torch

    from helpers.datasets import load_digits
    from helpers.estimators import standard_error
    from helpers.semi_implicit_vae import SemiImplicitVAE
    from helpers.vae import VAE

    digits = load_digits()
    x_train, x_val, x_test = digits.x_train, digits.x_val, digits.x_test
    torch.manual_seed(seed)
    gaussian = VAE(D=64, L=8, hidden=(256, 256))
    sivi = SemiImplicitVAE(D=64, L=8, hidden=(256, 256), noise_dim=8)
    sivi.encoder.gaussian.load_state_dict(gaussian.encoder.state_dict())  # as lesson 07: the same start
    sivi.decoder.load_state_dict(gaussian.decoder.state_dict())
    rows = []
    for name, model in (("Gaussian", gaussian), ("semi-implicit", sivi)):
        semi_implicit = name == "semi-implicit"
        objective = (lambda m, x: m.surrogate_elbo(x, K=10)) if semi_implicit else (lambda m, x: m.elbo(x))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as lesson 07
        torch.manual_seed(100 + seed)  # as lesson 07: the same batches for both models
        seconds = 0.0
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            order = torch.randperm(len(x_train))
            total = 0.0
            for first in range(0, len(x_train), 128):
                terms = objective(model, x_train[order[first : first + 128]])
                loss = -terms.mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += terms.sum().item()
            seconds += time.perf_counter() - start
            if epoch in checkpoints or epoch == epochs:
                state = torch.random.get_rng_state()  # evaluating must not change the training's draws
                torch.manual_seed(2)
                val, test = _evaluate(model, x_val, semi_implicit), _evaluate(model, x_test, semi_implicit)
                share = _psi_share(model, x_test) if semi_implicit else math.nan
                torch.random.set_rng_state(state)
                rows.append(
                    {
                        "seed": seed,
                        "model": name,
                        "epoch": epoch,
                        "train_seconds": f"{seconds:.1f}",
                        "train_objective": f"{total / len(x_train):.3f}",
                        "val_bound": f"{val.mean():.3f}",
                        "test_bound": f"{test.mean():.3f}",
                        "test_se": f"{standard_error(test):.3f}",
                        "psi_share": "" if math.isnan(share) else f"{share:.4f}",
                    }
                )
                print(
                    f"seed {seed}  {name:<14} epoch {epoch:>4}  {seconds:7.1f} s  train {total / len(x_train):9.3f}  "
                    f"val {val.mean():9.3f}  test {test.mean():9.3f}  psi share {share:.4f}",
                    flush=True,
                )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.semi_implicit_vae", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "helpers" / "data" / "semi_implicit_vae.csv")
    args = parser.parse_args(argv)
    if min(args.seeds, args.epochs) < 1:
        parser.error("--seeds and --epochs must be positive")
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        rows += run_seed(seed, args.epochs, CHECKPOINTS)
    write_rows(args.out, COLUMNS, rows)
    print(f"{len(rows)} rows in {time.perf_counter() - start:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
