"""The checkers of lesson 06's exercises 6.3 (the upper bound), 6.5 (the full-covariance conditional) and 6.6
(the covariance of a semi-implicit family) accept correct answers written in different ways and
name the mistake in plausible wrong ones."""

import math

import numpy as np
import pytest
import torch
from checker_assertions import accepts, rejects
from torch.distributions import MultivariateNormal, Normal

from helpers import gaussian, semi_implicit, semi_implicit_vae
from helpers.checks import (
    check_log_normal_tril,
    check_semi_implicit_covariance,
    check_semi_implicit_log_weights,
    check_sivi_upper_bound,
)

# ------------------------------------------------------------ 6.3


def _others(q, S, K):
    z, _ = q.rsample(S)
    return z, q.log_conditional(z.unsqueeze(1), q.sample_psi(K).unsqueeze(0))  # (S, K)


def _per_z(log_target, q, S, K):  # K fresh draws for every z, densities from torch.distributions
    z, _ = q.rsample(S)
    psi = q.sample_psi(S * K).view(S, K, -1)
    log_q = Normal(psi, q.sigma).log_prob(z.unsqueeze(1)).sum(-1)
    return torch.mean(log_target(z) - torch.logsumexp(log_q, dim=1) + math.log(K))


def _mean_in_log_space(log_target, q, S, K):  # log of the mean by hand, shifted by the largest term
    z, _ = q.rsample(S)
    log_q = q.log_conditional(z.unsqueeze(1), q.sample_psi(K).unsqueeze(0))  # (S, K)
    top = log_q.max(1, keepdim=True).values
    return (log_target(z) - (top.squeeze(1) + (log_q - top).exp().mean(1).log())).mean()


@pytest.mark.parametrize("fn", [semi_implicit.sivi_upper_bound, _per_z, _mean_in_log_space])
def test_upper_bound_accepts(fn, capsys):
    accepts(check_sivi_upper_bound, fn, capsys)


def _wrong_upper(combine):
    def bound(log_target, q, S, K):
        z, others = _others(q, S, K)
        return combine(log_target(z), others, K)

    return bound


@pytest.mark.parametrize(
    "fn, words",
    [
        (semi_implicit.sivi_bound, "lower bound of exercise 6.2"),
        (_wrong_upper(lambda lp, oth, K: (lp - (oth.logsumexp(1) - math.log(K + 1))).mean()), "not log(K + 1)"),
        (_wrong_upper(lambda lp, oth, K: (lp - oth.logsumexp(1)).mean()), "needs its 1/K"),
        (_wrong_upper(lambda lp, oth, K: (lp - oth.mean(1)).mean()), "averages the log densities"),
        (_wrong_upper(lambda lp, oth, K: -(oth.logsumexp(1) - math.log(K)).mean()), "log_target(z) is missing"),
        (_wrong_upper(lambda lp, oth, K: ((oth.logsumexp(1) - math.log(K)) - lp).mean()), "sign error"),
        (_wrong_upper(lambda lp, oth, K: lp - (oth.logsumexp(1) - math.log(K))), "average over the S"),
        (_wrong_upper(lambda lp, oth, K: (lp - oth.exp().mean(1).log()).mean()), "underflows"),
        (lambda lt, q, S, K: semi_implicit.sivi_upper_bound(lt, q, S, K + 1), "off by one"),
    ],
)
def test_upper_bound_names_mistakes(fn, words, capsys):
    rejects(check_sivi_upper_bound, fn, capsys, words)


# ------------------------------------------------------------ 6.6


def _by_hand(psi, C):
    centred = psi - psi.mean(0)
    return centred.T @ centred / (psi.shape[0] - 1) + C @ C.T


