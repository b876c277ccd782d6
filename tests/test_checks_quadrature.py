"""The checkers of helpers.checks.quadrature, lesson 01's 1.4 (the reverse KL by quadrature) and lesson 08's 8.10
(the KL divergence on a grid), accept correct answers written in different ways and name the mistake in
plausible wrong ones, at the lessons' scales too."""

import math

import pytest
import torch
import torch.nn.functional as F
from checker_assertions import accepts, rejects, replays_to_passed, run
from torch.distributions import Categorical, Normal, kl_divergence

from helpers import quadrature
from helpers.checks import check_kl_on_grid, check_reverse_kl

LOG2PI = math.log(2 * math.pi)


# ------------------------------------------------------------ exercise 1.4


def reverse_kl_trapezoid(m, s, log_target, z_grid):
    log_q = Normal(m, s).log_prob(z_grid)
    return torch.trapezoid(log_q.exp() * (log_q - log_target(z_grid)), z_grid)


def reverse_kl_rectangles(m, s, log_target, z_grid):
    # a Riemann sum on the uniform grid: the integrand vanishes at both ends, so it equals the trapezoid rule
    dz = z_grid[1] - z_grid[0]
    log_q = Normal(m, s).log_prob(z_grid)
    return (torch.exp(log_q) * (log_q - log_target(z_grid))).sum() * dz


def reverse_kl_closed_entropy(m, s, log_target, z_grid):
    # KL = -H[q] - E_q[log p]: the entropy in closed form, the cross-entropy by quadrature
    q = Normal(m, s)
    return -q.entropy() - torch.trapezoid(q.log_prob(z_grid).exp() * log_target(z_grid), z_grid)


def reverse_kl_simpson(m, s, log_target, z_grid):
    # Simpson's rule (an odd number of grid points)
    log_q = Normal(m, s).log_prob(z_grid)
    f = log_q.exp() * (log_q - log_target(z_grid))
    h = z_grid[1] - z_grid[0]
    return h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


@pytest.mark.parametrize(
    "fn", [reverse_kl_trapezoid, reverse_kl_rectangles, reverse_kl_closed_entropy, reverse_kl_simpson]
)
def test_reverse_kl_accepts_correct_answers(fn, capsys):
    accepts(check_reverse_kl, fn, capsys)


def _q_and_p(m, s, log_target, z_grid):
    log_q, log_p = Normal(m, s).log_prob(z_grid), log_target(z_grid)
    return log_q, log_p


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (
            lambda m, s, lt, z: torch.trapezoid(lt(z).exp() * (lt(z) - Normal(m, s).log_prob(z)), z),
            "forward KL(p || q)",
        ),
        (lambda m, s, lt, z: -reverse_kl_trapezoid(m, s, lt, z), "sign error"),
        (lambda m, s, lt, z: torch.trapezoid(Normal(m, s).log_prob(z) - lt(z), z), "weighted by q's density"),
        (
            lambda m, s, lt, z: torch.trapezoid(lt(z).exp() * (Normal(m, s).log_prob(z) - lt(z)), z),
            "the weights are p's density",
        ),
        (
            lambda m, s, lt, z: (Normal(m, s).log_prob(z).exp() * (Normal(m, s).log_prob(z) - lt(z))).sum(),
            "missing the grid spacing",
        ),
        (
            lambda m, s, lt, z: (Normal(m, s).log_prob(z).exp() * (Normal(m, s).log_prob(z) - lt(z))).mean(),
            "a mean over the grid points",
        ),
        (
            lambda m, s, lt, z: -torch.trapezoid(Normal(m, s).log_prob(z).exp() * lt(z), z),
            "missing the entropy part",
        ),
        (lambda m, s, lt, z: reverse_kl_trapezoid(m, s.sqrt(), lt, z), "s is used as a variance"),
        (
            lambda m, s, lt, z: torch.tensor(reverse_kl_trapezoid(m, s, lt, z).item(), dtype=torch.float64),
            "no gradient reaches m and s",
        ),
        (
            lambda m, s, lt, z: reverse_kl_trapezoid(m, s, lt, z).unsqueeze(0),
            "wrong shape",
        ),
    ],
)
def test_reverse_kl_names_mistakes(fn, words, capsys):
    rejects(check_reverse_kl, fn, capsys, words)


def test_reverse_kl_names_an_ignored_target(capsys):
    weights, locs, scales = (torch.tensor(v, dtype=torch.float64) for v in ([0.3, 0.7], [-2.0, 1.5], [0.5, 0.8]))

    def lesson_target(z):
        return torch.logsumexp(torch.log(weights) + Normal(locs, scales).log_prob(z.unsqueeze(-1)), -1)

    rejects(
        check_reverse_kl,
        lambda m, s, lt, z: reverse_kl_trapezoid(m, s, lesson_target, z),
        capsys,
        "ignores its log_target",
    )


