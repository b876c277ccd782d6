"""The checkers of helpers.checks.uivi, lesson 08's 8.2 (UIVI's reverse conditional, up to a constant), 8.3
(the marginal score estimate) and 8.4 (UIVI's surrogate objective), accept correct answers written in different
ways and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import BAD_ANSWERS, accepts, never_raises, reads_not_attempted, rejects, replays_to_passed
from torch.distributions import Normal

from helpers import uivi
from helpers.checks import check_marginal_score_estimate, check_reverse_conditional_log_prob, check_uivi_objective

LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------ 8.2


def _no_constants(q, z, eps):  # drops every term that depends on neither z nor eps: right up to a constant
    psi = q.mixing(eps)
    return (-0.5 * ((z - psi) / q.sigma) ** 2).sum(-1) - 0.5 * (eps**2).sum(-1)


def _distributions(q, z, eps):
    return Normal(q.mixing(eps), q.sigma).log_prob(z).sum(-1) + Normal(0.0, 1.0).log_prob(eps).sum(-1)


def _by_hand(q, z, eps):
    psi = q.mixing(eps)
    cond = -0.5 * ((z - psi) ** 2 / q.sigma**2).sum(-1) - q.log_sigma.sum() - LOG_2PI
    return cond - 0.5 * (eps**2).sum(-1) - 1.5 * LOG_2PI


@pytest.mark.parametrize("fn", [uivi.reverse_conditional_log_prob, _no_constants, _distributions, _by_hand])
def test_reverse_conditional_accepts(fn, capsys):
    accepts(check_reverse_conditional_log_prob, fn, capsys)


def _prior(eps):
    return Normal(0.0, 1.0).log_prob(eps).sum(-1)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda q, z, eps: q.log_conditional(z, q.mixing(eps)), "prior factor q(eps)"),
        (lambda q, z, eps: _prior(eps), "conditional q(z | g(eps)) is missing"),
        (lambda q, z, eps: q.log_conditional(z, q.mixing(eps)) - _prior(eps), "the prior enters as +"),
        (lambda q, z, eps: -q.log_conditional(z, q.mixing(eps)) + _prior(eps), "the conditional enters as +"),
        (lambda q, z, eps: uivi.reverse_conditional_log_prob(q, z, eps).exp(), "not its log"),
        (
            lambda q, z, eps: (-0.5 * (z - q.mixing(eps)) ** 2 / q.sigma).sum(-1) + _prior(eps),
            "not by sigma",
        ),
        (lambda q, z, eps: q.log_conditional(z, q.sample_psi(len(z))) + _prior(eps), "fresh draws"),
        (lambda q, z, eps: uivi.reverse_conditional_log_prob(q, z, eps).sum(), "do not sum over the rows"),
        (lambda q, z, eps: Normal(q.mixing(eps), q.sigma).log_prob(z), "sum over the last axis"),
        (
            lambda q, z, eps: (
                Normal(q.mixing(eps), q.sigma).log_prob(z).mean(-1) + Normal(0.0, 1.0).log_prob(eps).mean(-1)
            ),
            "not their mean",
        ),
    ],
)
def test_reverse_conditional_rejects(fn, words, capsys):
    rejects(check_reverse_conditional_log_prob, fn, capsys, words)


# ------------------------------------------------------------ 8.3


def _mean_first(q, z, eps_draws):  # the conditional score is linear in psi: average psi first
    return (q.mixing(eps_draws).mean(0) - z) / q.sigma**2


def _loop(q, z, eps_draws):
    total = 0
    for eps in eps_draws:
        total = total + uivi.conditional_score(q, z, q.mixing(eps))
    return total / len(eps_draws)


def _autograd(q, z, eps_draws):
    zz = z.detach().expand(len(eps_draws), *z.shape).clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(q.log_conditional(zz, q.mixing(eps_draws)).sum(), zz)
    return g.mean(0)


@pytest.mark.parametrize("fn", [uivi.marginal_score_estimate, _mean_first, _loop, _autograd])
def test_marginal_score_accepts(fn, capsys):
    accepts(check_marginal_score_estimate, fn, capsys)


def _last_draw_loop(q, z, eps_draws):  # overwrites instead of adding up
    for eps in eps_draws:
        total = uivi.conditional_score(q, z, q.mixing(eps))
    return total


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda q, z, d: ((z - q.mixing(d)) / q.sigma**2).mean(0), "sign is off"),
        (lambda q, z, d: (-(z - q.mixing(d)) / q.sigma).mean(0), "not by sigma"),
        (lambda q, z, d: (-(z - q.mixing(d)) / q.sigma**2).sum(0), "their average"),
        (lambda q, z, d: (-(z - d[..., :2]) / q.sigma**2).mean(0), "psi = q.mixing(eps)"),
        (lambda q, z, d: (-(z - q.mixing(d))).mean(0), "scale sigma^2 is missing"),
        (lambda q, z, d: (-(z - q.mixing(d)) * q.sigma**2).mean(0), "multiplied by sigma^2 instead of dividing"),
        (lambda q, z, d: -(z - q.mixing(d[-1])) / q.sigma**2, "only the last of the M draws"),
        (lambda q, z, d: -(z - q.mixing(d[0])) / q.sigma**2, "only the first of the M draws"),
        (_last_draw_loop, "only the last of the M draws"),
        (lambda q, z, d: (-(z - q.mixing(d)) / q.sigma**2).mean(0) / len(d), "divided by M once more"),
        (lambda q, z, d: -(z - q.mixing(d)) / q.sigma**2, "one score per draw"),
        (lambda q, z, d: (-(z - q.mixing(d)) / q.sigma**2).mean(1), "wrong axis"),
    ],
)
def test_marginal_score_rejects(fn, words, capsys):
    rejects(check_marginal_score_estimate, fn, capsys, words)


# ------------------------------------------------------------ 8.4


def _dot_by_einsum(log_target, z, score):
    return (log_target(z) - torch.einsum("sl,sl->s", score.detach(), z)).mean()


def _two_means(log_target, z, score):  # the average of each term apart
    return log_target(z).mean() - (z * score.detach()).sum(1).mean()


def _copied_without_grad(log_target, z, score):
    with torch.no_grad():
        fixed = score.clone()
    return torch.mean(log_target(z) - torch.sum(fixed * z, dim=-1))


def _plus_a_constant(log_target, z, score):  # a surrogate's value is free: only its gradient counts
    return (log_target(z) - (score.detach() * z).sum(-1)).mean() + 7.0


@pytest.mark.parametrize(
    "fn", [uivi.uivi_objective, _dot_by_einsum, _two_means, _copied_without_grad, _plus_a_constant]
)
def test_uivi_objective_accepts(fn, capsys):
    accepts(check_uivi_objective, fn, capsys)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda lt, z, s: (lt(z) - (s * z).sum(-1)).mean(), "must be held fixed"),
        (lambda lt, z, s: (lt(z) + (s.detach() * z).sum(-1)).mean(), "sign error in the score term"),
        (lambda lt, z, s: -(s.detach() * z).sum(-1).mean(), "log p(z) is missing"),
        (lambda lt, z, s: (lt(z.detach()) - (s.detach() * z).sum(-1)).mean(), "log p(z) is missing"),
        (lambda lt, z, s: lt(z).mean(), "the score term is missing, or z is detached"),
        (lambda lt, z, s: (lt(z) - (s * z).detach().sum(-1)).mean(), "the score term is missing, or z is detached"),
        (lambda lt, z, s: (lt(z) - (s.detach() * z).sum(-1)).sum(), "the S draws are summed"),
        (lambda lt, z, s: (lt(z) - (s.detach() * z).mean(-1)).mean(), "averaged over the L coordinates too"),
        (lambda lt, z, s: (lt(z) - (s.detach() * z).mean()).mean(), "averaged over the L coordinates too"),
        (lambda lt, z, s: (lt(z) - 0.5 * (s.detach() * z).sum(-1)).mean(), "the score term is halved"),
        (lambda lt, z, s: lt(z).mean() - torch.einsum("sl,sl->s", s.detach(), z).mean() / 2, "is halved"),
        (lambda lt, z, s: lt(z).mean() - (s.detach() * z).sum(0).mean(), "summed over the draws (axis 0)"),
        (lambda lt, z, s: lt(z).mean() - (s.detach() * z).sum() / z.shape[1], "then average over the S draws"),
        (lambda lt, z, s: ((s.detach() * z).sum(-1) - lt(z)).mean(), "the whole surrogate is negated"),
        (lambda lt, z, s: lt(z) - (s.detach() * z).sum(-1), "one value per draw, shape (S,)"),
        (lambda lt, z, s: lt(z)[:, None] - s.detach() * z, "one value per draw and coordinate"),
        (lambda lt, z, s: (lt(z) - (s * z).sum(-1)).mean().detach(), "no gradient reaches the family's parameters"),
    ],
)
def test_uivi_objective_rejects(fn, words, capsys):
    rejects(check_uivi_objective, fn, capsys, words)


def test_uivi_objective_keeps_the_score_terms_scalings_apart():
    """Halving the score term, averaging it over L and summing it over the draws then averaging over L scale it by
    1/2, 1/L and S/L: the checker's problem keeps the three apart (L = 3, S = 7), so that each has its own name."""
    from helpers.checks.uivi import _objective_problem

    _, z, _, _ = _objective_problem()
    S, L = z.shape
    assert L == 3 and len({0.5, 1 / L, S / L, S, 1.0}) == 5


