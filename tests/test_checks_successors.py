"""The checkers of lesson 08's exercises (UIVI's reverse conditional and score estimate, the SIVI-SM objective,
an affine coupling, KL on a grid) accept correct answers written in different ways and name the mistake in
plausible wrong ones. Lesson 08 numbers its questions and exercises together: 8.1, 8.4 and 8.7 are written
questions, 8.2, 8.3, 8.5, 8.6, 8.8 and 8.9 the code exercises checked here."""

import math

import pytest
import torch
import torch.nn.functional as F
from checker_assertions import accepts, rejects
from torch.distributions import Normal

from helpers import flows, quadrature, score_matching, uivi
from helpers.checks import (
    check_affine_coupling,
    check_kl_on_grid,
    check_marginal_score_estimate,
    check_reverse_conditional_log_prob,
    check_sivism_objective,
    check_sivism_step,
)

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


# ------------------------------------------------------------ 8.5


def _with_autograd_conditional(log_target, q, f, S):
    z, psi = q.rsample(S)
    (score_p,) = torch.autograd.grad(log_target(z).sum(), z, create_graph=True)
    (score_c,) = torch.autograd.grad(q.log_conditional(z, psi).sum(), z, create_graph=True)
    fz = f(z)
    return torch.mean(2 * torch.einsum("sl,sl->s", fz, score_p - score_c) - torch.einsum("sl,sl->s", fz, fz))


def _completed_square(log_target, q, f, S):  # |d|^2 - |f - d|^2 = 2 f.d - |f|^2
    z, psi = q.rsample(S)
    (score_p,) = torch.autograd.grad(log_target(z).sum(), z, create_graph=True)
    d = score_p + (z - psi) / q.sigma**2
    return ((d**2).sum(1) - ((f(z) - d) ** 2).sum(1)).mean()


@pytest.mark.parametrize("fn", [score_matching.sivism_objective, _with_autograd_conditional, _completed_square])
def test_sivism_accepts(fn, capsys):
    accepts(check_sivism_objective, fn, capsys)


def _sivism(kind):
    def objective(log_target, q, f, S):
        z, psi = q.rsample(S)
        if kind == "fresh psi":
            psi = q.rsample(S)[1]
        log_p = log_target(z).mean() if kind == "mean score" else log_target(z).sum()
        (score_p,) = torch.autograd.grad(log_p, z, create_graph=kind != "no graph")
        score_q = {"sign": (z - psi) / q.sigma**2, "sigma": -(z - psi) / q.sigma}.get(kind, -(z - psi) / q.sigma**2)
        fz = f(psi) if kind == "f(psi)" else f(z)
        if kind == "detach":
            z, fz = z.detach(), fz.detach()
        two, square = (1.0 if kind == "no 2" else 2.0), {"+square": -1.0, "no square": 0.0}.get(kind, 1.0)
        per_draw = two * (fz * (score_p - score_q)).sum(-1) - square * (fz**2).sum(-1)
        return per_draw.sum() if kind == "sum" else per_draw.mean()

    return objective


@pytest.mark.parametrize(
    "kind, words",
    [
        ("sign", "a sign is off in the conditional score"),
        ("sigma", "not by sigma"),
        ("no 2", "factor 2"),
        ("+square", "minus sign"),
        ("no square", "the term -|f(z)|^2 is missing"),
        ("f(psi)", "evaluate f at z"),
        ("sum", "do not sum"),
        ("no graph", "create_graph=True"),
        ("fresh psi", "the same q.rsample(S) call"),
        ("mean score", "not their mean"),
        ("detach", "keep z, psi, sigma, f(z)"),
    ],
)
def test_sivism_rejects(kind, words, capsys):
    rejects(check_sivism_objective, _sivism(kind), capsys, words)


# ------------------------------------------------------------ 8.6 (one SIVI-SM update)

_objective = score_matching.sivism_objective  # the learner's 8.5 (right), without the train_family flag


def _lesson_step(objective):
    """The lesson's update (the family first, then f on a recomputed objective) on the learner's 8.5 ``objective``."""

    def step(log_target, q, f, opt_q, opt_f, S):
        opt_q.zero_grad()
        value = objective(log_target, q, f, S)
        value.backward()
        opt_q.step()
        opt_f.zero_grad()
        (-objective(log_target, q, f, S)).backward()
        opt_f.step()
        return value.item()

    return step


_family_then_f = _lesson_step(_objective)  # the lesson's loop body, with a right 8.5


