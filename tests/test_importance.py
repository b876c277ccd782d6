"""Self-normalised importance sampling against closed forms and Pyro's multivariate t."""

import math

import pyro.distributions as pdist
import pytest
import torch

from helpers.importance import MultivariateT, importance_moments

F64 = torch.float64


def _problem():
    loc = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    A = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.4, 0.5]], dtype=F64)
    return loc, A


def test_log_prob_matches_pyro():
    loc, L = _problem()
    t = MultivariateT(loc, L, df=5)
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 3
    reference = pdist.MultivariateStudentT(torch.tensor(5.0, dtype=F64), loc, L).log_prob(z)
    torch.testing.assert_close(t.log_prob(z), reference)
    torch.testing.assert_close(t.log_prob(z.reshape(5, 10, 3)), reference.reshape(5, 10))


def test_draws_have_the_t_covariance():
    loc, L = _problem()
    z = MultivariateT(loc, L, df=7).sample(200_000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z.mean(0), loc, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), L @ L.T * 7 / 5, atol=0.04, rtol=0.03)  # nu / (nu - 2) LL^T


def test_moments_of_a_gaussian_target_and_the_ess():
    loc, L = _problem()
    cov = L @ L.T
    target = torch.distributions.MultivariateNormal(loc, scale_tril=L)

    def log_target(z):  # unnormalised, and shifted far from 0: the running shift must keep every weight finite
        return target.log_prob(z) + 1000.0

    proposal = MultivariateT(loc + 0.3, 1.5 * L, df=5)
    est = importance_moments(log_target, proposal, 100_000, chunk=7_000, generator=torch.Generator().manual_seed(2))
    assert 20_000 < est.ess < 100_000 and est.n == 100_000
    se = cov.diagonal().sqrt() / math.sqrt(est.ess)
    assert ((est.mean - loc).abs() < 5 * se).all()
    torch.testing.assert_close(est.cov, cov, atol=0.04, rtol=0.04)
    torch.testing.assert_close(est.corr.diagonal(), torch.ones(3, dtype=F64))


def test_a_proposal_equal_to_the_target_has_full_ess():
    loc, L = _problem()
    t = MultivariateT(loc, L, df=4)
    est = importance_moments(t.log_prob, t, 5_000, generator=torch.Generator().manual_seed(3))
    assert est.ess == pytest.approx(5_000)


def test_bad_input_is_named():
    loc, L = _problem()
    with pytest.raises(ValueError, match="df"):
        MultivariateT(loc, L, df=2.5)
    with pytest.raises(ValueError, match="scale_tril"):
        MultivariateT(loc, L[:2, :2], df=3)
    with pytest.raises(ValueError, match="n must"):
        importance_moments(lambda z: z.sum(-1), MultivariateT(loc, L, df=3), 0)
    with pytest.raises(ValueError, match="not finite"):
        importance_moments(lambda z: torch.full(z.shape[:1], -math.inf), MultivariateT(loc, L, df=3), 10)