def test_reverse_kl_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(m, s, log_target, z_grid):
        log_q = Normal(m, s).log_prob(z_grid)
        q = log_q.exp()
        q.mul_(1.0)  # in place on a tensor autograd needs: the gradient fails
        return torch.trapezoid(q * (log_q - log_target(z_grid)), z_grid)

    result, out = run(check_reverse_kl, in_place, capsys)
    assert result.status == "failed" and "changes a tensor in place" in out, out


# ------------------------------------------------------------ exercise 1.4 at the lesson's scale (float32, narrow q)


def _kl_log_ratio(m, s, lt, z):  # log of a ratio of densities: 0 * log(0 / p) is nan where q underflows
    q, p = Normal(m, s).log_prob(z).exp(), lt(z).exp()
    return torch.trapezoid(q * torch.log(q / p), z)


def _kl_log_of_exps(m, s, lt, z):  # log(q) of an exp: log 0 = -inf where q underflows
    q = Normal(m, s).log_prob(z).exp()
    return torch.trapezoid(q * (torch.log(q) - lt(z)), z)


def _kl_log_p_of_exp(m, s, lt, z):  # log(p) of an exp: +inf where p underflows
    log_q = Normal(m, s).log_prob(z)
    return torch.trapezoid(log_q.exp() * (log_q - torch.log(lt(z).exp())), z)


def _kl_masked(m, s, lt, z):  # the value is finite, but torch.where still sends the masked branch's nan gradient back
    q, p = Normal(m, s).log_prob(z).exp(), lt(z).exp()
    return torch.trapezoid(torch.where(q > 0, q * torch.log(q / p), torch.zeros_like(q)), z)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_kl_log_ratio, "q's density underflows to 0"),
        (_kl_log_of_exps, "keep the logs"),
        (_kl_log_p_of_exp, "in float32 at the lesson's scale"),
        (_kl_masked, "the gradient with respect to m is nan"),
        (
            lambda m, s, lt, z: torch.trapezoid(z, Normal(m, s).log_prob(z).exp() * (Normal(m, s).log_prob(z) - lt(z))),
            "the arguments of torch.trapezoid are swapped",
        ),
        (lambda m, s, lt, z: -reverse_kl_trapezoid(m, s, lt, z), "sign error: KL(q || p)"),
    ],
)
def test_reverse_kl_names_the_lesson_scale_slips(fn, words, capsys):
    rejects(check_reverse_kl, fn, capsys, words)


def test_reverse_kl_swapped_arguments_are_not_called_a_sign_error(capsys):
    def swapped(m, s, lt, z):
        log_q = Normal(m, s).log_prob(z)
        return torch.trapezoid(z, log_q.exp() * (log_q - lt(z)))

    result, out = run(check_reverse_kl, swapped, capsys)
    assert not result and "sign error" not in out, out


def reverse_kl_float32_safe(m, s, log_target, z_grid):
    # the lesson's dtype kept: xlogy-free, logs only, the integrand computed in the grid's dtype
    log_q = torch.distributions.Normal(m.to(z_grid.dtype), s.to(z_grid.dtype)).log_prob(z_grid)
    return torch.trapezoid(torch.exp(log_q) * (log_q - log_target(z_grid)), x=z_grid)


def test_reverse_kl_accepts_the_keyword_form(capsys):
    accepts(check_reverse_kl, reverse_kl_float32_safe, capsys)


# ------------------------------------------------------------ 8.10


def _log_softmax(log_q, log_p):
    lq, lp = torch.log_softmax(log_q, 0), torch.log_softmax(log_p, 0)
    return (lq.exp() * (lq - lp)).sum()


def _kl_div(log_q, log_p):
    return F.kl_div(torch.log_softmax(log_p, 0), torch.log_softmax(log_q, 0), reduction="sum", log_target=True)


def _softmax_weights(log_q, log_p):
    return torch.dot(torch.softmax(log_q, 0), torch.log_softmax(log_q, 0) - torch.log_softmax(log_p, 0))


def _kl_div_of_probabilities(log_q, log_p):  # the target as probabilities: kl_div's xlogy keeps 0 log 0 = 0
    return F.kl_div(torch.log_softmax(log_p, 0), torch.softmax(log_q, 0), reduction="sum")


def _cross_entropy_minus_entropy(log_q, log_p):  # H(q, p) - H(q), both from the logits
    return F.cross_entropy(log_p, torch.softmax(log_q, 0)) - Categorical(logits=log_q).entropy()


@pytest.mark.parametrize(
    "fn",
    [
        quadrature.kl_on_grid,
        _log_softmax,
        _kl_div,
        _softmax_weights,
        _kl_div_of_probabilities,
        _cross_entropy_minus_entropy,
    ],
)
def test_kl_on_grid_accepts(fn, capsys):
    accepts(check_kl_on_grid, fn, capsys)


