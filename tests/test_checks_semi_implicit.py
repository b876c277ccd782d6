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


@pytest.mark.parametrize(
    "fn",
    [
        lambda z, m, t, s: Normal(m, math.sqrt(t**2 + s**2)).log_prob(z).sum(-1),
        lambda z, m, t, s: MultivariateNormal(m, (t**2 + s**2) * torch.eye(m.shape[-1], dtype=m.dtype)).log_prob(z),
        lambda z, m, t, s: _normal(z, m, t * t + s * s),
    ],
)
def test_linear_marginal_accepts(fn, capsys):
    accepts(check_linear_marginal, fn, capsys)


def test_linear_marginal_names_mistakes(capsys):
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, (t + s) ** 2), capsys, "variances do")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, s**2), capsys, "mixing variable is missing")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, t**2), capsys, "own noise is missing")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, t**2 * s**2), capsys, "do not multiply")
    rejects(check_linear_marginal, lambda z, m, t, s: _normal(z, m, t**2 + s**2, dims=1), capsys, "once per coord")
    rejects(
        check_linear_marginal,
        lambda z, m, t, s: Normal(m, math.sqrt(t**2 + s**2)).log_prob(z),
        capsys,
        "sum the log densities",
    )
    rejects(
        check_linear_marginal,
        lambda z, m, t, s: Normal(m, math.sqrt(t**2 + s**2)).log_prob(z).sum(1),
        capsys,
        "sum over the last",
    )
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


@pytest.mark.parametrize(
    "combine, words",
    [
        (lambda lp, own, oth, K: (lp - (oth.logsumexp(1) - math.log(K))).mean(), "psi_0, the draw that generated z"),
        (lambda lp, own, oth, K: (lp - (torch.cat([own, oth], 1).logsumexp(1) - math.log(K))).mean(), "not log K"),
        (lambda lp, own, oth, K: (lp - torch.cat([own, oth], 1).logsumexp(1)).mean(), "log(K + 1)"),
        (lambda lp, own, oth, K: (lp - torch.cat([own, oth], 1).mean(1)).mean(), "averages the log densities"),
        (lambda lp, own, oth, K: (lp - own.squeeze(1)).mean(), "K extra draws are missing"),
        (lambda lp, own, oth, K: -(torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1)).mean(), "log_target"),
        (lambda lp, own, oth, K: ((torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1)) - lp).mean(), "sign"),
        (lambda lp, own, oth, K: lp - (torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1)), "average over the S"),
        (lambda lp, own, oth, K: (lp - torch.log(torch.cat([own, oth], 1).exp().mean(1))).mean(), "overflows"),
        (
            lambda lp, own, oth, K: (lp - (torch.cat([own, oth], 1).logsumexp(1) - math.log(K + 1))).mean().detach(),
            "no gradient",
        ),
    ],
)
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


# ------------------------------------------------------------ 7.1

from helpers import kernel_stein, semi_implicit_vae  # noqa: E402
from helpers.checks import check_ksd_u_statistic, check_semi_implicit_elbo_terms  # noqa: E402


def _log_q(z, psi, log_scale):  # (K + 1, B)
    return Normal(psi, log_scale.exp()).log_prob(z).sum(-1)


def _loop_version(x, z, psi, log_scale, log_joint):
    out = []
    for b in range(z.shape[0]):
        terms = torch.stack([Normal(psi[k, b], log_scale[b].exp()).log_prob(z[b]).sum() for k in range(psi.shape[0])])
        out.append(log_joint(x, z)[b] - (torch.logsumexp(terms, 0) - math.log(len(terms))))
    return torch.stack(out)


@pytest.mark.parametrize(
    "fn",
    [
        semi_implicit_vae.semi_implicit_elbo_terms,
        lambda x, z, psi, ls, lj: lj(x, z) - torch.logsumexp(_log_q(z, psi, ls), dim=0) + math.log(psi.shape[0]),
        _loop_version,
    ],
)
def test_semi_implicit_elbo_terms_accepts(fn, capsys):
    accepts(check_semi_implicit_elbo_terms, fn, capsys)


