r"""Checkers whose reference is in :mod:`helpers.score_matching`: lesson 08's SIVI-SM exercises.

8.6 (the SIVI-SM objective) runs on a stand-in family whose draws are fixed functions of its parameters, so that
value and gradients compare exactly with :func:`helpers.score_matching.sivism_objective`. 8.7 (one SIVI-SM
update) takes two updates from that stand-in (with the whole interface of lesson 06's family,
``log_conditional`` included) and a small ``f`` with counting SGD, and compares both players' weights with
:func:`helpers.score_matching.sivism_step`'s, the family's step first, as the lesson prescribes; weights that
match an update built on a known slip of 8.6's objective name exercise 8.6.
"""

import torch
from torch import nn

from ..gaussian import log_normal_diag
from ..score_matching import sivism_objective as reference_sivism
from ..score_matching import sivism_step as reference_sivism_step
from ._core import (
    as_tensor_result,
    call_learner,
    checker,
    close,
    expect_finite,
    expect_shape,
    fail,
    fmt,
    learner_grad,
)
from .kernel_stein import _FixedFamily
from .vae import _CountingSGD

_F64 = torch.float64


# ---------------------------------------------------------------- 8.6


def _target(z):  # not Gaussian, so that its score depends on z non-linearly
    return -0.5 * z[:, 0] ** 2 / 4 - 0.5 * (z[:, 1] - z[:, 0] ** 2 / 4) ** 2


class _FixedFamilyWithConditional(_FixedFamily):
    """The fixed stand-in family, with a second set of draws: call ``k`` of ``rsample`` returns set ``k % 2``,
    so that a ``psi`` taken from a second call is not the ``psi`` that generated ``z``."""

    full_covariance = False

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.register_buffer("psi_base_2", torch.randn(6, 2, generator=g, dtype=_F64))
        self.register_buffer("eps_2", torch.randn(6, 2, generator=g, dtype=_F64))
        self.calls = 0

    def rsample(self, S):
        first = self.calls % 2 == 0
        self.calls += 1
        psi = (self.psi_base if first else self.psi_base_2)[:S] + self.shift
        return psi + self.sigma * (self.eps if first else self.eps_2)[:S], psi

    def log_conditional(self, z, psi):
        return log_normal_diag(z, psi, self.log_sigma)


def _sivism_variant(kind, q, f, S):
    q.calls = 0
    z, psi = q.rsample(S)
    if kind == "fresh psi":
        psi = q.rsample(S)[1]
    if kind == "sample_psi":
        psi = q.sample_psi(S)
    log_p = _target(z).mean() if kind == "mean score" else _target(z).sum()
    (score_p,) = torch.autograd.grad(log_p, z, create_graph=kind != "no create_graph")
    score_q = {
        "sign": (z - psi) / q.sigma**2,
        "sigma": -(z - psi) / q.sigma,
    }.get(kind, -(z - psi) / q.sigma**2)
    if kind == "plug-in":
        return ((score_p - score_q) ** 2).sum(-1).mean()
    fz = f(psi) if kind == "f at psi" else f(z)
    two = 1.0 if kind == "no 2" else 2.0
    square = {"plus square": -1.0, "no square": 0.0}.get(kind, 1.0)
    per_draw = two * (fz * (score_p - score_q)).sum(-1) - square * (fz**2).sum(-1)
    return per_draw.sum() if kind == "sum" else per_draw.mean()


