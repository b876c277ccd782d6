"""The semi-implicit checkers (lessons 06 and 07) accept correct answers written in different ways
and name the mistake in plausible wrong ones; lesson 06's also stop a slow answer and name it."""

import math

import pytest
import torch
from checker_assertions import accepts, rejects
from torch.distributions import MultivariateNormal, Normal

from helpers import gaussian, semi_implicit
from helpers.checks import (
    check_log_normal_tril,
    check_sivi_bound,
    check_sivi_upper_bound,
)

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


# ------------------------------------------------------------ 7.6


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


# ------------------------------------------------------------ issue 29: lesson 06's checkers at the lesson's sizes


def _reusing_psi0(with_psi0):  # the "extra" draws are psi0[:K], the draws that generated the first K draws of z
    def bound(log_target, q, S, K):
        z, psi0 = q.rsample(S)
        log_terms = q.log_conditional(z.unsqueeze(1), psi0[:K].unsqueeze(0))  # (S, K)
        if with_psi0:
            log_terms = torch.cat([q.log_conditional(z, psi0).unsqueeze(1), log_terms], 1)
        return (log_target(z) - (log_terms.logsumexp(1) - math.log(log_terms.shape[1]))).mean()

    return bound


def _draw_by_draw(with_psi0):  # a Python loop over the S draws of z: right, and far too slow for the lesson
    def bound(log_target, q, S, K):
        z, psi0 = q.rsample(S)
        psi = q.sample_psi(K)
        terms = []
        for s in range(S):
            log_q = q.log_conditional(z[s], psi)  # (K,)
            if with_psi0:
                log_q = torch.cat([q.log_conditional(z[s], psi0[s]).reshape(1), log_q])
            terms.append(log_target(z[s : s + 1])[0] - (log_q.logsumexp(0) - math.log(len(log_q))))
        return torch.stack(terms).mean()

    return bound


def test_sivi_bound_names_extra_draws_reused_from_psi0(capsys):
    rejects(check_sivi_bound, _reusing_psi0(with_psi0=True), capsys, "independent of z", "psi0[:K]", "S = 500")


def test_sivi_bound_stops_and_names_a_slow_answer(capsys):
    rejects(check_sivi_bound, _draw_by_draw(with_psi0=True), capsys, "too slow", "no Python loop")


def _upper_with_rsample_psi(log_target, q, S, K):  # fresh psi from rsample's second output: as right as sample_psi
    z, _ = q.rsample(S)
    _, psi = q.rsample(K)
    return (log_target(z) - (q.log_conditional(z[:, None], psi[None]).logsumexp(1) - math.log(K))).mean()


def _upper_in_float64(log_target, q, S, K):  # the log-mean-exp computed by torch.special, in a (K, S) layout
    z, _ = q.rsample(S)
    log_q = q.log_conditional(z[None], q.sample_psi(K)[:, None])  # (K, S)
    return (log_target(z) - torch.special.logsumexp(log_q, 0) + math.log(K)).mean()


@pytest.mark.parametrize("fn", [semi_implicit.sivi_upper_bound, _upper_with_rsample_psi, _upper_in_float64])
def test_upper_bound_accepts_at_the_lessons_sizes(fn, capsys):
    accepts(check_sivi_upper_bound, fn, capsys)


def _upper(extra, combine=None):
    """An upper bound whose K extra log densities come from ``extra(q, z, K)``, averaged by ``combine``."""

    def bound(log_target, q, S, K):
        z, _ = q.rsample(S)
        log_q = extra(q, z, K)
        average = log_q.logsumexp(1) - math.log(K) if combine is None else combine(log_q)
        return (log_target(z) - average).mean()

    return bound


@pytest.mark.parametrize(
    "fn, words",
    [
        (_reusing_psi0(with_psi0=False), ("independent of z", "psi0[:K]")),
        (_upper(lambda q, z, K: q.log_conditional(z[:, None], q.rsample(K)[0][None])), ("draws of z, not of psi",)),
        (
            _upper(lambda q, z, K: q.log_conditional(z[:, None], q.sample_psi(1)[None]), lambda log_q: log_q[:, 0]),
            ("only one extra draw", "single draw"),
        ),
        (
            _upper(lambda q, z, K: q.log_conditional(z[:, None], q.sample_psi(K)[None]), lambda log_q: log_q.mean(1)),
            ("averages the log densities",),
        ),
        (
            _upper(
                lambda q, z, K: q.log_conditional(z[:, None], q.sample_psi(K)[None]),
                lambda log_q: log_q.logsumexp(1) - math.log(log_q.shape[1] + 1),
            ),
            ("subtract log K, not log(K + 1)",),
        ),
        (semi_implicit.sivi_bound, ("lower bound of exercise 6.2",)),
        (_draw_by_draw(with_psi0=False), ("too slow",)),
    ],
)
def test_upper_bound_names_mistakes_at_the_lessons_sizes(fn, words, capsys):
    rejects(check_sivi_upper_bound, fn, capsys, *words)


