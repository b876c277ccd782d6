"""SIVI-SM's objective against the Fisher divergence in closed form on the linear semi-implicit family:
at f = s_p - s_q its expectation is E_q |s_p - s_q|^2, at any other f it is lower."""

import copy
import math

import pytest
import torch

from helpers.score_matching import score_network, sivism_objective, sivism_step
from helpers.semi_implicit import SemiImplicitGaussian

F64 = torch.float64
MEAN, TAU, SIGMA = torch.tensor([0.5, -1.0], dtype=F64), 0.8, 0.6
V = TAU**2 + SIGMA**2  # the linear family's marginal is N(MEAN, V I)


def _log_target(z):  # N(0, I), unnormalised
    return -0.5 * (z**2).sum(-1)


def _best_f(z):  # s_p - s_q
    return -z + (z - MEAN) / V


def _fisher():  # E_q |s_p - s_q|^2 = E |a z + b|^2, z ~ N(MEAN, V I), a = 1/V - 1, b = -MEAN / V
    a, b = 1 / V - 1, -MEAN / V
    return float(((a * MEAN + b) ** 2).sum() + 2 * a**2 * V)


def _average(f, reps=200, S=500):
    q = SemiImplicitGaussian.linear(MEAN, TAU, SIGMA)
    values = torch.stack([sivism_objective(_log_target, q, f, S).detach() for _ in range(reps)])
    return values.mean().item(), values.std().item() / math.sqrt(reps)


def test_objective_at_the_best_f_is_the_fisher_divergence():
    torch.manual_seed(0)
    mean, se = _average(_best_f)
    assert abs(mean - _fisher()) < 4.5 * se, (mean, _fisher(), se)


def test_any_other_f_gives_less():
    torch.manual_seed(1)
    half, se = _average(lambda z: 0.5 * _best_f(z))  # 2 (F / 2) - F / 4 = 3 F / 4
    assert abs(half - 0.75 * _fisher()) < 4.5 * se
    zero, _ = _average(lambda z: torch.zeros_like(z), reps=2)
    assert zero == 0.0


def test_objective_reaches_the_family_and_the_network():
    torch.manual_seed(2)
    q = SemiImplicitGaussian.mlp(L=2, noise_dim=3, hidden=(8,), sigma=1.0, learn_sigma=True)
    f = score_network(2, (16, 16))
    value = sivism_objective(_log_target, q, f, 32)
    value.backward()
    assert value.dim() == 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in list(q.parameters()) + list(f.parameters()))
    assert f(torch.zeros(5, 2)).shape == (5, 2)


def test_f_step_variant_has_the_same_value_and_leaves_the_family_out():
    q = SemiImplicitGaussian.mlp(L=2, noise_dim=3, hidden=(8,), sigma=1.0, learn_sigma=True)
    f = score_network(2, (16, 16))
    torch.manual_seed(4)
    full = sivism_objective(_log_target, q, f, 32)
    torch.manual_seed(4)
    f_only = sivism_objective(_log_target, q, f, 32, train_family=False)
    torch.testing.assert_close(f_only, full.detach())
    f_only.backward()
    assert all(p.grad is None for p in q.parameters()) and all(p.grad is not None for p in f.parameters())
    (want,) = torch.autograd.grad(full, [next(f.parameters())])
    torch.testing.assert_close(next(f.parameters()).grad, want)  # f's gradient is the same either way


def test_step_moves_the_family_down_and_f_up_the_objective():
    """With plain SGD, one update is phi - lr * grad_phi J, then omega + lr * grad_omega J at the new phi, each
    gradient taken by autograd on the objective from the same draws (float64, re-seeded)."""
    torch.manual_seed(0)
    q = SemiImplicitGaussian.mlp(L=2, noise_dim=3, hidden=(8,), sigma=0.7, learn_sigma=True).double()
    f = score_network(2, (8,)).double()

    def target(z):
        return -0.5 * z[:, 0] ** 2 - 0.5 * (z[:, 1] - 0.5 * z[:, 0] ** 2) ** 2

    phi0 = [p.detach().clone() for p in q.parameters()]
    omega0 = [p.detach().clone() for p in f.parameters()]
    lr = 0.01
    torch.manual_seed(1)
    value = sivism_step(target, q, f, torch.optim.SGD(q.parameters(), lr), torch.optim.SGD(f.parameters(), lr), 64)

    check_q, check_f = copy.deepcopy(q), copy.deepcopy(f)  # rebuild the two moves by hand from the same draws
    with torch.no_grad():
        for p, p0 in zip(check_q.parameters(), phi0, strict=True):
            p.copy_(p0)
        for p, p0 in zip(check_f.parameters(), omega0, strict=True):
            p.copy_(p0)
    torch.manual_seed(1)
    J = sivism_objective(target, check_q, check_f, 64)
    grads = torch.autograd.grad(J, list(check_q.parameters()))
    with torch.no_grad():
        for p, g in zip(check_q.parameters(), grads, strict=True):
            p -= lr * g
    J_f = sivism_objective(target, check_q, check_f, 64)
    grads_f = torch.autograd.grad(J_f, list(check_f.parameters()))
    with torch.no_grad():
        for p, g in zip(check_f.parameters(), grads_f, strict=True):
            p += lr * g
    assert value == pytest.approx(J.item(), rel=1e-12)
    moved = [*q.parameters(), *f.parameters()]
    for got, want in zip(moved, [*check_q.parameters(), *check_f.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert all(not torch.equal(p, p0) for p, p0 in zip(moved, phi0 + omega0, strict=True))  # both players moved