def _with_log_conditional(log_target, q, f, opt_q, opt_f, S):  # an 8.5 that uses q.log_conditional
    q.zero_grad()  # the modules' zero_grad clears the same gradients as the optimisers'
    value = _with_autograd_conditional(log_target, q, f, S)
    value.backward()
    opt_q.step()
    f.zero_grad()
    loss_f = -_with_autograd_conditional(log_target, q, f, S)
    loss_f.backward()
    opt_f.step()
    return value.detach()  # a 0-d tensor without its graph is a number too


def _f_then_family(log_target, q, f, opt_q, opt_f, S):
    opt_f.zero_grad()
    (-_objective(log_target, q, f, S)).backward()
    opt_f.step()
    opt_q.zero_grad()
    value = _objective(log_target, q, f, S)
    value.backward()
    opt_q.step()
    return value.item()


def _simultaneous(log_target, q, f, opt_q, opt_f, S):  # both gradients from one objective: f's with the sign flipped
    opt_q.zero_grad()
    opt_f.zero_grad()
    value = _objective(log_target, q, f, S)
    value.backward()
    for p in f.parameters():
        p.grad = -p.grad
    opt_q.step()
    opt_f.step()
    return float(value.detach())


@pytest.mark.parametrize("fn", [score_matching.sivism_step, _family_then_f, _with_log_conditional])
def test_sivism_step_accepts(fn, capsys):
    accepts(check_sivism_step, fn, capsys)


@pytest.mark.parametrize(
    "fn, words",
    [(_f_then_family, "f stepped before the family"), (_simultaneous, "both players stepped from one objective")],
)
def test_sivism_step_rejects_the_orders_the_lesson_rules_out(fn, words, capsys):
    rejects(check_sivism_step, fn, capsys, words)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("no square", "the term -|f(z)|^2 is missing"),
        ("sign", "a sign is off in the conditional score"),
        ("no graph", "create_graph=True"),
        ("f(psi)", "evaluate f at z"),
    ],
)
def test_sivism_step_names_exercise_8_5_when_the_objective_is_the_cause(kind, words, capsys):
    step = _lesson_step(_sivism(kind))  # the lesson's update, right, on the learner's wrong 8.5
    rejects(check_sivism_step, step, capsys, "exercise 8.5")
    rejects(check_sivism_step, step, capsys, words)


def _sm_step(kind):
    def step(log_target, q, f, opt_q, opt_f, S):
        if kind != "no zero_grad q":
            opt_q.zero_grad()
        value = _objective(log_target, q, f, S)
        (-value if kind == "family climbs" else value).backward()
        opt_q.step()
        if kind == "family twice":
            opt_q.step()
        if kind not in ("no zero_grad f", "zero both first"):
            opt_f.zero_grad()
        f_value = _objective(log_target, q, f, S)
        (f_value if kind == "f descends" else -f_value).backward()
        if kind != "no f step":
            opt_f.step()
        if kind == "crash":
            raise IndexError("index 3 is out of bounds")
        return {
            "tensor": value,
            "minus": -value.item(),
            "f's value": f_value.item(),
            "none": None,
        }.get(kind, value.item())

    if kind == "zero both first":

        def step_zeroing_first(log_target, q, f, opt_q, opt_f, S):
            opt_f.zero_grad()
            return step(log_target, q, f, opt_q, opt_f, S)

        return step_zeroing_first
    return step


@pytest.mark.parametrize(
    "kind, words",
    [
        ("family climbs", "the family climbed the objective"),
        ("f descends", "f should climb it"),
        ("no zero_grad q", "opt_q.zero_grad()"),
        ("no zero_grad f", "opt_f.zero_grad() right before f's backward"),
        ("zero both first", "opt_f.zero_grad() right before f's backward"),
        ("no f step", "opt_f.step() 0 times"),
        ("family twice", "opt_q.step() ran 4 times"),
        ("tensor", "still holds its graph"),
        ("minus", "returned -objective"),
        ("f's value", "instead of the family step's objective"),
        ("none", "returned None"),
        ("crash", "IndexError"),
    ],
)
def test_sivism_step_rejects(kind, words, capsys):
    rejects(check_sivism_step, _sm_step(kind), capsys, words)


# ------------------------------------------------------------ 8.8


def _with_where(x, mask, net):
    t, s = net(mask * x)
    keep = mask.bool()
    return torch.where(keep, x, x * s.exp() + t), torch.where(keep, torch.zeros_like(s), s).sum(-1)