@pytest.mark.parametrize(
    "fn, words",
    [
        (
            lambda x, z, psi, ls, lj: (
                lj(x, z) - torch.logsumexp(_log_q(z, psi[1:], ls), 0) + math.log(psi.shape[0] - 1)
            ),
            "psi[0], the draw that generated z",
        ),
        (
            lambda x, z, psi, ls, lj: lj(x, z) - torch.logsumexp(_log_q(z, psi, ls), 0) + math.log(psi.shape[0] - 1),
            "not log K",
        ),
        (lambda x, z, psi, ls, lj: lj(x, z) - torch.logsumexp(_log_q(z, psi, ls), 0), "1/(K + 1)"),
        (lambda x, z, psi, ls, lj: lj(x, z) - _log_q(z, psi, ls).mean(0), "averages the log densities"),
        (lambda x, z, psi, ls, lj: lj(x, z) - _log_q(z, psi, ls)[0], "only psi[0]"),
        (lambda x, z, psi, ls, lj: -torch.logsumexp(_log_q(z, psi, ls), 0) + math.log(psi.shape[0]), "log_joint"),
        (lambda x, z, psi, ls, lj: torch.logsumexp(_log_q(z, psi, ls), 0) - math.log(psi.shape[0]) - lj(x, z), "sign"),
        (
            lambda x, z, psi, ls, lj: lj(x, z) - torch.logsumexp(_log_q(z, psi, 0.5 * ls), 0) + math.log(psi.shape[0]),
            "not the variance",
        ),
        (
            lambda x, z, psi, ls, lj: (
                lj(x, z) - torch.logsumexp(_log_q(z, psi, ls), 0) + math.log(psi.shape[0])
            ).mean(),
            "one surrogate per data point",
        ),
        (lambda x, z, psi, ls, lj: lj(x, z) - torch.log(_log_q(z, psi, ls).exp().mean(0)), "log space"),
    ],
)
def test_semi_implicit_elbo_terms_names_mistakes(fn, words, capsys):
    rejects(check_semi_implicit_elbo_terms, fn, capsys, words)


# ------------------------------------------------------------ 7.5


def _u_loop(z, diff, h):
    S, total = z.shape[0], 0.0
    for i in range(S):
        for j in range(S):
            if i != j:
                total = total + torch.exp(-((z[i] - z[j]) ** 2).sum() / (2 * h**2)) * (diff[i] * diff[j]).sum()
    return total / (S * (S - 1))


def _u_masked(z, diff, h):
    k = torch.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * h * h))
    mask = ~torch.eye(len(z), dtype=torch.bool)
    return (k * (diff @ diff.T))[mask].mean()


def _u_cdist(z, diff, h):  # cdist is fine for first derivatives
    gram = torch.exp(-(torch.cdist(z, z) ** 2) / (2 * h**2)) * (diff @ diff.T)
    return (gram.sum() - gram.trace()) / (len(z) * (len(z) - 1))


@pytest.mark.parametrize("fn", [kernel_stein.ksd_u_statistic, _u_loop, _u_masked, _u_cdist])
def test_ksd_u_statistic_accepts(fn, capsys):
    accepts(check_ksd_u_statistic, fn, capsys)


