"""The semi-implicit checkers (lesson 06) accept correct answers written in different ways
and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, rejects
from torch.distributions import MultivariateNormal, Normal

from helpers import semi_implicit
from helpers.checks import check_linear_marginal, check_sivi_bound

# ------------------------------------------------------------ 6.1


def _normal(z, m, var, dims=None):
    dims = z.shape[-1] if dims is None else dims
    return -0.5 * ((z - m) ** 2).sum(-1) / var - 0.5 * dims * math.log(2 * math.pi * var)


@pytest.mark.parametrize("fn", [
    lambda z, m, t, s: Normal(m, math.sqrt(t**2 + s**2)).log_prob(z).sum(-1),
    lambda z, m, t, s: MultivariateNormal(m, (t**2 + s**2) * torch.eye(m.shape[-1], dtype=m.dtype)).log_prob(z),
    lambda z, m, t, s: _normal(z, m, t * t + s * s),
])
def test_linear_marginal_accepts(fn, capsys):
    accepts(check_linear_marginal, fn, capsys)


def test_linear_marginal_names_mistakes(capsys):
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, (t + s) ** 2), capsys, "variances do")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, s**2), capsys, "mixing variable is missing")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, t**2), capsys, "own noise is missing")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, t**2 * s**2), capsys, "do not multiply")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, t**2 + s**2, dims=1), capsys, "once per coord")
    rejects(check_linear_marginal, lambda z, m, t, s: Normal(m, math.sqrt(t**2 + s**2)).log_prob(z), capsys,
            "sum the log densities")
    rejects(check_linear_marginal, lambda z, m, t, s: Normal(m, math.sqrt(t**2 + s**2)).log_prob(z).sum(1), capsys,
            "sum over the last")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, (t**2 + s**2) ** 2), capsys, "not the standard")


# ------------------------------------------------------------ 6.2


def _parts(q, S, K):
    z, psi0 = q.rsample(S)
    own = q.log_conditional(z, psi0).unsqueeze(1)
    others = q.log_conditional(z.unsqueeze(1), q.sample_psi(K).unsqueeze(0))
    return z, own, others


def _per_z_draws(log_target, q, S, K):  # fresh K draws for every z
    z, psi0 = q.rsample(S)
    psi = q.sample_psi(S * (K + 1)).view(S, K + 1, -1)
    psi[:, 0] = psi0
    log_q = Normal(psi, q.sigma).log_prob(z.unsqueeze(1)).sum(-1)  # (S, K + 1), torch.distributions instead
    return torch.mean(log_target(z) - torch.logsumexp(log_q, dim=1) + math.log(K + 1))


def _one_psi_block(log_target, q, S, K):  # psi_0 drawn together with the others, z built by hand
    psi = q.sample_psi(K + 1)
    z = psi[0] + q.sigma * torch.randn(S, psi.shape[1], dtype=psi.dtype)
    log_q = q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0))
    return (log_target(z) - (log_q.logsumexp(-1) - math.log(K + 1))).mean()


@pytest.mark.parametrize("fn", [semi_implicit.sivi_bound, _per_z_draws, _one_psi_block])
def test_sivi_bound_accepts(fn, capsys):
    accepts(check_sivi_bound, fn, capsys)


def _wrong(combine):
    def bound(log_target, q, S, K):
        z, own, others = _parts(q, S, K)
        return combine(log_target(z), own, others, K)
    return bound


@pytest.mark.parametrize("combine, words", [
    (lambda lp, own, oth, K: (lp - (oth.logsumexp(1) - math.log(K))).mean(), "psi_0, the draw that generated z"),
    (lambda lp, own, oth, K: (lp - (torch.cat([own, oth], 1).logsumexp(1) - math.log(K))).mean(), "not log K"),
    (lambda lp, own, oth, K: (lp - torch.cat([own, oth], 1).logsumexp(1)).mean(), "log(K + 1)"),
    (lambda lp, own, oth, K: (lp - torch.cat([own, oth], 1).mean(1)).mean(), "averages the log densities"),
    (lambda lp, own, oth, K: (lp - own.squeeze(1)).mean(), "K extra draws are missing"),
    (lambda lp, own, oth, K: -(torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1)).mean(), "log_target"),
    (lambda lp, own, oth, K: ((torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1)) - lp).mean(), "sign"),
    (lambda lp, own, oth, K: lp - (torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1)), "average over the S"),
    (lambda lp, own, oth, K: (lp - torch.log(torch.cat([own, oth], 1).exp().mean(1))).mean(), "overflows"),
    (lambda lp, own, oth, K: (lp - (torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1))).mean().detach(),
     "no gradient"),
])
def test_sivi_bound_names_mistakes(combine, words, capsys):
    rejects(check_sivi_bound, _wrong(combine), capsys, words)


def test_sivi_bound_names_a_fresh_psi0(capsys):
    def fresh(log_target, q, S, K):
        z, _ = q.rsample(S)
        psi = q.sample_psi(K + 1)  # none of them generated z
        return (log_target(z) - (q.log_conditional(z.unsqueeze(1), psi).logsumexp(1) - math.log(K + 1))).mean()

    rejects(check_sivi_bound, fresh, capsys, "upper bound")


def test_not_attempted_is_reported(capsys):
    def stub(log_target, q, S, K):
        raise NotImplementedError("Exercise 6.2: the SIVI bound")

    result = check_sivi_bound(stub)
    assert result.status == "not attempted" and "not attempted yet" in capsys.readouterr().out
