"""helpers.estimators against closed forms on the Normal-Normal model."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from helpers.conjugate import NormalNormal
from helpers.estimators import elbo, iwae_bound, log_weights, standard_error

F64 = torch.float64


@pytest.fixture
def setting():
    torch.manual_seed(0)
    model = NormalNormal(0.0, 2.0, 1.0)
    x = torch.tensor([0.3, 1.9, 1.2, 0.8], dtype=F64)
    m = torch.tensor(0.2, dtype=F64, requires_grad=True)
    s = torch.tensor(0.9, dtype=F64, requires_grad=True)
    return model, x, m, s


def test_elbo_is_unbiased_and_differentiable(setting):
    model, x, m, s = setting
    lw = log_weights(lambda z: model.log_joint(x, z), Normal(m, s), 100_000)
    exact = model.gaussian_elbo(m, s, x)
    assert lw.shape == (100_000,)
    assert abs(float(lw.detach().mean() - exact.detach())) < 4 * float(standard_error(lw.detach()))
    est = elbo(lambda z: model.log_joint(x, z), Normal(m, s), 100_000)
    g_est = torch.autograd.grad(est, (m, s))
    g_exact = torch.autograd.grad(exact, (m, s))
    for a, b in zip(g_est, g_exact, strict=True):
        assert abs(float(a - b)) < 0.05 * abs(float(b)) + 0.02


def test_iwae_bound_increases_towards_the_evidence(setting):
    model, x, m, s = setting
    q = Normal(m.detach(), s.detach())
    log_px = float(model.log_evidence(x))
    means = [
        torch.stack([iwae_bound(lambda z: model.log_joint(x, z), q, S) for _ in range(400)]).mean()
        for S in (1, 10, 100, 1000)
    ]
    assert all(float(a) < float(b) for a, b in zip(means, means[1:], strict=False))
    assert float(means[-1]) <= log_px + 1e-3 and abs(float(means[-1]) - log_px) < 0.01
    assert abs(float(means[0]) - float(model.gaussian_elbo(m, s, x).detach())) < 0.2


def test_iwae_single_draw_is_logsumexp_minus_log_s(setting):
    model, x, m, s = setting
    q = Normal(m.detach(), s.detach())
    torch.manual_seed(5)
    lw = log_weights(lambda z: model.log_joint(x, z), q, 7)
    torch.manual_seed(5)
    direct = torch.log(lw.exp().mean())
    torch.manual_seed(5)
    torch.testing.assert_close(iwae_bound(lambda z: model.log_joint(x, z), q, 7), direct)


def test_standard_error_is_the_sample_sd_over_root_n():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    # by hand: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, sample variance 5 / 3, n = 4
    assert math.isclose(float(standard_error(v)), math.sqrt(5 / 3) / 2)
    assert math.isclose(float(standard_error([1.0, 2.0, 3.0, 4.0])), math.sqrt(5 / 3) / 2)  # a list of floats


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_standard_error_along_an_axis_matches_numpy(dim):
    values = torch.randn(7, 5, generator=torch.Generator().manual_seed(3), dtype=F64)
    expected = values.numpy().std(axis=dim, ddof=1) / np.sqrt(values.shape[dim])
    got = standard_error(values, dim=dim)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("S", [0, -3, 2.5])
def test_bad_sample_size_is_rejected(S):
    with pytest.raises(ValueError, match="positive integer"):
        log_weights(lambda z: z, Normal(0.0, 1.0), S)


def test_log_weights_rejects_per_coordinate_values_instead_of_broadcasting_them():
    q = Normal(torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64))  # batch shape (1,): log_prob is (S, 1)
    with pytest.raises(ValueError, match=r"q.log_prob\(z\) \(5, 1\).*Independent"):
        log_weights(lambda z: -0.5 * (z**2).sum(-1), q, 5)
    with pytest.raises(ValueError, match=r"log_joint\(z\) has shape \(5, 1\)"):
        log_weights(lambda z: -0.5 * z**2, torch.distributions.Independent(q, 1), 5)
    batch = Normal(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))  # three independent problems, (S, 3)
    assert log_weights(lambda z: -0.5 * z**2, batch, 5).shape == (5, 3)