@pytest.mark.parametrize(
    "fn",
    [
        lambda psi, C: torch.cov(psi.T) + C @ C.T,
        lambda psi, C: torch.cov(psi.T, correction=0) + C @ C.T,  # dividing by n is as right
        _by_hand,
        lambda psi, C: torch.cov(psi.T) + torch.einsum("ik,jk->ij", C, C),
        lambda psi, C: torch.cov(psi.mT, correction=0) + torch.einsum("ik,jk->ij", C, C),
    ],
)
def test_covariance_accepts(fn, capsys):
    accepts(check_semi_implicit_covariance, fn, capsys)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda psi, C: torch.cov(psi.T) + C, ("not C itself",)),
        (lambda psi, C: torch.cov(psi.T) + C.T @ C, ("not C^T C",)),
        (lambda psi, C: torch.cov(psi.T), ("conditional's covariance is missing",)),
        (lambda psi, C: C @ C.T, ("spread of the mixing variable is missing",)),
        (lambda psi, C: psi.T @ psi / psi.shape[0] + C @ C.T, ("must be centred",)),
        (lambda psi, C: torch.diag(torch.cov(psi.T).diagonal() + (C @ C.T).diagonal()), ("only the diagonal",)),
        (lambda psi, C: torch.cov(psi.T) + torch.diag((C**2).sum(0)), ("not covariances",)),
        (lambda psi, C: torch.cov(psi)[:3, :3] + C @ C.T, ("psi.T",)),
        (lambda psi, C: np.cov(psi.numpy().T) + (C @ C.T).numpy(), ("numpy.ndarray", "not a torch tensor")),
        (lambda psi, C: torch.tensor(np.cov(psi.numpy().T)) + C @ C.T, ("float64 for float32", "NumPy")),
        (lambda psi, C: torch.cov(psi) + C @ C.T, ("broadcasting error", "pass psi.T")),
        (lambda psi, C: torch.tensor(np.cov(psi.numpy())) + C @ C.T, ("broadcasting error", "pass psi.T")),
    ],
)
def test_covariance_names_mistakes(fn, words, capsys):
    rejects(check_semi_implicit_covariance, fn, capsys, *words)


# ------------------------------------------------------------ 6.5


def _solve(z, psi, C):  # one triangular solve, the pairs' differences as the columns of its right-hand side
    d = z - psi
    u = torch.linalg.solve_triangular(C, d.reshape(-1, d.shape[-1]).T, upper=False).T.reshape(d.shape)
    return -0.5 * (u**2).sum(-1) - torch.log(torch.diagonal(C)).sum() - 0.5 * C.shape[-1] * math.log(2 * math.pi)


def _inverse_first(z, psi, C):  # C^{-1} z - C^{-1} psi: each side transformed before broadcasting
    C_inv = torch.linalg.solve_triangular(C, torch.eye(C.shape[-1], dtype=C.dtype), upper=False)
    u = z @ C_inv.T - psi @ C_inv.T
    return -0.5 * (u**2).sum(-1) - C.diagonal().log().sum() - 0.5 * C.shape[-1] * math.log(2 * math.pi)


@pytest.mark.parametrize(
    "fn",
    [
        lambda z, psi, C: MultivariateNormal(psi, scale_tril=C).log_prob(z),
        _solve,
        _inverse_first,
        gaussian.log_normal_tril,
    ],
)
def test_log_normal_tril_accepts(fn, capsys):
    accepts(check_log_normal_tril, fn, capsys)


def _form(quad, log_det=lambda C: C.diagonal().log().sum(), const=0.5, half=0.5):
    def fn(z, psi, C):
        L = C.shape[-1]
        return -half * quad(z - psi, C) - log_det(C) - const * L * math.log(2 * math.pi)

    return fn


def _u_sq(d, C):
    return (torch.linalg.solve_triangular(C, d.unsqueeze(-1), upper=False).squeeze(-1) ** 2).sum(-1)


