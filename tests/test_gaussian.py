"""helpers.gaussian against torch.distributions, in float64."""

import math

import torch
from torch.distributions import Normal, kl_divergence

from helpers.gaussian import LOG_2PI, kl_normal, log_normal_diag, normal_entropy

F64 = torch.float64


def test_log_2pi_is_the_gaussian_normaliser():
    assert LOG_2PI == math.log(2 * math.pi)
    torch.testing.assert_close(
        Normal(torch.tensor(0.0, dtype=F64), 1.0).log_prob(torch.tensor(0.0, dtype=F64)),
        torch.tensor(-0.5 * LOG_2PI, dtype=F64),
        rtol=0,
        atol=1e-15,
    )


def test_log_normal_diag_matches_torch_with_broadcasting():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=g, dtype=F64)  # (B, L)
    mean = torch.randn(5, 4, 3, generator=g, dtype=F64)  # (K, B, L): the SIVI table
    log_scale = torch.randn(4, 3, generator=g, dtype=F64)  # (B, L), shared by the K means
    out = log_normal_diag(z, mean, log_scale)
    assert out.shape == (5, 4)
    torch.testing.assert_close(out, Normal(mean, log_scale.exp()).log_prob(z).sum(-1))
    scalar_mean = log_normal_diag(z, 0.7, log_scale[0])  # a number as the mean, one scale row for all
    torch.testing.assert_close(scalar_mean, Normal(0.7, log_scale[0].exp()).log_prob(z).sum(-1))
    one_d = log_normal_diag(z[:, :1], mean[0, :, :1], log_scale[:, :1])  # univariate: a last axis of size 1
    torch.testing.assert_close(one_d, Normal(mean[0, :, 0], log_scale[:, 0].exp()).log_prob(z[:, 0]))


def test_log_normal_diag_gradients_match_torch():
    g = torch.Generator().manual_seed(1)
    args = [
        torch.randn(6, 2, generator=g, dtype=F64),
        torch.randn(3, 1, 2, generator=g, dtype=F64),
        0.5 * torch.randn(2, generator=g, dtype=F64),
    ]
    ours = [a.clone().requires_grad_(True) for a in args]
    theirs = [a.clone().requires_grad_(True) for a in args]
    weights = torch.randn(3, 6, generator=g, dtype=F64)  # a random direction, not only the sum
    out = log_normal_diag(*ours)
    ref = Normal(theirs[1], theirs[2].exp()).log_prob(theirs[0]).sum(-1)
    grads = torch.autograd.grad((weights * out).sum(), ours, create_graph=True)
    ref_grads = torch.autograd.grad((weights * ref).sum(), theirs, create_graph=True)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)
    # second derivatives too: lesson 07's score-based loss differentiates the score
    second = torch.autograd.grad(grads[0].pow(2).sum(), ours)
    ref_second = torch.autograd.grad(ref_grads[0].pow(2).sum(), theirs)
    for a, b in zip(second, ref_second, strict=True):
        torch.testing.assert_close(a, b)


def test_log_normal_diag_is_finite_for_narrow_scales_in_float32():
    z = torch.zeros(2, 100)
    out = log_normal_diag(z, 1e-5, torch.full((100,), math.log(1e-4)))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out.double(),
        Normal(torch.tensor(1e-5, dtype=F64), 1e-4).log_prob(torch.zeros(2, 100, dtype=F64)).sum(-1),
        rtol=1e-5,
        atol=0,
    )


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
    torch.testing.assert_close(
        kl_normal(0.7, 0.4, -1.0, 2.5).double(), torch.trapezoid(integrand, z), rtol=1e-7, atol=1e-9
    )


def test_log_normal_tril_matches_torch_distributions_with_broadcasting():
    from helpers.gaussian import log_normal_tril

    torch.manual_seed(0)
    C = torch.tril(torch.randn(4, 4, dtype=torch.float64), -1) + torch.diag(torch.rand(4, dtype=torch.float64) + 0.3)
    z, mean = torch.randn(6, 1, 4, dtype=torch.float64), torch.randn(1, 5, 4, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(mean, scale_tril=C).log_prob(z)  # (6, 5)
    torch.testing.assert_close(log_normal_tril(z, mean, C), expected)
