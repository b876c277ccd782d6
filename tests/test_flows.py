"""RealNVP against the change-of-variables formula with an autograd Jacobian in float64, and against
quadrature: its density integrates to one and agrees between the sampling and the density passes."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from helpers.flows import AffineCoupling, RealNVP, affine_coupling
from helpers.quadrature import grid_2d

F64 = torch.float64


def _random_flow(seed=0, L=2, n_layers=4, spread=0.5):
    torch.manual_seed(seed)
    flow = RealNVP(L=L, n_layers=n_layers, hidden=16).to(F64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(spread * torch.randn_like(p))  # away from the identity the layers start at
    return flow


def test_coupling_log_det_is_the_jacobians():
    torch.manual_seed(1)
    layer = AffineCoupling(torch.tensor([1.0, 0.0, 1.0], dtype=F64), hidden=8).to(F64)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.7 * torch.randn_like(p))
    x = torch.randn(5, 3, dtype=F64)
    y, log_det = layer(x)
    for i in range(5):
        J = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0].squeeze(0), x[i])
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(J)[1].item(), abs=1e-10)
    assert torch.equal(y[:, [0, 2]], x[:, [0, 2]])  # the masked coordinates pass unchanged
    x_back, log_det_back = layer.inverse(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, log_det)


def test_flow_density_matches_change_of_variables_and_its_inverse():
    flow = _random_flow()
    torch.manual_seed(2)
    z, log_q = flow.rsample_with_log_prob(6)
    torch.testing.assert_close(flow.log_prob(z), log_q)  # the inverse pass agrees with the sampling pass
    u = torch.randn(1, 2, dtype=F64)

    def forward(v):
        for layer in flow.layers:
            v = layer(v)[0]
        return v

    J = torch.autograd.functional.jacobian(lambda v: forward(v.unsqueeze(0)).squeeze(0), u[0])
    want = torch.distributions.Normal(0.0, 1.0).log_prob(u).sum() - torch.linalg.slogdet(J)[1]
    assert flow.log_prob(forward(u)).item() == pytest.approx(want.item(), abs=1e-10)


def test_flow_density_integrates_to_one():
    flow = _random_flow(seed=3, spread=0.2)  # smooth enough for a 300 x 300 midpoint rule
    grid, (xs, ys) = grid_2d(((-12.0, 12.0), (-12.0, 12.0)), 300, dtype=F64)
    area = (xs[1] - xs[0]) * (ys[1] - ys[0])
    with torch.no_grad():
        mass = (flow.log_prob(grid).exp().sum() * area).item()
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_untrained_flow_is_standard_normal_and_coupling_function_is_used():
    flow = RealNVP(L=3, n_layers=2).to(F64)
    z = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(flow.log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1).to(F64))
    calls = []

    def spy(x, mask, net):
        calls.append(x.shape)
        return affine_coupling(x, mask, net)

    RealNVP(L=2, n_layers=3, coupling=spy).rsample_with_log_prob(5)
    assert calls == [(5, 2)] * 3


@pytest.mark.parametrize("kwargs, match", [({"L": 1}, "L >= 2"), ({"n_layers": 0}, "n_layers")])
def test_flow_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RealNVP(**kwargs)


def test_flow_training_reduces_the_kl_to_a_gaussian_target():
    torch.manual_seed(4)
    flow = RealNVP(L=2, n_layers=2, hidden=16)
    target = MultivariateNormal(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    start = kl_divergence(MultivariateNormal(torch.zeros(2), torch.eye(2)), target).item()  # the untrained flow's
    opt = torch.optim.Adam(flow.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        z, log_q = flow.rsample_with_log_prob(128)
        (-(target.log_prob(z) - log_q).mean()).backward()
        opt.step()
    with torch.no_grad():
        z, log_q = flow.rsample_with_log_prob(20000)
        kl = (log_q - target.log_prob(z)).mean().item()
    assert math.isfinite(kl) and kl < 0.25 * start, (kl, start)