_SIVISM_MISTAKES = {
    "sign": "a sign is off in the conditional score: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2, so "
    "s_p(z) - grad_z log q(z | psi) = s_p(z) + (z - psi) / sigma^2",
    "sigma": "the conditional score divides by the variance sigma^2, not by sigma",
    "no 2": "the cross term has a factor 2: 2 f(z)^T (s_p - s_q) - |f(z)|^2 (complete the square to see why)",
    "no square": "the term -|f(z)|^2 is missing: without it the objective is linear in f and has no maximum; "
    "2 f^T (s_p - s_q) - |f|^2 is at most |s_p - s_q|^2, with equality at f = s_p - s_q (Question 8.5)",
    "plus square": "the square enters with a minus sign: 2 f^T (s_p - s_q) - |f|^2, whose maximum over f is "
    "|s_p - s_q|^2",
    "f at psi": "evaluate f at z, the draw, not at psi: f approximates s_p(z) - s_q(z), a function of z",
    "sum": "average over the S draws (a mean), do not sum: the objective is an expectation",
    "fresh psi": "psi must be the draw that generated z (the second output of the same q.rsample(S) call), not "
    "the psi of another call",
    "sample_psi": "the conditional score is taken at a fresh psi (q.sample_psi), not at the psi that generated each "
    "z: use the second output of the same q.rsample(S) call; only the generating psi makes the conditional score "
    "a stand-in for s_q (Question 8.5, part 2)",
    "plug-in": "that is the Fisher divergence with the conditional score plugged in, |s_p - grad log q(z | psi)|^2 "
    "averaged, and f is not used: it is biased (Question 8.5, part 3: it adds the conditional score's variance). "
    "Return Question 8.5's J(f), 2 f(z)^T d - |f(z)|^2, in which the conditional score enters linearly",
    "mean score": "the target's score is the gradient of log p at each draw: differentiate the sum of "
    "log_target(z) over the draws, not their mean (which divides every score by S)",
    "no create_graph": "the value is right but its gradient is not: the target's score depends on z, which depends "
    "on the family's parameters; take it with torch.autograd.grad(..., create_graph=True)",
}


@checker("8.6", "the SIVI-SM objective")
def check_sivism_objective(sivism_objective):
    q, S = _FixedFamilyWithConditional(), 6
    torch.manual_seed(3)
    f = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(_F64)
    out = as_tensor_result(call_learner(sivism_objective, _target, q, f, S))
    expect_shape(out, (), " (the objective is one number: a 0-d tensor)")
    expect_finite(out)
    q.calls = 0  # the answer's first call of q.rsample drew set 0; so does the reference's
    reference = reference_sivism(_target, q, f, S)
    if not close(out, reference, 1e-6, 1e-9):
        for kind, message in _SIVISM_MISTAKES.items():
            if kind != "no create_graph" and close(out, _sivism_variant(kind, q, f, S), 1e-6, 1e-9):
                fail(message)
        fail(f"does not match the reference: expected {fmt(reference.detach())}, got {fmt(out.detach())}")
    params = [q.shift, q.log_sigma, *f.parameters()]
    if not out.requires_grad:
        fail("no gradient reaches the family or f: build the objective from q.rsample(S) and f(z), without .detach()")
    got = learner_grad(out, params)
    want = torch.autograd.grad(reference, params)
    family_ok = all(g is not None and close(g, w, 1e-6, 1e-9) for g, w in zip(got[:2], want[:2], strict=True))
    if not family_ok:
        no_graph = torch.autograd.grad(_sivism_variant("no create_graph", q, f, S), params[:2])
        if all(g is not None and close(g, w, 1e-6, 1e-9) for g, w in zip(got[:2], no_graph, strict=True)):
            fail(_SIVISM_MISTAKES["no create_graph"])
        fail(
            "the value is right but its gradient with respect to the family is not: keep z, psi, sigma, f(z) and "
            "the target's score in the graph (no .detach())"
        )
    if not all(g is not None and close(g, w, 1e-6, 1e-9) for g, w in zip(got[2:], want[2:], strict=True)):
        fail("the value is right but its gradient with respect to f's weights is not: do not detach f(z)")
    return "2 f(z)^T (s_p(z) - grad log q(z | psi)) - |f(z)|^2, averaged, with gradients for the family and for f."


# ---------------------------------------------------------------- 8.7 (one SIVI-SM update)