@pytest.mark.parametrize(
    "fn, words",
    [
        (
            _form(
                lambda d, C: (torch.linalg.solve_triangular(C.T, d.unsqueeze(-1), upper=True).squeeze(-1) ** 2).sum(-1)
            ),
            "solve with C (lower-triangular)",
        ),
        (_form(lambda d, C: ((d @ C.T) ** 2).sum(-1)), "not C (z - psi)"),
        (_form(_u_sq, log_det=lambda C: 0.0), "log-determinant term is missing"),
        (_form(_u_sq, log_det=lambda C: 2 * C.diagonal().log().sum()), "once"),
        (_form(_u_sq, half=1.0), "factor 1/2 is missing"),
        (_form(_u_sq, const=0.0), "normalising constant -L/2 log(2 pi) is missing"),
        (lambda z, psi, C: Normal(psi, C.diagonal()).log_prob(z).sum(-1), "off-diagonal entries of C are ignored"),
        (lambda z, psi, C: Normal(psi, C.diagonal()).log_prob(z), "sum over the last axis"),
        (lambda z, psi, C: MultivariateNormal(psi, scale_tril=C.detach()).log_prob(z), "gradient"),
    ],
)
def test_log_normal_tril_names_mistakes(fn, words, capsys):
    rejects(check_log_normal_tril, fn, capsys, words)


def test_log_normal_tril_names_a_float32_determinant(capsys):
    def via_det(z, psi, C):
        Sigma = C @ C.T
        u = torch.linalg.solve_triangular(C, (z - psi).unsqueeze(-1), upper=False).squeeze(-1)
        return -0.5 * (u**2).sum(-1) - 0.5 * torch.log(torch.det(Sigma)) - 0.5 * C.shape[-1] * math.log(2 * math.pi)

    rejects(check_log_normal_tril, via_det, capsys, "float32")


# ------------------------------------------------------------ 7.4

from helpers.checks import check_dsivi_bound  # noqa: E402


def _dsivi_per_z(log_likelihood, prior, q, S, K):  # fresh draws for every z, densities from torch.distributions
    z, psi0 = q.rsample(S)
    zeta = prior.sample_psi(S * K).view(S, K, -1)
    psi = torch.cat([psi0.unsqueeze(1), q.sample_psi(S * K).view(S, K, -1)], 1)  # (S, K + 1, L)
    log_p = Normal(zeta, prior.sigma).log_prob(z.unsqueeze(1)).sum(-1)
    log_q = Normal(psi, q.sigma).log_prob(z.unsqueeze(1)).sum(-1)
    return torch.mean(
        log_likelihood(z) + torch.logsumexp(log_p, 1) - math.log(K) - torch.logsumexp(log_q, 1) + math.log(K + 1)
    )


def _dsivi_with_sivi_pieces(log_likelihood, prior, q, S, K):  # lesson 06's pieces: the upper and lower bounds
    # log p~(z) is the upper bound's average with the prior's conditional; log q~(z) the lower bound's
    z, psi0 = q.rsample(S)
    log_prior = torch.logsumexp(prior.log_conditional(z.unsqueeze(1), prior.sample_psi(K).unsqueeze(0)), 1)
    own = q.log_conditional(z, psi0).unsqueeze(1)
    others = q.log_conditional(z.unsqueeze(1), q.sample_psi(K).unsqueeze(0))
    log_q = torch.logsumexp(torch.cat([others, own], 1), 1)  # psi_0 last: the order does not matter
    return (log_likelihood(z) + log_prior - math.log(K) - log_q + math.log(K + 1)).mean()


def _dsivi_loop(log_likelihood, prior, q, S, K):  # one z at a time, fresh draws for each: slow but right
    z, psi0 = q.rsample(S)
    terms = []
    for s in range(S):
        log_p = torch.logsumexp(prior.log_conditional(z[s], prior.sample_psi(K)), 0) - math.log(K)
        log_q = torch.cat([q.log_conditional(z[s], psi0[s]).reshape(1), q.log_conditional(z[s], q.sample_psi(K))])
        terms.append(log_likelihood(z[s : s + 1])[0] + log_p - torch.logsumexp(log_q, 0) + math.log(K + 1))
    return torch.stack(terms).mean()