def _factored(x, mask, net):
    t, s = net(x * mask)
    free = 1 - mask
    return x * (mask + free * torch.exp(s)) + free * t, (s * free).sum(dim=1)


def _coupling(kind):
    def step(x, mask, net):
        t, s = net(x if kind == "net sees x" else mask * x)
        free = 1 - mask
        y = mask * x + free * (x * s.exp() + t)
        log_det = (free * s).sum(-1)
        if kind == "all s":
            log_det = s.sum(-1)
        elif kind == "minus":
            log_det = -log_det
        elif kind == "det":
            log_det = log_det.exp()
        elif kind == "det of all":
            log_det = s.exp().prod(-1)
        elif kind == "det with zeros":
            log_det = torch.prod(free * torch.exp(s), dim=-1)
        elif kind == "sum of e^s":
            log_det = (free * s.exp()).sum(-1)
        elif kind == "t and s swapped":
            y = mask * x + free * (x * t.exp() + s)
            log_det = (free * t).sum(-1)
        elif kind == "shift first":
            y = mask * x + free * (x + t) * s.exp()
        elif kind == "divide":
            y = mask * x + free * (x * (-s).exp() + t)
        elif kind == "all coords":
            y = x * s.exp() + t
        elif kind == "no shift":
            y = mask * x + free * x * s.exp()
        elif kind == "mean":
            log_det = (free * s).mean(-1)
        elif kind == "fixed coords":
            y = x.clone()
            y[:, 1::2] = x[:, 1::2] * s[:, 1::2].exp() + t[:, 1::2]
            log_det = s[:, 1::2].sum(-1)
        return y, log_det

    return step


@pytest.mark.parametrize("fn", [flows.affine_coupling, _with_where, _factored])
def test_coupling_accepts(fn, capsys):
    accepts(check_affine_coupling, fn, capsys)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("all s", "only the transformed ones"),
        ("minus", "sign is off"),
        ("det", "not the determinant (a product of e^s) itself"),
        ("det of all", "not the determinant"),
        ("det with zeros", "not the determinant"),
        ("sum of e^s", "sums the logs of the diagonal entries"),
        ("t and s swapped", "t and s are swapped"),
        ("shift first", "scale first, then shift"),
        ("divide", "is the inverse step"),
        ("all coords", "must pass unchanged"),
        ("no shift", "shift t is missing"),
        ("mean", "not their mean"),
        ("net sees x", "only the coordinates that pass unchanged"),
        ("fixed coords", "use mask"),
    ],
)
def test_coupling_rejects(kind, words, capsys):
    rejects(check_affine_coupling, _coupling(kind), capsys, words)


# ------------------------------------------------------------ 8.9


def _log_softmax(log_q, log_p):
    lq, lp = torch.log_softmax(log_q, 0), torch.log_softmax(log_p, 0)
    return (lq.exp() * (lq - lp)).sum()


def _kl_div(log_q, log_p):
    return F.kl_div(torch.log_softmax(log_p, 0), torch.log_softmax(log_q, 0), reduction="sum", log_target=True)


def _softmax_weights(log_q, log_p):
    return torch.dot(torch.softmax(log_q, 0), torch.log_softmax(log_q, 0) - torch.log_softmax(log_p, 0))


@pytest.mark.parametrize("fn", [quadrature.kl_on_grid, _log_softmax, _kl_div, _softmax_weights])
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


# ------------------------------------------------------------ the grader's replay


@pytest.mark.parametrize(
    "check, answer",
    [
        (check_reverse_conditional_log_prob, uivi.reverse_conditional_log_prob),
        (check_marginal_score_estimate, uivi.marginal_score_estimate),
        (check_sivism_objective, score_matching.sivism_objective),
        (check_sivism_step, score_matching.sivism_step),
        (check_affine_coupling, flows.affine_coupling),  # the replay reloads the module it was given, in place
        (check_kl_on_grid, quadrature.kl_on_grid),
    ],
)
def test_the_graders_replay_confirms_a_right_answer(check, answer, tmp_path):
    from helpers.checks import _core
    from helpers.tooling import replay

    previous, grad = _core._channel, torch.autograd.grad
    try:
        replay.install(tmp_path)
        assert check(answer)
    finally:
        _core._channel, torch.autograd.grad = previous, grad
    (path,) = tmp_path.glob("*.pt")
    assert replay.replay_record(torch.load(path, weights_only=True))[0] == "passed"