def _gram(z, diff, h, scale=2):
    return torch.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (scale * h**2)) * (diff @ diff.T)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda z, d, h: _gram(z, d, h).mean(), "diagonal i = j is included"),
        (lambda z, d, h: _gram(z, d, h).sum() / (len(z) * (len(z) - 1)), "diagonal is included"),
        (lambda z, d, h: (_gram(z, d, h).sum() - _gram(z, d, h).diagonal().sum()) / len(z) ** 2, "S(S - 1)"),
        (
            lambda z, d, h: (_gram(z, d, h, 1).sum() - _gram(z, d, h, 1).diagonal().sum()) / (len(z) * (len(z) - 1)),
            "factor 2",
        ),
        (lambda z, d, h: -_u_masked(z, d, h), "sign"),
        (lambda z, d, h: _gram(z, d, h), "(S, S) matrix"),
        (lambda z, d, h: _u_masked(z.detach(), d, h), "no gradient"),
        (
            lambda z, d, h: (
                ((torch.exp(-torch.cdist(z, z) / (2 * h**2)) * (d @ d.T)).sum() - (d**2).sum())
                / (len(z) * (len(z) - 1))
            ),
            "not the distance itself",
        ),
        (lambda z, d, h: ((d @ d.T).sum() - (d**2).sum()) / (len(z) * (len(z) - 1)), "kernel weights are missing"),
    ],
)
def test_ksd_u_statistic_names_mistakes(fn, words, capsys):
    rejects(check_ksd_u_statistic, fn, capsys, words)


# ------------------------------------------------------------ from the lesson 06 review


def test_linear_marginal_accepts_float32_answers(capsys):
    accepts(
        check_linear_marginal,
        lambda z, m, t, s: MultivariateNormal(m.float(), (t**2 + s**2) * torch.eye(len(m))).log_prob(z.float()),
        capsys,
    )


def test_linear_marginal_names_density_and_mean(capsys):
    def log_q(z, m, t, s):
        return Normal(m, math.sqrt(t**2 + s**2)).log_prob(z)

    rejects(check_linear_marginal, lambda z, m, t, s: log_q(z, m, t, s).sum(-1).exp(), capsys, "density itself")
    rejects(check_linear_marginal, lambda z, m, t, s: log_q(z, m, t, s).mean(-1), capsys, "averaged over the coord")


def _gradient_breaker(where):
    def bound(log_target, q, S, K):
        if where == "no_grad":
            with torch.no_grad():
                z, psi0 = q.rsample(S)
        elif where == "detached extra psi":  # right along the mean (by symmetry), wrong along the mixing scale
            z, psi0 = q.rsample(S)
            lp = log_target(z)
            extra = q.log_conditional(z[:, None], q.sample_psi(K).detach())
            log_terms = torch.cat([q.log_conditional(z, psi0)[:, None], extra], 1)
            return (lp - (log_terms.logsumexp(1) - math.log(K + 1))).mean()
        else:
            z, psi0 = q.rsample(S)
            if where == "detach":
                z = z.detach()
        lp = log_target(z.detach() if where == "target" else z)
        log_terms = torch.cat([q.log_conditional(z, psi0)[:, None], q.log_conditional(z[:, None], q.sample_psi(K))], 1)
        return (lp - (log_terms.logsumexp(1) - math.log(K + 1))).mean()

    return bound


@pytest.mark.parametrize("where", ["no_grad", "detach", "target", "detached extra psi"])
def test_sivi_bound_rejects_a_broken_gradient(where, capsys):
    rejects(check_sivi_bound, _gradient_breaker(where), capsys, "gradient")


def test_sivi_bound_names_the_parameter_whose_gradient_is_wrong(capsys):
    rejects(check_sivi_bound, _gradient_breaker("detached extra psi"), capsys, "the mixing weight", "s.e.")


def test_the_amortized_surrogate_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(x, z, psi, ls, lj):
        scale = ls.exp()  # exp's backward needs its output ...
        log_q = Normal(psi, scale).log_prob(z).sum(-1)
        scale.mul_(1.0)  # ... which is then modified in place
        return lj(x, z) - (torch.logsumexp(log_q, 0) - math.log(psi.shape[0]))

    rejects(check_semi_implicit_elbo_terms, in_place, capsys, "changes a tensor in place")


def test_the_ksd_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(z, d, h):
        k = torch.exp(-(torch.cdist(z, z) ** 2) / (2 * h**2))  # exp's backward needs its output ...
        out = ((k * (d @ d.T)).sum() - (d**2).sum()) / (len(z) * (len(z) - 1))
        k.mul_(1.0)  # ... which is then modified in place
        return out

    rejects(check_ksd_u_statistic, in_place, capsys, "changes a tensor in place")


