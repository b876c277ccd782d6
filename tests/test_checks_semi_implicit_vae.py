"""The checkers of helpers.checks.semi_implicit_vae (lesson 07's 7.1, the amortized SIVI surrogate, and 7.3, the
importance log-weights of a semi-implicit encoder) accept correct answers written in different ways and name the
mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, rejects
from torch.distributions import Normal

from helpers import gaussian, semi_implicit_vae
from helpers.checks import check_semi_implicit_elbo_terms, check_semi_implicit_log_weights

# ------------------------------------------------------------ 7.1: the amortized SIVI surrogate


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


def test_the_amortized_surrogate_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(x, z, psi, ls, lj):
        scale = ls.exp()  # exp's backward needs its output ...
        log_q = Normal(psi, scale).log_prob(z).sum(-1)
        scale.mul_(1.0)  # ... which is then modified in place
        return lj(x, z) - (torch.logsumexp(log_q, 0) - math.log(psi.shape[0]))

    rejects(check_semi_implicit_elbo_terms, in_place, capsys, "changes a tensor in place")


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


# ------------------------------------------------------------ 7.3: the log-weights of a semi-implicit encoder


def _lw_loop(x, z, psi_own, psi_extra, log_scale, log_joint):  # one weight at a time, densities by Normal
    M, B, _ = z.shape
    out = torch.empty(M, B, dtype=z.dtype)
    for k in range(M):
        for b in range(B):
            psis = torch.cat([psi_own[k, b].unsqueeze(0), psi_extra[:, b]], 0)
            log_q = Normal(psis, log_scale[b].exp()).log_prob(z[k, b]).sum(-1)
            out[k, b] = log_joint(x, z)[k, b] - (torch.logsumexp(log_q, 0) - math.log(len(psis)))
    return out


def _lw_shared_table(x, z, psi_own, psi_extra, log_scale, log_joint):  # own terms put on the table's diagonal
    table = gaussian.log_normal_diag(
        z.unsqueeze(1), torch.cat([psi_own.unsqueeze(1), psi_extra.expand(len(z), -1, -1, -1)], 1), log_scale
    )
    return log_joint(x, z) - torch.logsumexp(table, 1) + math.log(table.shape[1])


def _lw_max_shift(x, z, psi_own, psi_extra, log_scale, log_joint):  # log-sum-exp by hand
    own = gaussian.log_normal_diag(z, psi_own, log_scale).unsqueeze(1)
    others = gaussian.log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), log_scale)
    a = torch.cat([own, others], 1)
    top = a.max(1, keepdim=True).values
    return log_joint(x, z) - (top.squeeze(1) + (a - top).exp().mean(1).log())


@pytest.mark.parametrize("fn", [semi_implicit_vae.semi_implicit_log_weights, _lw_loop, _lw_shared_table, _lw_max_shift])
def test_log_weights_accepts(fn, capsys):
    accepts(check_semi_implicit_log_weights, fn, capsys)


def _lw(kind):
    def fn(x, z, psi_own, psi_extra, log_scale, log_joint):
        ls = 0.5 * log_scale if kind == "variance" else log_scale
        own = gaussian.log_normal_diag(z, psi_own, ls).unsqueeze(1)
        others = gaussian.log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), ls)
        if kind == "all own":
            others = torch.cat([gaussian.log_normal_diag(z.unsqueeze(1), psi_own.unsqueeze(0), ls), others], 1)
            terms = others
        elif kind in ("no own", "no own, K"):
            terms = others
        else:
            terms = torch.cat([own, others], 1)
        n = terms.shape[1] - (1 if kind == "K not K+1" else 0)
        log_q = torch.logsumexp(terms, 1) - (0.0 if kind == "no 1/n" else math.log(n))
        if kind == "mean of logs":
            log_q = terms.mean(1)
        if kind == "linear":
            log_q = terms.exp().mean(1).log()
        out = {"no joint": -log_q, "sign": log_q - log_joint(x, z)}.get(kind, log_joint(x, z) - log_q)
        return torch.logsumexp(out, 0) - math.log(len(z)) if kind == "averaged" else out

    return fn


@pytest.mark.parametrize(
    "kind, words",
    [
        ("no own", "own generating draw psi_k0 is missing"),
        ("K not K+1", "not log K_psi"),
        ("no 1/n", "needs its 1 / (K_psi + 1)"),
        ("all own", "psi_k0 generated z_k only"),
        ("mean of logs", "averages the log densities"),
        ("no joint", "log p(x, z_k) is missing"),
        ("sign", "a sign is off"),
        ("variance", "not the variance"),
        ("averaged", "the bound's average over the draws is taken later"),
        ("linear", "average in log space"),
    ],
)
def test_log_weights_rejects(kind, words, capsys):
    rejects(check_semi_implicit_log_weights, _lw(kind), capsys, words)


def _lw_table(x, z, psi_own, psi_extra, log_scale):  # (M, K_psi + 1, B): psi_k0 first, then the shared extras
    own = gaussian.log_normal_diag(z, psi_own, log_scale).unsqueeze(1)
    return torch.cat([own, gaussian.log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), log_scale)], 1)


def _lw_over(reduce):
    """7.3 with the table's log-sum-exp replaced by ``reduce(table) -> log q~``."""

    def fn(x, z, psi_own, psi_extra, log_scale, log_joint):
        return log_joint(x, z) - reduce(_lw_table(x, z, psi_own, psi_extra, log_scale))

    return fn