def _dsivi_draws_first(log_likelihood, prior, q, S, K):  # K draws per z laid out (K, S); extras from a second rsample
    z, psi0 = q.rsample(S)
    zeta = prior.sample_psi(K * S).view(K, S, -1)
    _, psi = q.rsample(K)
    log_p = Normal(zeta, prior.sigma).log_prob(z).sum(-1)  # (K, S)
    log_q = torch.cat([q.log_conditional(z, psi0).unsqueeze(0), q.log_conditional(z, psi.unsqueeze(1))], 0)
    return (log_likelihood(z) + log_p.logsumexp(0) - math.log(K) - log_q.logsumexp(0) + math.log(K + 1)).mean()


@pytest.mark.parametrize(
    "fn", [semi_implicit.dsivi_bound, _dsivi_per_z, _dsivi_with_sivi_pieces, _dsivi_loop, _dsivi_draws_first]
)
def test_dsivi_bound_accepts(fn, capsys):
    accepts(check_dsivi_bound, fn, capsys)


def test_dsivi_bound_check_of_a_slow_answer_is_fast(capsys):
    import time

    start = time.process_time()
    accepts(check_dsivi_bound, _dsivi_loop, capsys)
    assert time.process_time() - start < 20  # about 0.3 s of CPU at idle; the old check took 80 s for this answer


def _dsivi_wrong(prior_term, q_term, ll_sign=1.0, prior_sign=1.0):
    def bound(log_likelihood, prior, q, S, K):
        z, psi0 = q.rsample(S)
        zeta, psi = prior.sample_psi(K), q.sample_psi(K)
        log_p = prior_term(prior, q, z, zeta, psi, K)
        own = q.log_conditional(z, psi0).unsqueeze(1)
        others = q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0))
        return (ll_sign * log_likelihood(z) + prior_sign * log_p - q_term(own, others, K)).mean()

    return bound


def _good_prior(prior, q, z, zeta, psi, K):
    return torch.logsumexp(prior.log_conditional(z.unsqueeze(1), zeta.unsqueeze(0)), 1) - math.log(K)


def _good_q(own, others, K):
    return torch.logsumexp(torch.cat([own, others], 1), 1) - math.log(K + 1)


@pytest.mark.parametrize(
    "fn, words",
    [
        (_dsivi_wrong(_good_prior, lambda own, oth, K: torch.logsumexp(oth, 1) - math.log(K)), "psi_0, the draw"),
        (
            _dsivi_wrong(_good_prior, lambda own, oth, K: torch.logsumexp(torch.cat([own, oth], 1), 1) - math.log(K)),
            "different numbers of terms",
        ),
        (
            _dsivi_wrong(
                lambda p, q, z, zeta, psi, K: p.log_conditional(z.unsqueeze(1), zeta.unsqueeze(0)).mean(1), _good_q
            ),
            "prior's term averages log densities",
        ),
        (_dsivi_wrong(_good_prior, lambda own, oth, K: torch.cat([own, oth], 1).mean(1)), "q's term averages log"),
        (
            _dsivi_wrong(
                lambda p, q, z, zeta, psi, K: (
                    torch.logsumexp(p.log_conditional(z.unsqueeze(1), psi.unsqueeze(0)), 1) - math.log(K)
                ),
                _good_q,
            ),
            "mixing variable (prior.sample_psi(K))",
        ),
        (_dsivi_wrong(_good_prior, _good_q, ll_sign=0.0), "log_likelihood(z)"),
        (_dsivi_wrong(_good_prior, _good_q, prior_sign=-1.0), "plus sign"),
        (
            _dsivi_wrong(
                lambda p, q, z, zeta, psi, K: p.log_conditional(z.unsqueeze(1), zeta.unsqueeze(0)).exp().mean(1).log(),
                _good_q,
            ),
            "log space",
        ),
        (
            _dsivi_wrong(_good_prior, lambda own, oth, K: torch.logsumexp(oth, 1) - math.log(K), ll_sign=-1.0),
            "psi_0, the draw",  # two slips, each named on its own side
        ),
        (_dsivi_wrong(_good_prior, lambda own, oth, K: own[:, 0]), "q's K extra draws are missing"),
        (_dsivi_wrong(_good_prior, lambda own, oth, K: torch.logsumexp(torch.cat([own, oth], 1), 1)), "1/(K + 1)"),
        (
            _dsivi_wrong(
                lambda p, q, z, zeta, psi, K: (
                    q.log_conditional(z.unsqueeze(1), zeta.unsqueeze(0)).logsumexp(1) - math.log(K)
                ),
                _good_q,
            ),
            "prior's own conditional",
        ),
    ],
)
def test_dsivi_bound_names_mistakes(fn, words, capsys):
    rejects(check_dsivi_bound, fn, capsys, words)


