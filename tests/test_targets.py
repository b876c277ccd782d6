"""The SIVI paper's 2-D targets against torch.distributions, and normalised on a grid."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

from helpers.targets import TARGETS, banana, gaussian_mixture, x_shape

F64 = torch.float64


def test_against_torch_distributions():
    z = torch.randn(50, 2, dtype=F64) * 2
    expected_banana = Normal(0.0, 2.0).log_prob(z[:, 0]) + Normal(0.25 * z[:, 0] ** 2, 1.0).log_prob(z[:, 1])
    torch.testing.assert_close(banana(z), expected_banana)
    mixture = MixtureSameFamily(
        Categorical(torch.tensor([0.5, 0.5], dtype=F64)),
        MultivariateNormal(torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=F64), torch.eye(2, dtype=F64).expand(2, 2, 2)),
    )
    torch.testing.assert_close(gaussian_mixture(z), mixture.log_prob(z))
    covs = torch.tensor([[[2.0, 1.8], [1.8, 2.0]], [[2.0, -1.8], [-1.8, 2.0]]], dtype=F64)
    cross = MixtureSameFamily(
        Categorical(torch.tensor([0.5, 0.5], dtype=F64)), MultivariateNormal(torch.zeros(2, 2, dtype=F64), covs)
    )
    torch.testing.assert_close(x_shape(z), cross.log_prob(z))


@pytest.mark.parametrize("name", list(TARGETS))
def test_normalised(name):
    h = 0.05
    axis = torch.arange(-15, 25, h, dtype=F64) + h / 2  # wide enough for the banana's tail in z2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)
    log_mass = torch.logsumexp(TARGETS[name](grid).reshape(-1), 0) + 2 * math.log(h)
    assert abs(float(log_mass)) < 1e-3


@pytest.mark.parametrize("name", list(TARGETS))
def test_second_derivatives_are_finite_far_from_the_modes(name):
    # score-based training (lesson 07) differentiates the score; far out, one component underflows
    z = torch.tensor([[30.0, -25.0], [0.0, 40.0], [-50.0, 1.0]], requires_grad=True)
    (score,) = torch.autograd.grad(TARGETS[name](z).sum(), z, create_graph=True)
    (second,) = torch.autograd.grad(score.sum(), z)
    assert torch.isfinite(score).all() and torch.isfinite(second).all()