def _sm_step_variant(
    q,
    f,
    opt_q,
    opt_f,
    S,
    order="family first",
    family_sign=1.0,
    f_sign=-1.0,
    zero_q=True,
    zero_f=True,
    objective=None,
):
    """One SIVI-SM update as the reference takes it, or with one piece changed: ``order`` (the lesson's
    "family first", or "f first", or "both from the same point"), a sign, a missing ``zero_grad``, or
    ``objective`` (an 8.6 with a slip); returns the family step's objective."""
    default = order == "family first" and family_sign == 1.0 and f_sign == -1.0 and zero_q and zero_f is True
    if default and objective is None:
        return reference_sivism_step(_target, q, f, opt_q, opt_f, S)
    objective = objective or reference_sivism

    def family_step():
        if zero_q:
            opt_q.zero_grad()
        value = objective(_target, q, f, S)
        (family_sign * value).backward()
        opt_q.step()
        return value.item()

    def f_step():
        if zero_f is True:
            opt_f.zero_grad()
        (f_sign * objective(_target, q, f, S)).backward()
        opt_f.step()

    if zero_f == "first":  # cleared at the start of the update, before the family's backward fills them
        opt_f.zero_grad()
    if order == "f first":
        f_step()
        return family_step()
    if order == "both from the same point":
        if zero_q:
            opt_q.zero_grad()
        if zero_f:
            opt_f.zero_grad()
        value = objective(_target, q, f, S)
        grads = torch.autograd.grad(value, [*q.parameters(), *f.parameters()])
        for p, g in zip([*q.parameters(), *f.parameters()], grads, strict=True):
            sign = family_sign if any(p is r for r in q.parameters()) else f_sign
            p.grad = sign * g if p.grad is None else p.grad + sign * g
        opt_q.step()
        opt_f.step()
        return value.item()
    value = family_step()
    f_step()
    return value


class _FixedDiagonalFamily(_FixedFamily):
    """The fixed stand-in family (the same draws at every call), with the diagonal conditional it has; it
    inherits the whole interface lessons 06 to 08 teach (``rsample``, ``log_conditional``, ``sigma``, ...)."""

    full_covariance = False


def _objective_with(kind):
    """An 8.6 with one of the slips its checker names (``_SIVISM_MISTAKES``), to recognise it inside 8.7."""

    def objective(log_target, q, f, S):
        return _sivism_variant(kind, q, f, S)

    return objective


def _sm_problem():
    torch.manual_seed(4)
    return _FixedDiagonalFamily(), nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(_F64)


def _sm_two_steps(step_fn, learner=False, lr=0.05, **variant):
    """Two updates from the same start with counting SGD optimisers: ``(q, f, outputs, opt_q, opt_f)``."""
    q, f = _sm_problem()
    opt_q, opt_f = _CountingSGD(q.parameters(), lr=lr), _CountingSGD(f.parameters(), lr=lr)
    outs = []
    for _ in range(2):
        if learner:
            outs.append(call_learner(step_fn, _target, q, f, opt_q, opt_f, 6))
        else:
            outs.append(_sm_step_variant(q, f, opt_q, opt_f, 6, **variant))
    return q, f, outs, opt_q, opt_f


def _flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


_SM_ORDERS = ("family first", "f first", "both from the same point")
_SM_ORDER_MISTAKES = {
    "f first": "f stepped before the family: the update steps the family first (opt_q), then f (opt_f) on "
    "fresh draws at the family's new parameters, as the authors alternate them",
    "both from the same point": "both players stepped from one objective: after the family's step, compute the "
    "objective again (fresh draws, the family's new parameters) and step f up that one",
}
_SM_FAMILY_MISTAKES = {
    "the family climbed the objective: it should descend (the family's loss is +objective: its "
    "minimum over q is the Fisher divergence's)": {"family_sign": -1.0},
    "the family's step moved too far: call opt_q.zero_grad() before the family's backward, or the "
    "gradients of earlier steps (and of f's step, which reaches the family too) accumulate": {"zero_q": False},
}
_F_STALE = (
    "f's step used stale gradients: call opt_f.zero_grad() right before f's backward (the family's backward "
    "also fills f's gradients, with the other sign)"
)
_SM_F_MISTAKES = [
    (
        "f descended the objective: f should climb it (f's loss is -objective), since the objective's maximum "
        "over f is the Fisher divergence",
        {"f_sign": 1.0},
    ),
    (_F_STALE, {"zero_f": False}),
    (_F_STALE, {"zero_f": "first"}),
]