def _tril_constant(L):
    return 0.5 * L * math.log(2 * math.pi)


def _tril_columns(z, psi, C):  # one solve, the pairs' differences as the columns of the right-hand side
    d = z - psi
    u = torch.linalg.solve_triangular(C, d.reshape(-1, d.shape[-1]).T, upper=False).T.reshape(d.shape)
    return -0.5 * (u**2).sum(-1) - C.diagonal().log().sum() - _tril_constant(C.shape[-1])


def _tril_right_solve(z, psi, C):  # u^T = (z - psi)^T C^{-T}: a solve from the right, left=False
    d = z - psi
    u = torch.linalg.solve_triangular(C.T, d.reshape(-1, d.shape[-1]), upper=True, left=False).reshape(d.shape)
    return -0.5 * (u**2).sum(-1) - torch.logdet(C) - _tril_constant(C.shape[-1])


@pytest.mark.parametrize(
    "fn",
    [
        gaussian.log_normal_tril,
        _tril_columns,
        _tril_right_solve,
        lambda z, psi, C: MultivariateNormal(psi, scale_tril=C).log_prob(z),  # a few times slower, still fine
    ],
)
def test_log_normal_tril_accepts_fast_answers(fn, capsys):
    accepts(check_log_normal_tril, fn, capsys)


def _tril_wrong(quad=None, log_det=None, const=None, half=0.5):
    def fn(z, psi, C):
        d = z - psi
        u = torch.linalg.solve_triangular(C, d.reshape(-1, d.shape[-1]).T, upper=False).T.reshape(d.shape)
        q = (u**2).sum(-1) if quad is None else quad(d, C)
        ld = C.diagonal().log().sum() if log_det is None else log_det(C)
        return -half * q - ld - (_tril_constant(C.shape[-1]) if const is None else const)

    return fn


def _broadcast_solve(z, psi, C):  # the natural answer: right, and one small solve per (S, K) pair
    u = torch.linalg.solve_triangular(C, (z - psi).unsqueeze(-1), upper=False).squeeze(-1)
    return -0.5 * (u**2).sum(-1) - C.diagonal().log().sum() - _tril_constant(C.shape[-1])


@pytest.mark.parametrize(
    "fn, words",
    [
        (_broadcast_solve, ("too slow", "broadcast over the pairs", "Solve once")),
        (_tril_wrong(quad=lambda d, C: ((d @ C.T) ** 2).sum(-1)), ("not C (z - psi)",)),
        (_tril_wrong(log_det=lambda C: 0.0), ("log-determinant term is missing",)),
        (_tril_wrong(log_det=lambda C: 2 * C.diagonal().log().sum()), ("once",)),
        (_tril_wrong(half=1.0), ("factor 1/2 is missing",)),
        (_tril_wrong(const=0.0), ("normalising constant -L/2 log(2 pi) is missing",)),
        (lambda z, psi, C: Normal(psi, C.diagonal()).log_prob(z).sum(-1), ("off-diagonal entries of C",)),
    ],
)
def test_log_normal_tril_names_mistakes_and_a_slow_solve(fn, words, capsys):
    rejects(check_log_normal_tril, fn, capsys, *words)


@pytest.mark.parametrize(
    "check, fn",
    [
        (check_sivi_bound, _draw_by_draw(with_psi0=True)),
        (check_sivi_upper_bound, _draw_by_draw(with_psi0=False)),
        (check_log_normal_tril, _broadcast_solve),
        (check_sivi_upper_bound, semi_implicit.sivi_upper_bound),
    ],
)
def test_lesson_06_checkers_answer_slow_answers_within_seconds(check, fn, capsys):
    import time

    start = time.process_time()
    check(fn)
    capsys.readouterr()
    assert time.process_time() - start < 20  # stopped: ~0.3 s at idle; a loop left to run takes minutes
