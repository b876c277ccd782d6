"""The checkers of helpers.checks.score_matching, lesson 08's 8.6 (the SIVI-SM objective) and 8.7 (one SIVI-SM
update of the family and of f), accept correct answers written in different ways and name the mistake in
plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, rejects, replays_to_passed

from helpers import score_matching
from helpers.checks import check_sivism_objective, check_sivism_step

LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------ 8.6


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
        if kind == "sample_psi":  # the conditional score at a psi that did not generate z
            psi = q.sample_psi(S)
        log_p = log_target(z).mean() if kind == "mean score" else log_target(z).sum()
        (score_p,) = torch.autograd.grad(log_p, z, create_graph=kind != "no graph")
        score_q = {"sign": (z - psi) / q.sigma**2, "sigma": -(z - psi) / q.sigma}.get(kind, -(z - psi) / q.sigma**2)
        if kind.startswith("plug-in"):  # the Fisher divergence with the conditional score for s_q: f is not used
            return ((score_p - score_q) ** 2).sum(-1).mean() + (0 * f(z).sum() if kind == "plug-in" else 0)
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
        ("sample_psi", "taken at a fresh psi (q.sample_psi), not at the psi that generated each z"),
        ("plug-in", "the Fisher divergence with the conditional score plugged in"),
        ("plug-in without f", "f is not used"),
        ("mean score", "not their mean"),
        ("detach", "keep z, psi, sigma, f(z)"),
    ],
)
def test_sivism_rejects(kind, words, capsys):
    rejects(check_sivism_objective, _sivism(kind), capsys, words)


# ------------------------------------------------------------ 8.7 (one SIVI-SM update)

_objective = score_matching.sivism_objective  # the learner's 8.6 (right), without the train_family flag


def _lesson_step(objective):
    """The lesson's update (the family first, then f on a recomputed objective) on the learner's 8.6 ``objective``."""

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


_family_then_f = _lesson_step(_objective)  # the lesson's loop body, with a right 8.6


def _with_log_conditional(log_target, q, f, opt_q, opt_f, S):  # an 8.6 that uses q.log_conditional
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
        ("sample_psi", "taken at a fresh psi (q.sample_psi)"),
    ],
)
def test_sivism_step_names_exercise_8_5_when_the_objective_is_the_cause(kind, words, capsys):
    step = _lesson_step(_sivism(kind))  # the lesson's update, right, on the learner's wrong 8.6
    rejects(check_sivism_step, step, capsys, "exercise 8.6")
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


# ------------------------------------------------------------ the grader's replay


@pytest.mark.parametrize(
    "check, answer",
    [
        (check_sivism_objective, score_matching.sivism_objective),
        (check_sivism_step, score_matching.sivism_step),
    ],
)
def test_the_graders_replay_confirms_a_right_answer(check, answer, tmp_path):
    replays_to_passed(check, answer, tmp_path)
