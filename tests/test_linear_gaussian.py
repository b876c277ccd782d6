"""The linear-Gaussian model's posterior and evidence against Gaussian conditioning in float64."""

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from helpers.linear_gaussian import LinearGaussianModel

F64 = torch.float64


@pytest.fixture
def model():
    g = torch.Generator().manual_seed(0)
    return LinearGaussianModel(torch.randn(4, 2, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64), 0.6)


def test_posterior_by_conditioning_the_joint_gaussian(model):
    # (z, x) is jointly Gaussian: cov(z) = I, cov(x, z) = W, cov(x) = W W^T + sigma^2 I
    W, b, s = model.W, model.b, model.sigma
    Cxx = W @ W.T + s**2 * torch.eye(4, dtype=F64)
    x = torch.randn(3, 4, dtype=F64)
    mean_ref = (x - b) @ torch.linalg.solve(Cxx, W)
    cov_ref = torch.eye(2, dtype=F64) - W.T @ torch.linalg.solve(Cxx, W)
    mean, cov = model.posterior(x)
    torch.testing.assert_close(mean, mean_ref)
    torch.testing.assert_close(cov, cov_ref)


def test_log_joint_against_torch(model):
    x, z = torch.randn(5, 4, dtype=F64), torch.randn(5, 2, dtype=F64)
    ref = Normal(z @ model.W.T + model.b, model.sigma).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(model.log_joint(x, z), ref)


def test_bayes_rule_holds_pointwise(model):
    # log p(x) = log p(x, z) - log p(z | x) for any z
    x, z = torch.randn(3, 4, dtype=F64), torch.randn(3, 2, dtype=F64)
    mean, cov = model.posterior(x)
    log_post = MultivariateNormal(mean, covariance_matrix=cov).log_prob(z)
    torch.testing.assert_close(model.log_evidence(x), model.log_joint(x, z) - log_post)


def test_orthogonal_columns_give_a_diagonal_posterior():
    model = LinearGaussianModel.random(D=6, L=3, scales=(3.0, 2.0, 0.5), sigma=0.4, seed=1, dtype=F64)
    torch.testing.assert_close(model.W.T @ model.W, torch.diag(torch.tensor([9.0, 4.0, 0.25], dtype=F64)))
    _, cov = model.posterior(torch.zeros(1, 6, dtype=F64))
    torch.testing.assert_close(cov, torch.diag(cov.diagonal()), atol=1e-12, rtol=0)


def test_sample_shapes_and_errors(model):
    z, x = model.sample(7, generator=torch.Generator().manual_seed(3))
    assert z.shape == (7, 2) and x.shape == (7, 4)
    with pytest.raises(ValueError, match="sigma"):
        LinearGaussianModel(model.W, model.b, 0.0)
    with pytest.raises(ValueError, match="scales"):
        LinearGaussianModel.random(D=3, L=2, scales=(1.0,), sigma=1.0)