def test_sivi_bound_names_finer_mistakes(capsys):
    def two_calls(log_target, q, S, K):  # psi0 from a second rsample call: not the one that made z
        z, _ = q.rsample(S)
        _, psi0 = q.rsample(S)
        log_terms = torch.cat([q.log_conditional(z, psi0)[:, None], q.log_conditional(z[:, None], q.sample_psi(K))], 1)
        return (log_target(z) - (log_terms.logsumexp(1) - math.log(K + 1))).mean()

    def own_divided(log_target, q, S, K):
        z, psi0 = q.rsample(S)
        return (log_target(z) - q.log_conditional(z, psi0) + math.log(K + 1)).mean()

    def off_by_one(extra):
        def bound(log_target, q, S, K):
            z, psi0 = q.rsample(S)
            log_terms = torch.cat(
                [q.log_conditional(z, psi0)[:, None], q.log_conditional(z[:, None], q.sample_psi(K + extra))], 1
            )
            return (log_target(z) - (log_terms.logsumexp(1) - math.log(K + 1 + extra))).mean()

        return bound

    def float64_exp(log_target, q, S, K):
        z, psi0 = q.rsample(S)
        t = torch.cat([q.log_conditional(z, psi0)[:, None], q.log_conditional(z[:, None], q.sample_psi(K))], 1)
        return (log_target(z) - t.double().exp().mean(1).log().to(z.dtype)).mean()

    rejects(check_sivi_bound, two_calls, capsys, "same q.rsample call")
    rejects(check_sivi_bound, own_divided, capsys, "missing from the sum")
    rejects(check_sivi_bound, off_by_one(-1), capsys, "off by one")
    rejects(check_sivi_bound, off_by_one(+1), capsys, "off by one")
    rejects(check_sivi_bound, float64_exp, capsys, "overflows")


# ------------------------------------------------------------ from the lesson 07 review


def test_semi_implicit_elbo_terms_rejects_detached_answers(capsys):
    def detached_log_q(x, z, psi, ls, lj):
        return lj(x, z) - (torch.logsumexp(_log_q(z, psi, ls), 0) - math.log(psi.shape[0])).detach()

    def detached(x, z, psi, ls, lj):
        return semi_implicit_vae.semi_implicit_elbo_terms(x, z, psi, ls, lj).detach()

    rejects(check_semi_implicit_elbo_terms, detached_log_q, capsys, "gradient")
    rejects(check_semi_implicit_elbo_terms, detached, capsys, "gradient")


def test_semi_implicit_elbo_terms_names_two_more_mistakes(capsys):
    rejects(
        check_semi_implicit_elbo_terms,
        lambda x, z, psi, ls, lj: lj(x, z) - torch.logsumexp(_log_q(z, psi[1:], ls), 0) + math.log(psi.shape[0]),
        capsys,
        "missing from the sum",
    )
    rejects(
        check_semi_implicit_elbo_terms,
        lambda x, z, psi, ls, lj: (
            lj(x, z) - torch.logsumexp(Normal(psi, (2 * ls).exp()).log_prob(z).sum(-1), 0) + math.log(psi.shape[0])
        ),
        capsys,
        "standard deviation itself",
    )


def test_ksd_u_statistic_rejects_detached_diff_and_half_pairs(capsys):
    rejects(check_ksd_u_statistic, lambda z, d, h: _u_masked(z, d.detach(), h), capsys, "diff")

    def half(z, d, h):
        i, j = torch.triu_indices(len(z), len(z), offset=1)
        k = torch.exp(-((z[i] - z[j]) ** 2).sum(-1) / (2 * h**2))
        return (k * (d[i] * d[j]).sum(-1)).sum() / (len(z) * (len(z) - 1))

    rejects(check_ksd_u_statistic, half, capsys, "i < j")
