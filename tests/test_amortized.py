"""Encoders, per-data-point fitting and the nonlinear model, against exact answers."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from helpers import amortized
from helpers.encoders import GaussianEncoder
from helpers.linear_gaussian import LinearGaussianModel
from helpers.nonlinear_gaussian import NonlinearGaussianModel

F64 = torch.float64


@pytest.fixture
def ppca():
    return LinearGaussianModel.random(D=6, L=2, scales=(2.0, 1.0), sigma=0.5, seed=0, dtype=F64)


def test_elbo_terms_are_unbiased_for_log_p_minus_kl(ppca):
    torch.manual_seed(0)
    _, x = ppca.sample(3, generator=torch.Generator().manual_seed(1))
    mean, log_scale = torch.randn(3, 2, dtype=F64), 0.3 * torch.randn(3, 2, dtype=F64)
    mu, cov = ppca.posterior(x)
    kl = kl_divergence(Normal(mean, log_scale.exp()), Normal(mu, cov.diagonal().sqrt())).sum(-1)
    exact = ppca.log_evidence(x) - kl
    draws = torch.stack(
        [
            amortized.gaussian_elbo_terms(x, mean, log_scale, ppca.log_joint, torch.randn(1, 3, 2, dtype=F64))
            for _ in range(4000)
        ]
    )
    se = draws.std(0) / math.sqrt(4000)
    assert ((draws.mean(0) - exact).abs() < 4 * se).all()


def test_fit_per_datapoint_reaches_the_exact_posterior(ppca):
    torch.manual_seed(0)
    _, x = ppca.sample(20, generator=torch.Generator().manual_seed(2))
    mean, log_scale = amortized.fit_per_datapoint(x, ppca.log_joint, 2, steps=1500)
    mu, cov = ppca.posterior(x)
    kl = kl_divergence(Normal(mean, log_scale.exp()), Normal(mu, cov.diagonal().sqrt())).sum(-1)
    assert kl.max() < 0.02
    same = amortized.refine(x, mean, log_scale, ppca.log_joint, 0)
    assert torch.equal(same[0], mean) and torch.equal(same[1], log_scale)


def test_amortized_elbo_reaches_the_encoder(ppca):
    encoder = GaussianEncoder(6, 2, hidden=(5,)).to(F64)
    torch.nn.init.normal_(encoder.net[-1].weight, std=0.3)  # it starts at zero, which would block the gradient
    _, x = ppca.sample(4)
    out = amortized.amortized_elbo(x, encoder, ppca.log_joint, torch.randn(2, 4, 2, dtype=F64))
    assert out.shape == (4,)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def _correlated_ppca(L=3):
    W = torch.tensor([[1.0, 0.8, 0.0], [-0.4, 0.2, 0.3], [0.3, 0.9, 1.0], [2.0, 1.1, -0.6], [0.2, 0.0, 0.7]], dtype=F64)
    return LinearGaussianModel(W[:, :L], torch.tensor([0.5, -1.0, 0.2, 0.0, 0.3], dtype=F64), 0.8)


@pytest.mark.parametrize("L", [2, 3])
def test_best_linear_encoder_minimises_the_kl_to_the_posterior(L):
    """Against a numerical minimisation of KL(q || p(z | x)) over diagonal Gaussians, with torch.distributions'
    KL between two full Gaussians (float64), for two data points: the mean is the posterior mean, and the
    variances are 1 / Lambda_ll, smaller than the marginal variances Sigma_ll."""
    model = _correlated_ppca(L)
    A, c, log_scale = amortized.best_linear_encoder(model.W, model.b, model.sigma)
    assert A.shape == (L, model.D) and c.shape == (L,) and log_scale.shape == (L,)
    _, x = model.sample(2, generator=torch.Generator().manual_seed(0))
    mu, cov = model.posterior(x)
    torch.testing.assert_close(x @ A.T + c, mu)
    for i in range(2):
        m = torch.zeros(L, dtype=F64, requires_grad=True)
        log_s = torch.zeros(L, dtype=F64, requires_grad=True)
        optimizer = torch.optim.LBFGS([m, log_s], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15)

        def kl(m=m, log_s=log_s, i=i):
            q = MultivariateNormal(m, torch.diag((2 * log_s).exp()))
            return kl_divergence(q, MultivariateNormal(mu[i], cov))

        def closure(optimizer=optimizer):
            optimizer.zero_grad()
            value = kl()
            value.backward()
            return value

        optimizer.step(closure)
        torch.testing.assert_close(m.detach(), mu[i], atol=1e-7, rtol=0)
        torch.testing.assert_close(log_s.detach(), log_scale, atol=1e-7, rtol=0)
        precision = torch.linalg.inv(cov)
        gap = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
        torch.testing.assert_close(kl().detach(), gap, atol=1e-10, rtol=0)  # the gap it leaves, at every x
        assert gap > 0.1  # a correlated posterior: the diagonal family cannot reach it
    assert ((2 * log_scale).exp() < cov.diagonal()).all()  # mean field under-estimates every marginal variance


def test_best_linear_encoder_is_the_posterior_for_orthogonal_columns(ppca):
    A, c, log_scale = amortized.best_linear_encoder(ppca.W, ppca.b, ppca.sigma)
    _, x = ppca.sample(3, generator=torch.Generator().manual_seed(1))
    mu, cov = ppca.posterior(x)
    torch.testing.assert_close(x @ A.T + c, mu)
    torch.testing.assert_close(log_scale, 0.5 * cov.diagonal().log())


def test_encoder_shapes_and_linear_case():
    linear = GaussianEncoder(5, 3, hidden=())
    assert len(linear.net) == 1 and isinstance(linear.net[0], torch.nn.Linear)
    mean, log_scale = GaussianEncoder(5, 3)(torch.randn(7, 5))
    assert mean.shape == log_scale.shape == (7, 3)
    with pytest.raises(ValueError, match="positive integer"):
        GaussianEncoder(0, 2)


def test_encoder_features_heads_and_input_scaling():
    torch.manual_seed(0)
    encoder = GaussianEncoder(5, 3, hidden=(4, 6)).to(F64)
    torch.nn.init.normal_(encoder.net[-1].weight, std=0.5)  # away from the zero start, so the heads differ
    x = torch.randn(7, 5, dtype=F64)
    assert encoder.set_input_scaling(shift=0.5, scale=16.0) is encoder  # a number for every input
    assert torch.equal(encoder.shift, torch.full((5,), 0.5, dtype=F64))
    assert torch.equal(encoder.scale, torch.full((5,), 16.0, dtype=F64))
    h = encoder.features(x)
    assert h.shape == (7, 6)
    torch.testing.assert_close(h, encoder.net[:-1]((x - 0.5) / 16.0), rtol=0, atol=0)  # after the scaling
    assert all(torch.equal(a, b) for a, b in zip(encoder.heads(h), encoder(x), strict=True))
    encoder.standardise_inputs(x)  # per-input tensors
    torch.testing.assert_close(encoder.scale, x.std(0))
    torch.testing.assert_close(encoder.features(x).mean(), encoder.net[:-1]((x - x.mean(0)) / x.std(0)).mean())
    linear = GaussianEncoder(5, 3, hidden=())
    assert torch.equal(linear.features(x.float()), x.float())  # no trunk: the features are the scaled inputs


def test_nonlinear_model_log_joint_against_torch():
    model = NonlinearGaussianModel(dtype=F64)
    x, z = torch.randn(4, 10, dtype=F64), torch.randn(4, 2, dtype=F64)
    ref = Normal(model.decode(z), 0.3).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(model.log_joint(x, z), ref)


def test_grid_evidence_is_exact_for_a_linear_decoder(ppca):
    # swap in a linear decoder, whose evidence is known in closed form
    model = NonlinearGaussianModel(D=6, L=2, sigma=0.5, dtype=F64)
    model.decode = lambda z: z @ ppca.W.T + ppca.b
    _, x = ppca.sample(3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.log_evidence_grid(x), ppca.log_evidence(x), atol=1e-6, rtol=0)


def test_grid_evidence_agrees_with_importance_sampling():
    torch.manual_seed(0)
    model = NonlinearGaussianModel(dtype=F64)
    _, x = model.sample(2, generator=torch.Generator().manual_seed(4))
    K = 200000
    log_w = model.log_likelihood(x, torch.randn(K, 1, 2, dtype=F64))  # prior as the proposal
    estimate = torch.logsumexp(log_w, 0) - math.log(K)
    rel_se = (log_w - log_w.max(0).values).exp().std(0) / (log_w - log_w.max(0).values).exp().mean(0) / math.sqrt(K)
    assert ((estimate - model.log_evidence_grid(x)).abs() < 5 * rel_se + 1e-3).all()


def test_nonlinear_model_errors():
    with pytest.raises(ValueError, match="sigma"):
        NonlinearGaussianModel(sigma=-1.0)
    with pytest.raises(ValueError, match="L = 2"):
        NonlinearGaussianModel(L=3).log_evidence_grid(torch.zeros(1, 10))


def test_break_even_is_zero_without_a_training_cost():
    # T = 0: n = 0 satisfies T + n e <= n o (0 <= 0), even for an encoder dearer per point than optimisation
    assert amortized.break_even(0.0, 0.5, 0.1) == 0
    assert amortized.break_even(0, 0.2, 0.2) == 0
    assert amortized.break_even(0.0, 0.1, 0.4) == 0
    assert amortized.break_even(1e-9, 0.1, 0.4) == math.inf  # any training cost at all: never repaid
    assert amortized.break_even(1536000, 800, 0) == 1920  # lesson 04's count in log-joint evaluations
