"""Bayesian logistic regression against torch.distributions and autograd, in float64."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from helpers.logistic_regression import BayesianLogisticRegression

F64 = torch.float64


@pytest.fixture
def model():
    g = torch.Generator().manual_seed(0)
    X = torch.cat([torch.ones(40, 1, dtype=F64), torch.randn(40, 3, generator=g, dtype=F64)], 1)
    y = (torch.rand(40, generator=g, dtype=F64) < torch.sigmoid(X @ torch.tensor([0.3, 1.0, -2.0, 0.5], dtype=F64))).to(
        F64
    )
    return BayesianLogisticRegression(X, y, prior_std=1.7)


def test_log_joint_matches_torch_distributions(model):
    w = torch.randn(5, model.D, dtype=F64)
    expected = Normal(0.0, 1.7).log_prob(w).sum(-1) + Bernoulli(logits=w @ model.X.T).log_prob(model.y).sum(-1)
    torch.testing.assert_close(model.log_joint(w), expected)


def test_gradient_matches_autograd(model):
    w = torch.randn(3, model.D, dtype=F64, requires_grad=True)
    value, grad = model.log_joint_and_grad(w.detach())
    torch.testing.assert_close(value, model.log_joint(w).detach())
    torch.testing.assert_close(grad, torch.autograd.grad(model.log_joint(w).sum(), w)[0])


def test_laplace_is_the_mode_and_the_inverse_hessian(model):
    w_map, cov = model.laplace()
    _, grad = model.log_joint_and_grad(w_map.unsqueeze(0))
    assert grad.abs().max() < 1e-9
    hessian = torch.autograd.functional.hessian(lambda w: model.log_joint(w), w_map)
    torch.testing.assert_close(cov, torch.linalg.inv(-hessian))


def test_predictive_log_likelihood_and_accuracy(model):
    w = torch.randn(7, model.D, dtype=F64)
    probs = Bernoulli(logits=w @ model.X.T).log_prob(model.y).exp()  # (S, N)
    expected = probs.mean(0).log().mean()
    torch.testing.assert_close(BayesianLogisticRegression.log_predictive(w, model.X, model.y), expected)
    predicted = (torch.sigmoid(w @ model.X.T).mean(0) > 0.5).to(F64)
    assert float(BayesianLogisticRegression.accuracy(w, model.X, model.y)) == pytest.approx(
        float((predicted == model.y).to(F64).mean())
    )


def test_stable_for_huge_logits(model):
    w = 1e4 * torch.ones(1, model.D, dtype=F64)
    assert torch.isfinite(model.log_joint(w)).all()


def test_bad_input_is_explained():
    X = torch.ones(3, 2)
    with pytest.raises(ValueError, match="0s and 1s"):
        BayesianLogisticRegression(X, torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        BayesianLogisticRegression(X, torch.zeros(4))
    with pytest.raises(ValueError, match="prior_std"):
        BayesianLogisticRegression(X, torch.zeros(3), prior_std=-1.0)


def test_prior_constant(model):
    w = torch.zeros(1, model.D, dtype=F64)
    assert float(model.log_prior(w)) == pytest.approx(-model.D * math.log(1.7 * math.sqrt(2 * math.pi)))


def test_subsampled_log_joint_is_unbiased_exactly_over_a_partition(model):
    torch.manual_seed(0)
    w = torch.randn(3, model.D, dtype=torch.float64, requires_grad=True)
    # against torch.distributions on one batch
    batch = torch.tensor([4, 0, 7])
    lik = Bernoulli(logits=w @ model.X[batch].T).log_prob(model.y[batch]).sum(-1)
    prior = Normal(0.0, model.prior_std).log_prob(w).sum(-1)
    torch.testing.assert_close(model.subsampled_log_joint(w, batch), prior + model.N / 3 * lik)
    # the mean over the batches of a partition (equal sizes) is the full log joint, and so is its gradient
    parts = torch.randperm(model.N).reshape(4, 10)  # N = 40: four batches of ten
    mean = torch.stack([model.subsampled_log_joint(w, b) for b in parts]).mean(0)
    torch.testing.assert_close(mean, model.log_joint(w))
    (g,) = torch.autograd.grad(mean.sum(), w)
    (g_full,) = torch.autograd.grad(model.log_joint(w).sum(), w)
    torch.testing.assert_close(g, g_full)