def _normalised(x):
    return x - torch.logsumexp(x, 0)


def _max_shift(log_q, log_p):  # the max trick without the sum: in range, but not normalised
    lq, lp = log_q - log_q.max(), log_p - log_p.max()
    return (lq.exp() * (lq - lp)).sum()


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda q, p: quadrature.kl_on_grid(p, q), "the other direction"),
        (lambda q, p: (torch.softmax(q, 0) * (q - p)).sum(), "the logs are not"),
        (lambda q, p: (torch.softmax(q, 0) * (_normalised(q) - p)).sum(), "p is not normalised"),
        (lambda q, p: (torch.softmax(q, 0) * (q - _normalised(p))).sum(), "q is not normalised"),
        (lambda q, p: (torch.softmax(q, 0) * (_normalised(q) - _normalised(p))).mean(), "not a mean"),
        (lambda q, p: (q.exp() * (_normalised(q) - _normalised(p))).sum(), "not by exp(log q_i) itself"),
        (lambda q, p: -quadrature.kl_on_grid(q, p), "sign is off"),
        (lambda q, p: (q.exp() * (q - p)).sum(), "neither density is renormalised"),
        (_max_shift, "does not normalise"),
        (lambda q, p: (torch.softmax(q, 0) * ((q - q.max()) - (p - p.max()))).sum(), "subtract logsumexp"),
        (
            lambda q, p: (
                (q.exp() / q.exp().sum()) * ((q.exp() / q.exp().sum()).log() - (p.exp() / p.exp().sum()).log())
            ).sum(),
            "normalise in log space",
        ),
    ],
)
def test_kl_on_grid_rejects(fn, words, capsys):
    rejects(check_kl_on_grid, fn, capsys, words)


def _categorical(log_q, log_p):
    return kl_divergence(Categorical(logits=log_q), Categorical(logits=log_p))


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda q, p: (_normalised(q) - _normalised(p)).mean(), "q's weights are missing"),
        (lambda q, p: (torch.log_softmax(q, 0) - torch.log_softmax(p, 0)).sum(), "not a plain sum of the log ratios"),
        (
            lambda q, p: F.kl_div(torch.log_softmax(p, 0), torch.softmax(q, 0), reduction="batchmean"),
            "'batchmean' divides by the G points",
        ),
        (_categorical, "kl_divergence of two Categoricals (it sets each term whose probability under p is 0 to inf)"),
        (lambda q, p: _categorical(q.double(), p.double()), "in float64"),
        (
            lambda q, p: kl_divergence(Categorical(probs=torch.softmax(q, 0)), Categorical(probs=torch.softmax(p, 0))),
            "clamping it to float32's eps",
        ),
        (
            lambda q, p: kl_divergence(Categorical(probs=q.exp()), Categorical(probs=p.exp())),
            "exp(log q_i) overflows to inf beyond 88.7",
        ),
        (
            lambda q, p: (torch.softmax(q, 0) * (torch.log_softmax(q, 0) - torch.softmax(p, 0).log())).sum(),
            "never take the log of a probability",
        ),
    ],
)
def test_kl_on_grid_names_what_fails_in_float32_and_the_missing_weights(fn, words, capsys):
    """torch's own KL between Categoricals is right in exact arithmetic, but it sets a term to inf wherever p's
    probability is 0, and a p that underflows in float32 (below e^-103) is 0 there though its log is finite: on
    the lesson's fits (a KL of a few nats) it returns inf, in float64 too for a semi-implicit family with a small
    sigma. The checker says so, and what to do."""
    rejects(check_kl_on_grid, fn, capsys, words)


def test_kl_on_grid_float32_probes_are_what_the_checker_says():
    """At the first float32 probe only exp of the raw log densities overflows; at the second, p's normalised
    probabilities underflow to 0 where q's do not, and the KL is finite."""
    lq, lp = torch.linspace(40.0, 100.0, 400), -2.5 * torch.linspace(-3.0, 3.0, 400) ** 2
    assert lq.max() > 88.8 and torch.isfinite(_categorical(lq, lp))
    assert _normalised(lq).min() > -103 and _normalised(lp).min() > -103
    lq, lp = torch.linspace(-900.0, 60.0, 400), -20.0 * torch.linspace(-8.0, 8.0, 400) ** 2
    under = (torch.softmax(lp, 0) == 0) & (torch.softmax(lq, 0) > 0)
    assert under.any() and torch.isfinite(quadrature.kl_on_grid(lq, lp))
    assert _categorical(lq, lp) == math.inf and _categorical(lq.double(), lp.double()) == math.inf


# ------------------------------------------------------------ the grader's replay


@pytest.mark.parametrize(
    "check, answer",
    [
        (check_kl_on_grid, quadrature.kl_on_grid),
    ],
)
def test_the_graders_replay_confirms_a_right_answer(check, answer, tmp_path):
    replays_to_passed(check, answer, tmp_path)
