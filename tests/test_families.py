"""The Gaussian families give the densities of torch's reference distributions."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from helpers.families import FullRankGaussian, MeanFieldGaussian

F64 = torch.float64


def test_mean_field_density_and_covariance():
    q = MeanFieldGaussian(3, mean=[1.0, -1.0, 0.5], log_scale=-0.5, dtype=F64)
    with torch.no_grad():
        q.log_scale.copy_(torch.tensor([-0.5, 0.2, 0.0], dtype=F64))
    z = torch.randn(6, 3, dtype=F64)
    ref = MultivariateNormal(q.mean.detach(), covariance_matrix=q.covariance().detach())
    torch.testing.assert_close(q.distribution().log_prob(z).detach(), ref.log_prob(z))
    assert sum(p.numel() for p in q.parameters()) == 6


def test_full_rank_density_and_covariance():
    q = FullRankGaussian(3, dtype=F64)
    with torch.no_grad():
        q.off_diag.copy_(torch.randn(3, 3, dtype=F64))
        q.log_diag.copy_(torch.tensor([0.1, -0.3, 0.4], dtype=F64))
    C = q.scale_tril().detach()
    assert torch.equal(C, torch.tril(C)) and (C.diagonal() > 0).all()
    cov = q.covariance().detach()
    z = torch.randn(5, 3, dtype=F64)
    ref = MultivariateNormal(torch.zeros(3, dtype=F64), covariance_matrix=cov)
    torch.testing.assert_close(q.distribution().log_prob(z).detach(), ref.log_prob(z))
    # the upper triangle of off_diag is unused
    with torch.no_grad():
        q.off_diag[0, 2] = 100.0
    torch.testing.assert_close(q.covariance().detach(), cov)


def test_gradients_reach_every_parameter_through_rsample():
    q = FullRankGaussian(2, dtype=F64)
    q.distribution().rsample((4,)).pow(2).sum().backward()
    assert q.mean.grad is not None and q.log_diag.grad is not None and q.off_diag.grad.tril(-1).abs().sum() > 0


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="positive integer"):
        MeanFieldGaussian(0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        FullRankGaussian(2, mean=[1.0, 2.0, 3.0])