def _dsivi_prior_with_own(log_likelihood, prior, q, S, K):  # Question 7.5's colleague: an own term for the prior
    z, psi0 = q.rsample(S)
    log_p = torch.cat(
        [prior.log_conditional(z, psi0).unsqueeze(1), prior.log_conditional(z[:, None], prior.sample_psi(K))], 1
    )
    log_q = torch.cat([q.log_conditional(z, psi0).unsqueeze(1), q.log_conditional(z[:, None], q.sample_psi(K))], 1)
    return (log_likelihood(z) + log_p.logsumexp(1) - log_q.logsumexp(1)).mean()  # both over K + 1 terms


def _dsivi_fresh_psi0(log_likelihood, prior, q, S, K):
    z, _ = q.rsample(S)
    log_p = prior.log_conditional(z[:, None], prior.sample_psi(K)).logsumexp(1) - math.log(K)
    log_q = torch.cat(
        [q.log_conditional(z, q.sample_psi(S)).unsqueeze(1), q.log_conditional(z[:, None], q.sample_psi(K))], 1
    )
    return (log_likelihood(z) + log_p - log_q.logsumexp(1) + math.log(K + 1)).mean()


def _dsivi_reused(log_likelihood, prior, q, S, K):  # the z's own psi_0 reused as the K "fresh" draws
    z, psi0 = q.rsample(S)
    log_p = prior.log_conditional(z[:, None], prior.sample_psi(K)).logsumexp(1) - math.log(K)
    log_q = torch.cat([q.log_conditional(z, psi0).unsqueeze(1), q.log_conditional(z[:, None], psi0[:K])], 1)
    return (log_likelihood(z) + log_p - log_q.logsumexp(1) + math.log(K + 1)).mean()


def _dsivi_summed(log_likelihood, prior, q, S, K):
    return semi_implicit.dsivi_bound(log_likelihood, prior, q, S, K) * S


def _dsivi_negated(log_likelihood, prior, q, S, K):
    return -semi_implicit.dsivi_bound(log_likelihood, prior, q, S, K)


def _dsivi_plain_both(log_likelihood, prior, q, S, K):  # lesson 07's "plain on both sides", with the mean of logs
    z, _ = q.rsample(S)
    log_p = prior.log_conditional(z[:, None], prior.sample_psi(K)).mean(1)
    log_q = q.log_conditional(z[:, None], q.sample_psi(K)).logsumexp(1) - math.log(K)
    return (log_likelihood(z) + log_p - log_q).mean()


@pytest.mark.parametrize(
    "fn, words",
    [
        (_dsivi_prior_with_own, ("prior's average takes no own term",)),
        (_dsivi_fresh_psi0, ("not a fresh draw",)),
        (_dsivi_reused, ("reusing the draws psi_0",)),
        (_dsivi_summed, ("not their sum",)),
        (_dsivi_negated, ("whole estimate has the wrong sign",)),
        (_dsivi_plain_both, ("First, the prior's term averages log densities", "Second, psi_0, the draw")),
    ],
)
def test_dsivi_bound_names_each_slip(fn, words, capsys):
    rejects(check_dsivi_bound, fn, capsys, *words)


# ------------------------------------------------------------ 7.7

from helpers import kernel_stein  # noqa: E402
from helpers.checks import check_ksivi_loss  # noqa: E402


