"""The SIVI bounds on a semi-implicit family whose marginal is Gaussian in closed form:
the lower bound below the true ELBO and non-decreasing in K, the upper bound above it and
non-increasing, both close to it for large K; the conditional against torch.distributions."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from helpers.semi_implicit import (
    SemiImplicitGaussian,
    dsivi_bound,
    log_density_estimate,
    sivi_bound,
    sivi_sandwich,
    sivi_upper_bound,
)

F64 = torch.float64
MEAN, TAU, SIGMA = torch.tensor([0.5, -1.0], dtype=F64), 1.2, 0.4


def target(z):
    return MultivariateNormal(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)).log_prob(z)


def exact_elbo(mean=MEAN, var=TAU**2 + SIGMA**2):
    # E_q[log p] in closed form for Gaussian q and p, plus the entropy of q: no Monte Carlo error
    q = MultivariateNormal(mean, var * torch.eye(2, dtype=F64))
    p = MultivariateNormal(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64))
    return float(-torch.distributions.kl_divergence(q, p) + 0)  # p normalised: ELBO = -KL(q || p)


def estimates(estimator, q, K, reps=100, S=200):
    with torch.no_grad():
        draws = torch.stack([estimator(target, q, S, K) for _ in range(reps)])
    return float(draws.mean()), float(draws.std()) / math.sqrt(reps)


def test_lower_bound_is_below_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    q, elbo = SemiImplicitGaussian.linear(MEAN, TAU, SIGMA), exact_elbo()
    values = {K: estimates(sivi_bound, q, K) for K in (0, 1, 10, 100, 1000)}
    means = [values[K][0] for K in values]
    assert all(a < b for a, b in zip(means[:-1], means[1:], strict=True)), values
    assert means[-1] < elbo + 3 * values[1000][1], (means, elbo)
    assert elbo - means[-1] < 0.1 * (elbo - values[1][0])  # most of the gap closed by K = 1000


def test_upper_bound_is_above_the_elbo_and_tightens_with_k():
    torch.manual_seed(1)
    q, elbo = SemiImplicitGaussian.linear(MEAN, TAU, SIGMA), exact_elbo()
    values = {K: estimates(sivi_upper_bound, q, K) for K in (1, 10, 100, 1000)}
    means = [values[K][0] for K in values]
    assert all(a > b for a, b in zip(means[:-1], means[1:], strict=True)), values
    assert means[-1] > elbo - 3 * values[1000][1], (means, elbo)
    assert means[-1] - elbo < 0.1 * (values[1][0] - elbo)


def test_sandwich_brackets_the_elbo_and_matches_the_separate_estimators():
    torch.manual_seed(2)
    q, elbo = SemiImplicitGaussian.linear(MEAN, TAU, SIGMA), exact_elbo()
    lower, upper = sivi_sandwich(target, q, S=20000, K=300, chunk=777)  # chunks of unequal size
    assert lower < elbo < upper
    for value, estimator in ((lower, sivi_bound), (upper, sivi_upper_bound)):
        mean, se = estimates(estimator, q, 300, reps=40, S=500)
        assert abs(value - mean) < 4 * (se + 0.01 / 4), (value, mean, se)


def test_linear_family_has_the_closed_form_moments():
    torch.manual_seed(3)
    q = SemiImplicitGaussian.linear(MEAN, TAU, SIGMA)
    with torch.no_grad():
        z, psi = q.rsample(100000)
    torch.testing.assert_close(z.mean(0), MEAN, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), (TAU**2 + SIGMA**2) * torch.eye(2, dtype=F64), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(psi.T), TAU**2 * torch.eye(2, dtype=F64), atol=0.03, rtol=0)


def test_log_conditional_matches_torch_distributions():
    q = SemiImplicitGaussian.mlp(L=3, noise_dim=4, hidden=(5,), sigma=0.3, learn_sigma=True).to(F64)
    with torch.no_grad():
        q.log_sigma.copy_(torch.tensor([-1.0, 0.2, 0.5], dtype=F64))
    z, psi = torch.randn(6, 1, 3, dtype=F64), torch.randn(1, 5, 3, dtype=F64)
    reference = Normal(psi, q.log_sigma.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(q.log_conditional(z, psi), reference)
    assert q.log_conditional(z, psi).shape == (6, 5)


def test_gradients_reach_the_mixing_network_and_a_learned_sigma():
    q = SemiImplicitGaussian.mlp(learn_sigma=True)
    sivi_bound(lambda z: -0.5 * (z**2).sum(-1), q, 8, 5).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.parameters())
    fixed = SemiImplicitGaussian.mlp()
    assert "log_sigma" not in dict(fixed.named_parameters()) and fixed.sigma.shape == (2,)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sigma"):
        SemiImplicitGaussian(nn.Linear(2, 2), 2, 2, sigma=0.0)
    with pytest.raises(ValueError, match="L must"):
        SemiImplicitGaussian(nn.Linear(2, 2), 2, 0)
    q = SemiImplicitGaussian.mlp()
    with pytest.raises(ValueError, match="K must"):
        sivi_upper_bound(target, q, 4, 0)
    with pytest.raises(ValueError, match="S must"):
        sivi_bound(target, q, 0, 3)


def test_log_density_estimate_converges_to_the_closed_form_marginal():
    torch.manual_seed(4)
    q = SemiImplicitGaussian.linear(MEAN, TAU, SIGMA)
    z = torch.tensor([[0.0, 0.0], [0.5, -1.0], [2.0, 1.0], [-1.0, -3.0]], dtype=F64)
    exact = MultivariateNormal(MEAN, (TAU**2 + SIGMA**2) * torch.eye(2, dtype=F64)).log_prob(z)
    estimate = log_density_estimate(q, z, K=200000, chunk=3)
    torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)
    rough = torch.stack([log_density_estimate(q, z, K=5) for _ in range(400)]).mean(0)
    assert (rough < exact).all()  # Jensen: below log q(z) on average at small K


def test_dsivi_bound_is_below_the_log_evidence_and_reaches_it():
    # prior p(z) = int N(z; zeta, 0.5^2 I) N(zeta; 0, 0.8^2 I) = N(0, 0.89 I); x | z ~ N(z, I), one observation
    torch.manual_seed(5)
    v, x = 0.8**2 + 0.5**2, torch.tensor([1.0, -0.5], dtype=F64)
    prior = SemiImplicitGaussian.linear(torch.zeros(2, dtype=F64), 0.8, 0.5)
    log_evidence = MultivariateNormal(torch.zeros(2, dtype=F64), (v + 1) * torch.eye(2, dtype=F64)).log_prob(x)
    post_mean, post_var = v / (v + 1) * x, v / (v + 1)
    q = SemiImplicitGaussian.linear(post_mean, math.sqrt(post_var - 0.3**2), 0.3)  # the exact posterior

    def log_likelihood(z):
        return MultivariateNormal(z, torch.eye(2, dtype=F64)).log_prob(x)

    values = []
    with torch.no_grad():
        for K in (1, 10, 1000):
            draws = torch.stack([dsivi_bound(log_likelihood, prior, q, 500, K) for _ in range(40)])
            values.append((draws.mean().item(), draws.std().item() / math.sqrt(40)))
    assert all(m < log_evidence + 3 * se for m, se in values)
    assert values[0][0] < values[1][0] < values[2][0]
    assert log_evidence - values[2][0] < 0.02


def test_sandwich_standard_errors_match_the_spread_of_repeats():
    torch.manual_seed(6)
    q = SemiImplicitGaussian.linear(MEAN, TAU, SIGMA)
    lower, upper, se_lower, se_upper = sivi_sandwich(target, q, S=1000, K=1000, with_se=True)
    repeats = torch.tensor([sivi_sandwich(target, q, S=1000, K=1000) for _ in range(30)])
    assert 0.6 < repeats[:, 0].std().item() / se_lower < 1.6
    assert 0.6 < repeats[:, 1].std().item() / se_upper < 1.6


def _full_family(seed=0):
    """A linear mixing map and a full conditional covariance C C^T: the marginal is N(m, tau^2 I + C C^T)."""
    q = SemiImplicitGaussian(nn.Linear(2, 2).to(F64), 2, 2, sigma=0.5, learn_sigma=True, full_covariance=True)
    with torch.no_grad():
        q.mixing.weight.copy_(TAU * torch.eye(2, dtype=F64))
        q.mixing.bias.copy_(MEAN)
        q.log_sigma.copy_(torch.tensor([-0.3, -0.9], dtype=F64))
        q.below_diagonal.copy_(torch.tensor([0.6], dtype=F64))
    return q


def test_full_covariance_conditional_matches_torch_distributions():
    q = _full_family()
    C = q.scale_tril()
    expected_C = torch.tensor([[math.exp(-0.3), 0.0], [0.6, math.exp(-0.9)]], dtype=F64)
    torch.testing.assert_close(C, expected_C)
    torch.testing.assert_close(q.sigma, (expected_C @ expected_C.T).diagonal().sqrt())
    torch.manual_seed(0)
    z, psi = torch.randn(5, 1, 2, dtype=F64), torch.randn(1, 7, 2, dtype=F64)
    reference = MultivariateNormal(psi, scale_tril=expected_C).log_prob(z)  # (5, 7), broadcast as in the bounds
    torch.testing.assert_close(q.log_conditional(z, psi), reference)


def test_full_covariance_draws_have_the_conditional_covariance():
    q = _full_family()
    torch.manual_seed(1)
    with torch.no_grad():
        z, psi = q.rsample(200_000)
    C = q.scale_tril().detach()
    # z - psi ~ N(0, C C^T): the sample covariance is within a few standard errors (about 0.005) of C C^T
    torch.testing.assert_close(torch.cov((z - psi).T), C @ C.T, atol=0.02, rtol=0)


def test_sandwich_brackets_the_exact_elbo_with_a_full_conditional():
    q = _full_family()
    C = q.scale_tril().detach()
    marginal = MultivariateNormal(MEAN, TAU**2 * torch.eye(2, dtype=F64) + C @ C.T)
    p = MultivariateNormal(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64))
    exact = float(-torch.distributions.kl_divergence(marginal, p))
    torch.manual_seed(2)
    lower, se_lower = estimates(sivi_bound, q, K=20)
    upper, se_upper = estimates(sivi_upper_bound, q, K=20)
    assert lower < exact < upper
    lower_big, _ = estimates(sivi_bound, q, K=2000, reps=20)
    assert exact - lower_big < 0.25 * (exact - lower)  # the gap closes as K grows


def test_full_covariance_gradients_reach_the_cholesky_factor():
    q = _full_family()
    torch.manual_seed(3)
    sivi_bound(target, q, 16, 4).backward()
    for name in ("below_diagonal", "log_sigma"):
        grad = getattr(q, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_full_covariance_needs_a_learned_factor():
    with pytest.raises(ValueError, match="learn_sigma=True"):
        SemiImplicitGaussian(nn.Linear(2, 2), 2, 2, full_covariance=True)
