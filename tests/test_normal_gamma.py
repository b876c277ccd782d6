"""helpers.normal_gamma against torch.distributions, quadrature and Monte Carlo, in float64."""

import math

import pytest
import torch
from torch.distributions import Gamma, Normal

from helpers.normal_gamma import NormalGamma

F64 = torch.float64


@pytest.fixture
def problem():
    model = NormalGamma(mu0=0.5, lambda0=2.0, a0=2.0, b0=1.5)
    x = torch.tensor([1.2, -0.3, 2.2, 0.9, 1.5, 0.1, 1.1, 0.4], dtype=F64)
    return model, x


def test_posterior_and_evidence_by_quadrature(problem):
    model, x = problem
    mu = torch.linspace(-3, 4, 1401, dtype=F64)
    tau = torch.linspace(1e-4, 6, 1500, dtype=F64)
    M, T = torch.meshgrid(mu, tau, indexing="ij")
    log_joint = model.log_joint(x, M, T)
    cell = float((mu[1] - mu[0]) * (tau[1] - tau[0]))
    log_evidence = torch.logsumexp(log_joint.flatten(), 0) + math.log(cell)
    torch.testing.assert_close(log_evidence, model.log_evidence(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(model.log_posterior(x, M, T), log_joint - model.log_evidence(x), rtol=0, atol=1e-9)
    post = (log_joint - log_evidence).exp() * cell
    mean_mu = (post * M).sum()
    var_mu = (post * (M - mean_mu) ** 2).sum()
    torch.testing.assert_close(var_mu, model.posterior_mean_variance(x), rtol=1e-4, atol=0)


def test_mean_field_elbo_matches_monte_carlo_and_bounds_evidence(problem):
    model, x = problem
    params = [torch.tensor(v, dtype=F64) for v in (0.9, 15.0, 6.0, 5.0)]
    elbo = model.mean_field_elbo(x, *params)
    g = torch.Generator().manual_seed(0)
    S = 400_000
    mu_N, lambda_N, a_N, b_N = params
    mu = mu_N + torch.randn(S, generator=g, dtype=F64) / lambda_N.sqrt()
    torch.manual_seed(1)
    tau = Gamma(a_N, b_N).sample((S,))
    terms = model.log_joint(x, mu, tau) - Normal(mu_N, lambda_N.rsqrt()).log_prob(mu) - Gamma(a_N, b_N).log_prob(tau)
    assert abs(float(terms.mean() - elbo)) < 4 * float(terms.std()) / math.sqrt(S)
    assert elbo < model.log_evidence(x)


def test_cavi_updates_increase_the_elbo_and_reach_the_closed_form_fixed_point(problem):
    model, x = problem
    mu_N, lambda_N = torch.tensor(-1.0, dtype=F64), torch.tensor(0.5, dtype=F64)
    a_N, b_N = model.update_q_tau(x, mu_N, lambda_N)
    previous = model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)
    for _ in range(50):
        mu_N, lambda_N = model.update_q_mu(x, a_N / b_N)
        a_N, b_N = model.update_q_tau(x, mu_N, lambda_N)
        current = model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)
        assert current >= previous - 1e-12
        previous = current
    for got, want in zip((mu_N, lambda_N, a_N, b_N), model.mean_field_fixed_point(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


def test_each_update_is_the_coordinate_optimum(problem):
    model, x = problem
    a_N, b_N = torch.tensor(5.0, dtype=F64), torch.tensor(3.0, dtype=F64)
    mu_N, lambda_N = model.update_q_mu(x, a_N / b_N)
    best = model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)
    for d_mu, f_lam in [(0.01, 1.0), (-0.01, 1.0), (0.0, 1.02), (0.0, 0.98)]:
        assert model.mean_field_elbo(x, mu_N + d_mu, lambda_N * f_lam, a_N, b_N) < best
    a_N, b_N = model.update_q_tau(x, mu_N, lambda_N)
    best = model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)
    for f_a, f_b in [(1.02, 1.0), (0.98, 1.0), (1.0, 1.02), (1.0, 0.98), (1.02, 1.02)]:
        assert model.mean_field_elbo(x, mu_N, lambda_N, a_N * f_a, b_N * f_b) < best


def test_sample_is_reproducible_and_leaves_the_global_stream_alone():
    model = NormalGamma()
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    a, b = model.sample(5, seed=3), model.sample(5, seed=3)
    assert torch.equal(a[2], b[2]) and a[2].shape == (5,)
    assert torch.equal(torch.rand(2), expected)


@pytest.mark.parametrize("kwargs", [{"lambda0": 0.0}, {"a0": -1.0}, {"b0": float("inf")}])
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError, match="positive finite"):
        NormalGamma(**kwargs)


def test_cavi_loop_matches_the_updates_by_hand_and_reaches_the_fixed_point(problem):
    model, x = problem
    a0, b0 = torch.tensor(1.0, dtype=F64), torch.tensor(20.0, dtype=F64)
    (mu_N, lambda_N, a_N, b_N), trace = model.cavi(x, a0, b0, sweeps=40)
    assert len(trace) == 40 and all(
        later >= earlier - 1e-12 for earlier, later in zip(trace[:-1], trace[1:], strict=True)
    )
    for got, want in zip((mu_N, lambda_N, a_N, b_N), model.mean_field_fixed_point(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    # its first sweep is the two updates written out
    mu1, lam1 = model.update_q_mu(x, a0 / b0)
    a1, b1 = model.update_q_tau(x, mu1, lam1)
    (_, _, a_one, b_one), trace_one = model.cavi(x, a0, b0, sweeps=1)
    torch.testing.assert_close(b_one, b1)
    assert trace_one == [float(model.mean_field_elbo(x, mu1, lam1, a1, b1))]
