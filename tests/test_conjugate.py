"""helpers.conjugate.NormalNormal against independent references in float64."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from helpers.conjugate import NormalNormal

F64 = torch.float64


@pytest.fixture
def problem():
    model = NormalNormal(prior_mean=0.5, prior_std=1.7, noise_std=0.8)
    x = torch.tensor([1.2, -0.3, 2.2, 0.9, 1.5, 0.1, 1.1], dtype=F64)
    return model, x


def test_log_evidence_matches_dense_multivariate_normal(problem):
    model, x = problem
    N = x.numel()
    cov = model.noise_std**2 * torch.eye(N, dtype=F64) + model.prior_std**2 * torch.ones(N, N, dtype=F64)
    ref = MultivariateNormal(torch.full((N,), model.prior_mean, dtype=F64), covariance_matrix=cov).log_prob(x)
    torch.testing.assert_close(model.log_evidence(x), ref, rtol=1e-12, atol=1e-12)


def test_posterior_and_evidence_by_quadrature(problem):
    model, x = problem
    z = torch.linspace(-10, 10, 400_001, dtype=F64)
    log_joint = model.log_joint(x, z)
    log_evidence = torch.logsumexp(log_joint, 0) + math.log(float(z[1] - z[0]))  # Riemann sum
    torch.testing.assert_close(log_evidence, model.log_evidence(x), rtol=0, atol=1e-9)
    post = (log_joint - log_evidence).exp()
    mean = torch.trapezoid(z * post, z)
    std = torch.trapezoid((z - mean) ** 2 * post, z).sqrt()
    m_N, s_N = model.posterior(x)
    torch.testing.assert_close(m_N, mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(s_N, std, rtol=0, atol=1e-9)


def test_log_joint_pieces_match_torch(problem):
    model, x = problem
    z = torch.tensor([[-1.0, 0.3], [2.0, 5.0]], dtype=F64)
    ref_prior = Normal(torch.tensor(model.prior_mean, dtype=F64), model.prior_std).log_prob(z)
    ref_lik = Normal(z.unsqueeze(-1), model.noise_std).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_prior(z), ref_prior)
    torch.testing.assert_close(model.log_likelihood(x, z), ref_lik)
    assert model.log_joint(x, z).shape == (2, 2)


def test_gaussian_elbo_identity_and_monte_carlo(problem):
    model, x = problem
    m_N, s_N = model.posterior(x)
    m = torch.tensor([-1.0, 0.4, 2.0], dtype=F64)
    s = torch.tensor([0.1, 0.5, 2.0], dtype=F64)
    elbo = model.gaussian_elbo(m, s, x)
    kl = kl_divergence(Normal(m, s), Normal(m_N.expand(3), s_N.expand(3)))
    torch.testing.assert_close(elbo + kl, model.log_evidence(x).expand(3), rtol=0, atol=1e-10)
    # and by brute-force Monte Carlo with torch.distributions
    g = torch.Generator().manual_seed(0)
    S = 200_000
    z = m + s * torch.randn(S, 3, generator=g, dtype=F64)
    terms = model.log_joint(x, z) - Normal(m, s).log_prob(z)
    se = terms.std(0) / math.sqrt(S)
    assert ((terms.mean(0) - elbo).abs() < 4 * se).all()


def test_posterior_maximises_elbo(problem):
    model, x = problem
    m_N, s_N = model.posterior(x)
    torch.testing.assert_close(model.gaussian_elbo(m_N, s_N, x), model.log_evidence(x), rtol=0, atol=1e-10)


def test_sample_shapes_and_reproducibility():
    model = NormalNormal(0.0, 2.0, 1.0)
    z1, x1 = model.sample(5, generator=torch.Generator().manual_seed(3))
    z2, x2 = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert z1.shape == () and x1.shape == (5,)
    assert torch.equal(x1, x2) and torch.equal(z1, z2)


@pytest.mark.parametrize(
    "kwargs", [{"prior_std": 0.0}, {"noise_std": -1.0}, {"prior_std": float("nan")}, {"noise_std": "1"}]
)
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError, match="must be a positive finite number"):
        NormalNormal(**kwargs)


def test_bad_data_shape_is_rejected():
    with pytest.raises(ValueError, match="1-D tensor"):
        NormalNormal().posterior(torch.ones(2, 3))


def test_expected_terms_match_monte_carlo(problem):
    model, x = problem
    m, s = torch.tensor(0.4, dtype=F64), torch.tensor(0.7, dtype=F64)
    z = m + s * torch.randn(400_000, generator=torch.Generator().manual_seed(1), dtype=F64)
    for exact, draws in [
        (model.expected_log_likelihood(m, s, x), model.log_likelihood(x, z)),
        (model.expected_log_prior(m, s), model.log_prior(z)),
    ]:
        assert abs(float(draws.mean() - exact)) < 4 * float(draws.std()) / math.sqrt(z.numel())
