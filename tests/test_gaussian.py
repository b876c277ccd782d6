"""helpers.gaussian against torch.distributions, in float64."""

import torch
from torch.distributions import Normal, kl_divergence

from helpers.gaussian import kl_normal, normal_entropy

F64 = torch.float64


def test_entropy_matches_torch():
    sigma = torch.logspace(-3, 2, 20, dtype=F64)
    torch.testing.assert_close(normal_entropy(sigma), Normal(torch.zeros_like(sigma), sigma).entropy())


def test_kl_matches_torch_with_broadcasting():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(5, 1, generator=g, dtype=F64), torch.randn(1, 4, generator=g, dtype=F64)
    sq = torch.rand(5, 1, generator=g, dtype=F64) * 3 + 0.01
    sp = torch.rand(1, 4, generator=g, dtype=F64) * 3 + 0.01
    ref = kl_divergence(Normal(mq.expand(5, 4), sq.expand(5, 4)), Normal(mp.expand(5, 4), sp.expand(5, 4)))
    out = kl_normal(mq, sq, mp, sp)
    assert out.shape == (5, 4)
    torch.testing.assert_close(out, ref)
    assert (out >= 0).all()


def test_kl_is_zero_for_equal_distributions_and_asymmetric_otherwise():
    m, s = torch.tensor([0.0, 3.0], dtype=F64), torch.tensor([1.0, 1e-4], dtype=F64)
    assert torch.equal(kl_normal(m, s, m, s), torch.zeros(2, dtype=F64))
    a, b = kl_normal(0.0, 1.0, 1.0, 2.0), kl_normal(1.0, 2.0, 0.0, 1.0)
    assert not torch.isclose(torch.as_tensor(a), torch.as_tensor(b))


def test_kl_by_quadrature():
    z = torch.linspace(-30, 30, 200_001, dtype=F64)
    q, p = Normal(torch.tensor(0.7, dtype=F64), 0.4), Normal(torch.tensor(-1.0, dtype=F64), 2.5)
    integrand = q.log_prob(z).exp() * (q.log_prob(z) - p.log_prob(z))
    torch.testing.assert_close(kl_normal(0.7, 0.4, -1.0, 2.5).double(), torch.trapezoid(integrand, z),
                               rtol=1e-7, atol=1e-9)