@checker("8.7", "one SIVI-SM update of the family and of f")
def check_sivism_step(sivism_step):
    r"""Two updates with the learner's function and with the reference (:func:`helpers.score_matching.sivism_step`)
    from the same stand-in family (fixed draws) and ``f``, with plain counting SGD (a sign or a missing
    ``zero_grad`` changes where the weights go). The lesson and its hints fix the order: the family's step
    first, then ``f``'s on a recomputed objective. Names the other orders, a sign on either side, a missing
    ``zero_grad`` on either side, a step not taken, a return value that is not the objective, and an
    objective (the learner's 8.6, which the step calls) with one of the slips 8.6's checker names."""
    q, f, outs, opt_q, opt_f = _sm_two_steps(sivism_step, learner=True)
    for k, out in enumerate(outs):
        if out is None:
            fail("returned None; return the objective of the family's step as a number (objective.item())")
        if isinstance(out, torch.Tensor) and out.requires_grad:
            fail(
                "returned a tensor that still holds its graph: return objective.item() (the training loop only "
                "records it, and a graph kept per step fills the memory)"
            )
        try:
            outs[k] = float(out)
        except (TypeError, ValueError):
            fail(f"returned a {type(out).__name__}; return the family step's objective as one number")
    if opt_q.steps != 2 or opt_f.steps != 2:
        fail(
            f"in two calls, opt_q.step() ran {opt_q.steps} times and opt_f.step() {opt_f.steps} times: each call "
            "takes one step of each optimiser you are given (the family's with opt_q, f's with opt_f)"
        )
    q0, f0 = _sm_problem()
    got = (_flat(q), _flat(f))
    if torch.equal(got[0], _flat(q0)):
        fail("the family did not move: backward on the objective, then opt_q.step()")
    if torch.equal(got[1], _flat(f0)):
        fail("f did not move: backward on -objective, then opt_f.step()")

    def matches(variant):
        return close(got[0], _flat(variant[0]), 1e-7, 1e-10) and close(got[1], _flat(variant[1]), 1e-7, 1e-10)

    reference = _sm_two_steps(None)
    if not matches(reference):  # the two players' updates interleave, so a slip on one side moves both
        for order, message in _SM_ORDER_MISTAKES.items():
            if matches(_sm_two_steps(None, order=order)):
                fail(message)
        for message, kwargs in [*_SM_FAMILY_MISTAKES.items(), *_SM_F_MISTAKES]:
            if any(matches(_sm_two_steps(None, order=order, **kwargs)) for order in _SM_ORDERS):
                fail(message)
        for kind, message in _SIVISM_MISTAKES.items():  # 8.7's family repeats its draws (a fresh psi from
            # rsample is the same psi), and a plug-in objective leaves f where it was, which is named above
            if kind not in ("fresh psi", "plug-in") and matches(_sm_two_steps(None, objective=_objective_with(kind))):
                fail(f"the update is right, but your sivism_objective (exercise 8.6) is not: {message}; fix 8.6 first")
        fail(
            "after two updates the weights differ from the reference's (if check 8.6 passed, your objective is "
            "right): each update clears the optimiser's gradients, computes the objective on fresh draws, and "
            "steps the family down it (opt_q), then f up it (opt_f)"
        )
    ref_outs = reference[2]
    for k, (out, ref) in enumerate(zip(outs, ref_outs, strict=True)):
        if not close(out, ref, 1e-7, 1e-10):
            if close(out, -ref, 1e-7, 1e-10):
                fail(f"update {k + 1} returned -objective ({fmt(out)}); return the objective itself, {fmt(ref)}")
            fail(
                f"the weights are right, but update {k + 1} returned {fmt(out)} instead of the family step's "
                f"objective {fmt(ref)}: return the value the family's step was computed from"
            )
    return "the family steps down the objective and f up it, each from cleared gradients."
