"""helpers.mixture: the closed-form ELBO against Monte Carlo, and the CAVI updates as coordinate optima."""

import math

import torch
from torch.distributions import Categorical, Normal

from helpers.mixture import mixture_elbo, sample_mixture, update_components, update_responsibilities

F64 = torch.float64


def setting():
    torch.set_default_dtype(F64)
    try:
        x, c, mu = sample_mixture(40, 3, D=2, prior_std=4.0, seed=0)
    finally:
        torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(1)
    phi = torch.softmax(torch.randn(40, 3, generator=g, dtype=F64), -1)
    m = torch.randn(3, 2, generator=g, dtype=F64) * 3
    s2 = torch.tensor([0.2, 0.5, 1.5], dtype=F64)
    return x, phi, m, s2


def test_elbo_matches_monte_carlo():
    x, phi, m, s2 = setting()
    S = 100_000
    torch.manual_seed(0)
    mu = m + s2.sqrt().unsqueeze(-1) * torch.randn(S, 3, 2, dtype=F64)  # (S, K, D)
    c = Categorical(probs=phi).sample((S,))  # (S, N)
    mu_c = torch.gather(mu, 1, c.unsqueeze(-1).expand(S, 40, 2))  # (S, N, D)
    log_p = Normal(0.0, 4.0).log_prob(mu).sum((-1, -2)) - 40 * math.log(3) + Normal(mu_c, 1.0).log_prob(x).sum((-1, -2))
    log_q = Normal(m, s2.sqrt().unsqueeze(-1)).log_prob(mu).sum((-1, -2)) + Categorical(probs=phi).log_prob(c).sum(-1)
    terms = log_p - log_q
    elbo = mixture_elbo(x, phi, m, s2, 4.0)
    assert abs(float(terms.mean() - elbo)) < 4 * float(terms.std()) / math.sqrt(S)


def test_updates_are_coordinate_optima_and_increase_the_elbo():
    x, phi, m, s2 = setting()
    before = mixture_elbo(x, phi, m, s2, 4.0)
    phi_new = update_responsibilities(x, m, s2)
    after_phi = mixture_elbo(x, phi_new, m, s2, 4.0)
    assert after_phi >= before
    torch.testing.assert_close(phi_new.sum(-1), torch.ones(40, dtype=F64))
    g = torch.Generator().manual_seed(2)
    for _ in range(5):  # any other valid responsibilities are worse
        other = torch.softmax(torch.log(phi_new) + 0.1 * torch.randn(40, 3, generator=g, dtype=F64), -1)
        assert mixture_elbo(x, other, m, s2, 4.0) < after_phi
    m_new, s2_new = update_components(x, phi_new, 4.0)
    best = mixture_elbo(x, phi_new, m_new, s2_new, 4.0)
    assert best >= after_phi
    for dm, fs in [(0.01, 1.0), (-0.01, 1.0), (0.0, 1.05), (0.0, 0.95)]:
        assert mixture_elbo(x, phi_new, m_new + dm, s2_new * fs, 4.0) < best


def test_responsibilities_are_stable_far_from_the_means():
    m = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=F64)
    x = torch.tensor([[1e4, 0.0]], dtype=F64)
    phi = update_responsibilities(x, m, torch.ones(2, dtype=F64))
    assert torch.isfinite(phi).all() and torch.allclose(phi, torch.tensor([[0.0, 1.0]], dtype=F64))
