"""The SIVI bound on a semi-implicit family whose marginal is Gaussian in closed form:
below the true ELBO, non-decreasing in K, and close to it for large K."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from helpers.semi_implicit import SemiImplicitGaussian, sivi_bound

F64 = torch.float64


def linear_family(mean=(0.5, -1.0), tau=1.2, sigma=0.4):
    # psi = mean + tau * eps, so q(z) = N(mean, (tau^2 + sigma^2) I) exactly
    mixing = nn.Linear(2, 2).to(F64)
    with torch.no_grad():
        mixing.weight.copy_(tau * torch.eye(2, dtype=F64))
        mixing.bias.copy_(torch.tensor(mean, dtype=F64))
    return SemiImplicitGaussian(mixing, noise_dim=2, sigma=sigma), torch.tensor(mean, dtype=F64), tau**2 + sigma**2


def target(z):
    return MultivariateNormal(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)).log_prob(z)


def exact_elbo(mean, var):
    q = MultivariateNormal(mean, var * torch.eye(2, dtype=F64))
    z = q.sample((400000,))
    return float((target(z) - q.log_prob(z)).mean())


def test_bound_is_below_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    q, mean, var = linear_family()
    elbo = exact_elbo(mean, var)
    values = {}
    with torch.no_grad():
        for K in (1, 10, 100, 1000):
            draws = torch.stack([sivi_bound(target, q, 200, K) for _ in range(100)])
            values[K] = (float(draws.mean()), float(draws.std()) / math.sqrt(len(draws)))
    means = [values[K][0] for K in (1, 10, 100, 1000)]
    assert all(a < b for a, b in zip(means[:-1], means[1:], strict=True)), values
    assert means[-1] < elbo + 3 * values[1000][1] + 0.01
    assert elbo - means[-1] < 0.1 * (elbo - means[0])  # most of the gap closed by K = 1000


def test_marginal_draws_have_the_closed_form_moments():
    torch.manual_seed(1)
    q, mean, var = linear_family()
    with torch.no_grad():
        z, psi = q.rsample(100000)
    torch.testing.assert_close(z.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), var * torch.eye(2, dtype=F64), atol=0.03, rtol=0)


def test_gradients_reach_the_mixing_network():
    q = SemiImplicitGaussian.mlp()
    sivi_bound(lambda z: -0.5 * (z**2).sum(-1), q, 8, 5).backward()
    assert all(p.grad is not None for p in q.parameters())
    with pytest.raises(ValueError, match="sigma"):
        SemiImplicitGaussian(nn.Linear(2, 2), 2, sigma=0.0)
