"""The kernel Stein discrepancy helpers against explicit float64 loops and closed-form scores; the
conditional score gives an unbiased U-statistic, and the diagonal terms would bias it."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from helpers.kernel_stein import imq_bandwidth, imq_kernel, ksd_u_statistic, ksivi_loss, median_bandwidth, rbf_kernel
from helpers.semi_implicit import SemiImplicitGaussian

F64 = torch.float64


def test_rbf_kernel_and_u_statistic_match_explicit_loops():
    torch.manual_seed(0)
    z, diff, h = torch.randn(7, 3, dtype=F64), torch.randn(7, 3, dtype=F64), 0.8
    k = rbf_kernel(z, h)
    for i in range(7):
        for j in range(7):
            assert k[i, j].item() == pytest.approx(math.exp(-((z[i] - z[j]) ** 2).sum().item() / (2 * h * h)))
    loop = sum(k[i, j] * diff[i] @ diff[j] for i in range(7) for j in range(7) if i != j) / (7 * 6)
    torch.testing.assert_close(ksd_u_statistic(z, diff, h), loop)


def test_imq_kernel_and_its_bandwidth_match_explicit_loops():
    torch.manual_seed(4)
    z, diff, h = torch.randn(6, 2, dtype=F64), torch.randn(6, 2, dtype=F64), 1.7
    k = imq_kernel(z, h)
    for i in range(6):
        for j in range(6):
            assert k[i, j].item() == pytest.approx((1 + ((z[i] - z[j]) ** 2).sum().item() / h) ** -0.5)
    loop = sum(k[i, j] * diff[i] @ diff[j] for i in range(6) for j in range(6) if i != j) / 30
    torch.testing.assert_close(ksd_u_statistic(z, diff, h, kernel=imq_kernel), loop)
    pts = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)  # squared distances 1, 4, 9: median 4
    assert imq_bandwidth(pts).item() == pytest.approx(4 / math.log(4))


def test_median_bandwidth_is_the_svgd_heuristic():
    z = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)  # distances 1, 2, 3: median 2
    assert median_bandwidth(z).item() == pytest.approx(2 / math.sqrt(2 * math.log(4)))
    with pytest.raises(ValueError, match="at least 2"):
        ksd_u_statistic(z[:1], z[:1], 1.0)


def _statistics(mean, tau, sigma, target, reps=300, S=64):
    """Average U- and V-statistics with the conditional score, and the U-statistic with the exact score."""
    q = SemiImplicitGaussian.linear(mean, tau, sigma)
    var = tau**2 + sigma**2
    u_cond, v_cond, u_exact = [], [], []
    with torch.no_grad():
        for _ in range(reps):
            z, psi = q.rsample(S)
            zz = z.clone().requires_grad_(True)
            with torch.enable_grad():
                (score_p,) = torch.autograd.grad(target.log_prob(zz).sum(), zz)
            h = 1.0
            d_cond = score_p + (z - psi) / sigma**2
            u_cond.append(ksd_u_statistic(z, d_cond, h))
            v_cond.append((rbf_kernel(z, h) * (d_cond @ d_cond.T)).mean())
            u_exact.append(ksd_u_statistic(z, score_p + (z - mean) / var, h))
    as_mean = [
        (torch.stack(v).mean().item(), torch.stack(v).std().item() / math.sqrt(reps)) for v in (u_cond, v_cond, u_exact)
    ]
    return as_mean


def test_conditional_score_gives_an_unbiased_u_statistic():
    torch.manual_seed(1)
    mean = torch.tensor([0.5, -0.5], dtype=F64)
    target = MultivariateNormal(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=F64))
    (u_cond, se_c), (v_cond, _), (u_exact, se_e) = _statistics(mean, 0.8, 0.5, target)
    assert abs(u_cond - u_exact) < 4 * math.hypot(se_c, se_e), (u_cond, u_exact)
    assert v_cond - u_exact > max(0.05, 6 * se_c)  # with the diagonal, the conditional score's noise is squared in


def test_ksd_is_zero_in_expectation_when_q_is_the_target():
    torch.manual_seed(2)
    mean, tau, sigma = torch.tensor([0.3, 0.1], dtype=F64), 0.6, 0.8
    target = MultivariateNormal(mean, (tau**2 + sigma**2) * torch.eye(2, dtype=F64))
    (u_cond, se), _, (u_exact, _) = _statistics(mean, tau, sigma, target)
    assert abs(u_cond) < 4 * se and abs(u_exact) < 1e-12


def test_ksivi_loss_reaches_the_mixing_network():
    q = SemiImplicitGaussian.mlp(learn_sigma=True)
    loss = ksivi_loss(lambda z: -0.5 * (z**2).sum(-1), q, 16)
    loss.backward()
    assert loss.dim() == 0 and all(p.grad is not None for p in q.parameters())


def test_ksivi_loss_runs_on_the_statistic_it_is_given():
    q = SemiImplicitGaussian.mlp(learn_sigma=True)
    seen = []

    def recording(z, diff, bandwidth):  # a learner's U-statistic, say
        seen.append((z.shape, diff.shape, float(bandwidth)))
        return ksd_u_statistic(z, diff, bandwidth)

    torch.manual_seed(3)
    default = ksivi_loss(lambda z: -0.5 * (z**2).sum(-1), q, 16)
    torch.manual_seed(3)
    given = ksivi_loss(lambda z: -0.5 * (z**2).sum(-1), q, 16, ksd=recording)
    assert torch.equal(given, default)  # the same draws, the same statistic: the same number
    ((z_shape, diff_shape, h),) = seen
    assert z_shape == diff_shape == (16, 2) and h > 0
    torch.manual_seed(3)
    assert ksivi_loss(lambda z: -0.5 * (z**2).sum(-1), q, 16, bandwidth=0.5, ksd=recording).requires_grad
    assert seen[-1][2] == 0.5


def test_ksivi_loss_takes_a_bandwidth_rule_and_a_kernel():
    q = SemiImplicitGaussian.mlp(learn_sigma=True)
    seen = []

    def recording(z, diff, bandwidth):
        seen.append(float(bandwidth))
        return ksd_u_statistic(z, diff, bandwidth, kernel=imq_kernel)

    torch.manual_seed(5)
    ksivi_loss(lambda z: -0.5 * (z**2).sum(-1), q, 16, bandwidth=imq_bandwidth, ksd=recording)
    torch.manual_seed(5)
    z, _ = q.rsample(16)
    assert seen == [pytest.approx(float(imq_bandwidth(z.detach())))]


def test_median_bandwidth_attached_has_the_same_value_and_a_gradient():
    torch.manual_seed(0)
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    detached, attached = median_bandwidth(z), median_bandwidth(z, detach=False)
    torch.testing.assert_close(attached, detached)
    assert not detached.requires_grad and attached.requires_grad
    (grad,) = torch.autograd.grad(attached, z)
    pairs = torch.cdist(z, z).detach()  # h depends on the one pair at the median distance, scaled as h is
    i, j = [int(k) for k in (pairs == pairs[~torch.eye(7, dtype=torch.bool)].median()).nonzero()[0]]
    expected = (z[i] - z[j]).detach() / pairs[i, j] / math.sqrt(2 * math.log(8))
    torch.testing.assert_close(grad[i], expected)
    torch.testing.assert_close(grad[j], -expected)
