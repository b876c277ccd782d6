"""HMC recovers the moments of Gaussian targets whose answers are known, and
split-R-hat flags chains that disagree."""

import math

import torch

from helpers.hmc import hmc, split_rhat

F64 = torch.float64


def gaussian_target(mean, cov):
    prec = torch.linalg.inv(cov)

    def log_prob_and_grad(w):
        d = w - mean
        return -0.5 * ((d @ prec) * d).sum(-1), -(d @ prec)

    return log_prob_and_grad


def test_moments_of_a_correlated_gaussian():
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    A = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.3, 0.0], [-0.5, 0.2, 0.4]], dtype=F64)
    cov = A @ A.T  # correlations near 0.95: hard without preconditioning
    init = torch.randn(8, 3, generator=g, dtype=F64)
    samples, acc = hmc(
        gaussian_target(mean, cov), init, step_size=0.05, n_leapfrog=20, n_samples=1500, n_warmup=300, generator=g
    )
    assert samples.shape == (1500, 8, 3) and 0.6 < acc <= 1.0
    flat = samples.reshape(-1, 3)
    # Monte Carlo error of the mean: sd / sqrt(effective draws); allow a generous effective size
    se = cov.diagonal().sqrt() / math.sqrt(flat.shape[0] / 10)
    assert ((flat.mean(0) - mean).abs() < 4 * se).all()
    torch.testing.assert_close(torch.cov(flat.T), cov, atol=0.08, rtol=0.1)
    assert split_rhat(samples).max() < 1.02


def test_preconditioning_with_the_exact_cholesky_factor_mixes_in_one_step():
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([3.0, -1.0], dtype=F64)
    cov = torch.tensor([[4.0, 1.9], [1.9, 1.0]], dtype=F64)
    L = torch.linalg.cholesky(cov)
    samples, acc = hmc(
        gaussian_target(mean, cov),
        mean.expand(4, 2).clone(),
        step_size=0.8,
        n_leapfrog=3,
        n_samples=3000,
        scale_tril=L,
        generator=g,
    )
    flat = samples.reshape(-1, 2)
    assert acc > 0.8
    torch.testing.assert_close(flat.mean(0), mean, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(flat.T), cov, atol=0.15, rtol=0.05)


def test_split_rhat_flags_disagreeing_chains():
    g = torch.Generator().manual_seed(2)
    good = torch.randn(500, 4, 2, generator=g, dtype=F64)
    assert split_rhat(good).max() < 1.02
    bad = good + torch.tensor([0.0, 0.0, 3.0, 3.0], dtype=F64)[None, :, None]  # two chains elsewhere
    assert split_rhat(bad).min() > 1.3


def test_jitter_breaks_a_half_period_trajectory():
    # On N(0, I) a leapfrog trajectory of length pi is (close to) half a period: each iteration maps u to about
    # -u, so u^2 never moves and the variance stays wherever the chains started (here 4, not 1), however long
    # they run, while the means look perfect. A step drawn afresh from U(0.8, 1.2) x (pi / 6) breaks it.
    D, C = 4, 16
    target = gaussian_target(torch.zeros(D, dtype=F64), torch.eye(D, dtype=F64))
    init = 2 * torch.randn(C, D, generator=torch.Generator().manual_seed(3), dtype=F64)
    variances = {}
    for jitter in (0.0, 0.2):
        g = torch.Generator().manual_seed(4)
        samples, acc = hmc(target, init, math.pi / 6, 6, n_samples=1500, n_warmup=100, generator=g, jitter=jitter)
        assert acc > 0.9
        variances[jitter] = samples.reshape(-1, D).var(0)
    # With jitter the trajectory still turns by nearly pi, so u^2 mixes slowly; yet over 24 000 draws every
    # variance is 1 within 0.06 on three seeds (0.1 allowed). Without it the start's spread survives: the largest
    # error was 0.73 to 2.1 on the same seeds.
    assert ((variances[0.2] - 1).abs() < 0.1).all(), variances[0.2]
    assert ((variances[0.0] - 1).abs() > 0.3).any(), variances[0.0]


def test_jitter_is_checked():
    init = torch.zeros(2, 1, dtype=F64)
    target = gaussian_target(torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64))
    for bad in (-0.1, 1.0):
        try:
            hmc(target, init, 0.1, 2, 3, jitter=bad)
        except ValueError as error:
            assert "jitter" in str(error)
        else:
            raise AssertionError(f"jitter={bad} was accepted")