def _ksivi(
    score_q=lambda z, psi, s: -(z - psi) / s**2,
    create_graph=True,
    combine=lambda sp, sq: sp - sq,
    fresh_psi=False,
    bandwidth_rule=None,
    use_given_ksd=True,
    detach=False,
):
    def loss(log_target, q, S, bandwidth=None, ksd=kernel_stein.ksd_u_statistic):
        z, psi = q.rsample(S)
        if detach:
            z = z.detach().requires_grad_(True)
        if fresh_psi:
            psi = q.sample_psi(S)
        kwargs = {"create_graph": True} if create_graph else {"retain_graph": True}
        (score_p,) = torch.autograd.grad(log_target(z).sum(), z, **kwargs)
        h = bandwidth if bandwidth is not None else kernel_stein.median_bandwidth(z)
        if bandwidth_rule is not None:
            h = bandwidth_rule(z, bandwidth)
        statistic = ksd if use_given_ksd else kernel_stein.ksd_u_statistic
        return statistic(z, combine(score_p, score_q(z, psi, q.sigma)), h)

    return loss


def _ksivi_by_log_conditional(log_target, q, S, bandwidth=None, ksd=kernel_stein.ksd_u_statistic):
    # both scores in one gradient, through the family's own log_conditional (lessons 07 and 08 teach it)
    z, psi = q.rsample(S)
    (diff,) = torch.autograd.grad((log_target(z) - q.log_conditional(z, psi)).sum(), z, create_graph=True)
    return ksd(z, diff, kernel_stein.median_bandwidth(z) if bandwidth is None else bandwidth)


def _ksivi_negated(log_target, q, S, bandwidth=None, ksd=kernel_stein.ksd_u_statistic):
    return -kernel_stein.ksivi_loss(log_target, q, S, bandwidth, ksd)


def _median_by_hand(z, bandwidth):
    if bandwidth is not None:
        return bandwidth
    S = z.shape[0]
    d = ((z[:, None] - z[None]) ** 2).sum(-1).sqrt().detach()
    return d[~torch.eye(S, dtype=torch.bool)].median() / math.sqrt(2 * math.log(S + 1))


@pytest.mark.parametrize(
    "fn",
    [
        kernel_stein.ksivi_loss,
        _ksivi(score_q=lambda z, psi, s: (psi - z) / s.pow(2)),
        _ksivi(score_q=lambda z, psi, s: -(z - psi) * torch.exp(-2 * torch.log(s)), bandwidth_rule=_median_by_hand),
        _ksivi_by_log_conditional,
    ],
)
def test_ksivi_loss_accepts(fn, capsys):
    accepts(check_ksivi_loss, fn, capsys)


@pytest.mark.parametrize(
    "fn, words",
    [
        (_ksivi(create_graph=False), "create_graph=True"),
        (_ksivi(score_q=lambda z, psi, s: -(z - psi) / s), "divides by the variance"),
        (_ksivi(score_q=lambda z, psi, s: (z - psi) / s**2), "a sign is off"),
        (_ksivi(combine=lambda sp, sq: sp + sq), "a sign is off"),
        (_ksivi(fresh_psi=True), "not a fresh draw"),
        (_ksivi(bandwidth_rule=lambda z, b: kernel_stein.median_bandwidth(z)), "use the bandwidth you are given"),
        (_ksivi(use_given_ksd=False), "never called"),
        (_ksivi(bandwidth_rule=lambda z, b: 1.0 if b is None else b), "median heuristic"),
        (_ksivi(detach=True), "gradient"),
        (_ksivi(combine=lambda sp, sq: -sq), "target's score s_p(z_i) is missing"),
        (_ksivi(combine=lambda sp, sq: sp), "conditional score is missing"),
        (_ksivi(combine=lambda sp, sq: sp / sp.shape[0] - sq), "divided by S"),
        (_ksivi_negated, "wrong sign"),
    ],
)
def test_ksivi_loss_names_mistakes(fn, words, capsys):
    rejects(check_ksivi_loss, fn, capsys, words)


# ------------------------------------------------------------ 7.3


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