def test_uivi_objective_stub_and_bad_answers(capsys):
    reads_not_attempted(check_uivi_objective, capsys)
    for bad in BAD_ANSWERS:
        never_raises(check_uivi_objective, bad, capsys)


def test_the_lesson_trains_through_the_learners_objective():
    """uivi_surrogate(objective=...) uses the learner's 8.4: the same value and gradient as its own."""
    from helpers.semi_implicit import SemiImplicitGaussian

    torch.manual_seed(0)
    q = SemiImplicitGaussian.mlp(L=2, noise_dim=3, hidden=(8,), sigma=0.5).double()
    grads = []
    for objective in (None, _two_means):
        torch.manual_seed(1)
        value = uivi.uivi_surrogate(lambda z: -0.5 * (z**2).sum(-1), q, 20, objective=objective)
        grads.append(torch.autograd.grad(value, q.mixing[-1].weight)[0])
    torch.testing.assert_close(grads[0], grads[1])


# ------------------------------------------------------------ the grader's replay


@pytest.mark.parametrize(
    "check, answer",
    [
        (check_reverse_conditional_log_prob, uivi.reverse_conditional_log_prob),
        (check_marginal_score_estimate, uivi.marginal_score_estimate),
        (check_uivi_objective, uivi.uivi_objective),
    ],
)
def test_the_graders_replay_confirms_a_right_answer(check, answer, tmp_path):
    replays_to_passed(check, answer, tmp_path)