def _lw_paired(with_own, n_terms):
    """z_k against one extra draw, psi_extra[k] (cycling), with or without its own psi_k0."""

    def fn(x, z, psi_own, psi_extra, log_scale, log_joint):
        one = gaussian.log_normal_diag(z, psi_extra.repeat(len(z) // len(psi_extra) + 1, 1, 1)[: len(z)], log_scale)
        terms = torch.stack([gaussian.log_normal_diag(z, psi_own, log_scale), one]) if with_own else one[None]
        return log_joint(x, z) - (terms.logsumexp(0) - math.log(n_terms(len(psi_extra))))

    return fn


def _lw_broadcast_extras(x, z, psi_own, psi_extra, log_scale, log_joint):  # z (M, B, L) against psi_extra (K, B, L)
    others = gaussian.log_normal_diag(z, psi_extra, log_scale)
    own = gaussian.log_normal_diag(z, psi_own, log_scale)
    return log_joint(x, z) - (torch.logaddexp(own, others) - math.log(len(psi_extra) + 1))


@pytest.mark.parametrize(
    "fn, words",
    [
        (_lw_over(lambda t: t.logsumexp(-1) - math.log(t.shape[-1])), ["must run over the K_psi + 1 mixing draws"]),
        (_lw_over(lambda t: t.logsumexp(0) - math.log(t.shape[0])), ["must match the size", "the draws z_k (M)"]),
        (  # log p(x, z_k) inside the table, and the log-sum-exp over its last axis, the images
            lambda x, z, po, pe, ls, lj: (lj(x, z).unsqueeze(1) - _lw_table(x, z, po, pe, ls)).logsumexp(-1),
            ["shape (5, 4)", "ran over the images (B)"],
        ),
        (
            lambda x, z, po, pe, ls, lj: (lj(x, z).unsqueeze(1) - _lw_table(x, z, po, pe, ls)).logsumexp(0),
            ["shape (4, 2)", "ran over the draws z_k (M)"],
        ),
        (
            _lw_over(lambda t: t.flatten(1).logsumexp(1, keepdim=True) - math.log(t[0].numel())),
            ["the same for every image", "ran over the images"],
        ),
        (
            _lw_over(lambda t: t.logsumexp(-1, keepdim=True).mean(1) - math.log(t.shape[-1])),
            ["the same for every image"],
        ),
        (
            lambda x, z, po, pe, ls, lj: lj(x, z) - _lw_table(x, z, po, pe, ls).logsumexp(-1),
            ["must match the size", "must run over the K_psi + 1 mixing draws"],
        ),
        (_lw_paired(True, lambda K: 2), ["compared with all K_psi extra mixing draws", "(M, 1, B, L)"]),
        (_lw_paired(True, lambda K: K + 1), ["paired z_k with psi_extra[k] alone", "divided by K_psi + 1"]),
        (_lw_paired(False, lambda K: 1), ["paired z_k with psi_extra[k] alone", "without z_k's own"]),
        (_lw_broadcast_extras, ["must match the size", "compared with all K_psi extra mixing draws"]),
    ],
)
def test_log_weights_names_wrong_axes_and_pairings(fn, words, capsys):
    rejects(check_semi_implicit_log_weights, fn, capsys, *words)
