r"""Checkers for the exercises on SIVI's successors: UIVI, SIVI-SM and its update, a RealNVP coupling, KL by quadrature.

Lesson 08 numbers its questions and exercises together: 8.1 and 8.4 are written questions.
8.2 (UIVI's reverse conditional, up to a constant) accepts any answer that differs from
:func:`helpers.uivi.reverse_conditional_log_prob` by one constant, since HMC needs the log density only up
to one, and checks its gradient in :math:`\varepsilon`, which HMC follows. 8.3 (the marginal score
estimate) compares with :func:`helpers.uivi.marginal_score_estimate`. 8.5 (the SIVI-SM objective) runs on a
stand-in family whose draws are fixed functions of its parameters, so that value and gradients compare
exactly with :func:`helpers.score_matching.sivism_objective`. 8.6 (one SIVI-SM update) takes two updates
from that stand-in (with the whole interface of lesson 06's family, ``log_conditional`` included) and a
small ``f`` with counting SGD, and compares both players' weights with
:func:`helpers.score_matching.sivism_step`'s, the family's step first, as the lesson prescribes; weights
that match an update built on a known slip of 8.5's objective name exercise 8.5. 8.8 (the affine coupling)
compares with :func:`helpers.flows.affine_coupling`, with gradients in the input and in the network's
weights. 8.9 (KL on a grid) compares with :func:`helpers.quadrature.kl_on_grid`, in float32 with
unnormalised, widely spread log densities, as a trained family gives them.
"""

import torch
from torch import nn

from ..flows import affine_coupling as reference_coupling
from ..gaussian import log_normal_diag
from ..quadrature import kl_on_grid as reference_kl
from ..score_matching import sivism_objective as reference_sivism
from ..score_matching import sivism_step as reference_sivism_step
from ..semi_implicit import SemiImplicitGaussian
from ..uivi import marginal_score_estimate as reference_score
from ..uivi import reverse_conditional_log_prob as reference_reverse
from ._core import (
    as_tensor_result,
    as_tensor_tuple,
    call_learner,
    checker,
    close,
    diagnose,
    expect_finite,
    expect_gradient,
    expect_shape,
    fail,
    fmt,
    learner_grad,
)
from .kernel_stein import _FixedFamily
from .vae import _CountingSGD

_F64 = torch.float64


def _family(dtype=_F64, seed=11, noise_dim=3):
    torch.manual_seed(seed)
    q = SemiImplicitGaussian.mlp(L=2, noise_dim=noise_dim, hidden=(50, 50), sigma=0.5, learn_sigma=True)
    with torch.no_grad():
        q.log_sigma.copy_(torch.tensor([-0.9, 0.2]))  # two different scales: sigma and sigma^2 are told apart
    return q.to(dtype)


# ---------------------------------------------------------------- 8.2


def _constant(difference, atol=1e-9):
    """True when a difference of log densities is one constant over all rows (HMC cannot tell them apart)."""
    d = difference.detach().double()
    return bool((d - d.mean()).abs().max() <= atol * max(1.0, float(d.abs().max())))


@checker("8.2", "UIVI's reverse conditional, up to a constant")
def check_reverse_conditional_log_prob(reverse_conditional_log_prob):
    q = _family()
    z, eps = torch.randn(6, 2, dtype=_F64) * 2, torch.randn(6, 3, dtype=_F64)
    out = as_tensor_result(call_learner(reverse_conditional_log_prob, q, z, eps))
    if out.dim() == 0:
        fail("returned one number; return one log density per row, shape (S,) = (6,): do not sum over the rows")
    if out.shape == (6, 2) or out.shape == (6, 3):
        fail("returned one value per coordinate; the densities are over whole vectors: sum over the last axis")
    expect_shape(out, (6,), " (one value per pair (z_s, eps_s))")
    expect_finite(out)
    reference = reference_reverse(q, z, eps)
    psi = q.mixing(eps)
    log_prior = log_normal_diag(eps, 0.0, torch.zeros_like(eps))
    log_cond = q.log_conditional(z, psi)
    variance_typo = (-0.5 * (z - psi) ** 2 / q.sigma - q.log_sigma).sum(-1)  # up to a constant
    mistakes = {
        "the prior factor q(eps) = N(eps; 0, I) is missing: q(eps | z) is proportional to q(z | eps) q(eps)": log_cond,
        "the conditional q(z | g(eps)) is missing: q(eps | z) is proportional to q(z | eps) q(eps), and without it "
        "the chain would ignore z": log_prior,
        "a sign is off: the prior enters as + log N(eps; 0, I), like the conditional": log_cond - log_prior,
        "a sign is off: the conditional enters as + log q(z | g(eps)), like the prior": -log_cond + log_prior,
        "that is a density, not its log: return log q(z | g(eps)) + log N(eps; 0, I)": reference.exp(),
        "the Gaussian's exponent divides by the variance sigma^2, not by sigma": variance_typo + log_prior,
        "a density over vectors is a product over coordinates: sum the log densities over the last axis, not "
        "their mean": log_cond / z.shape[-1] + log_prior / eps.shape[-1],
    }
    if not _constant(out - reference):
        for message, wrong in mistakes.items():
            if _constant(out - wrong):
                fail(message)
        again = as_tensor_result(call_learner(reverse_conditional_log_prob, q, z, eps))
        if not close(again, out, 1e-12, 1e-12):
            fail(
                "two calls with the same z and eps gave different values: use psi = q.mixing(eps), the given eps, "
                "not fresh draws (q.sample_psi or torch.randn)"
            )
        offset = (out - reference).double()
        i = int((offset - offset.mean()).abs().argmax())
        fail(
            f"does not match log q(z | g(eps)) + log N(eps; 0, I) up to a constant: for row {i} expected "
            f"{fmt((reference[i] + offset.mean()).detach())}, got {fmt(out[i].detach())}"
        )
    # HMC follows the gradient in eps; the lesson runs it in float32 on its own family
    eps_g = eps.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(reverse_conditional_log_prob, q, z, eps_g))
    expect_gradient(out, [eps_g], reference_reverse(q, z, eps_g), ["eps"], rtol=1e-6, atol=1e-9)
    q32 = _family(torch.float32, seed=12)
    z32, eps32 = torch.randn(400, 2) * 3, torch.randn(400, 3)
    out32 = as_tensor_result(call_learner(reverse_conditional_log_prob, q32, z32, eps32))
    expect_shape(out32, (400,), " for 400 draws in float32")
    if not _constant(out32 - reference_reverse(q32, z32, eps32), 1e-3):
        fail("right in float64 but not for the lesson's float32 family and 400 draws")
    return "log q(z | g(eps)) + log N(eps; 0, I), up to a constant, with the right gradient in eps."


# ---------------------------------------------------------------- 8.3


@checker("8.3", "UIVI's estimate of the marginal score")
def check_marginal_score_estimate(marginal_score_estimate):
    q = _family()
    z = torch.randn(5, 2, dtype=_F64) * 2
    draws = torch.randn(7, 5, 3, dtype=_F64)  # M = 7 draws for each of S = 5 points
    out = as_tensor_result(call_learner(marginal_score_estimate, q, z, draws))
    if out.shape == (7, 5, 2):
        fail("returned one score per draw; average the M conditional scores of each z over the draws (axis 0)")
    if out.shape == (7, 2):
        fail("averaged over the wrong axis: draws[m, s] belongs to z[s], so average over m (axis 0), keeping S")
    expect_shape(out, (5, 2), " (one score per z: (S, L))")
    expect_finite(out)
    psi = q.mixing(draws)  # (M, S, L)
    var = q.sigma**2
    reference = reference_score(q, z, draws)
    diagnose(
        out,
        reference,
        {
            "the sign is off: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2, pointing from z towards psi": (
                -reference
            ),
            "divide by the variance sigma^2, not by sigma: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2": (
                -(z - psi) / q.sigma
            ).mean(0),
            "the draws are summed; UIVI's estimate is their average (1/M) sum_m": (-(z - psi) / var).sum(0),
            "the draws are noise eps, not means: push them through the mixing network, psi = q.mixing(eps)": (
                -(z - draws[..., :2]) / var
            ).mean(0),
            "the scale sigma^2 is missing: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2": (-(z - psi)).mean(0),
            "multiplied by sigma^2 instead of dividing: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2": (
                -(z - psi) * var
            ).mean(0),
            "only the last of the M draws is used (a loop that overwrites instead of adding up?): average the "
            "conditional scores over all M draws, axis 0": -(z - psi[-1]) / var,
            "only the first of the M draws is used: average the conditional scores over all M draws, axis 0": -(
                z - psi[0]
            )
            / var,
            "the average over the M draws is divided by M once more: (1/M) sum_m, not (1/M^2) sum_m": (
                -(z - psi) / var
            ).mean(0)
            / draws.shape[0],
        },
        rtol=1e-6,
        atol=1e-9,
    )
    q32 = _family(torch.float32, seed=13)
    z32, d32 = torch.randn(300, 2) * 3, torch.randn(5, 300, 3)
    out32 = as_tensor_result(call_learner(marginal_score_estimate, q32, z32, d32))
    expect_shape(out32, (300, 2), " for 300 points and 5 draws each in float32")
    if not close(out32, reference_score(q32, z32, d32), 1e-4, 1e-4):
        fail("right in float64 but not for the lesson's float32 family")
    return "the average of -(z - g(eps_m)) / sigma^2 over the reverse conditional's draws."


# ---------------------------------------------------------------- 8.5


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
    log_p = _target(z).mean() if kind == "mean score" else _target(z).sum()
    (score_p,) = torch.autograd.grad(log_p, z, create_graph=kind != "no create_graph")
    score_q = {
        "sign": (z - psi) / q.sigma**2,
        "sigma": -(z - psi) / q.sigma,
    }.get(kind, -(z - psi) / q.sigma**2)
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
    "2 f^T (s_p - s_q) - |f|^2 is at most |s_p - s_q|^2, with equality at f = s_p - s_q (Question 8.4)",
    "plus square": "the square enters with a minus sign: 2 f^T (s_p - s_q) - |f|^2, whose maximum over f is "
    "|s_p - s_q|^2",
    "f at psi": "evaluate f at z, the draw, not at psi: f approximates s_p(z) - s_q(z), a function of z",
    "sum": "average over the S draws (a mean), do not sum: the objective is an expectation",
    "fresh psi": "psi must be the draw that generated z (the second output of the same q.rsample(S) call), not "
    "the psi of another call",
    "mean score": "the target's score is the gradient of log p at each draw: differentiate the sum of "
    "log_target(z) over the draws, not their mean (which divides every score by S)",
    "no create_graph": "the value is right but its gradient is not: the target's score depends on z, which depends "
    "on the family's parameters; take it with torch.autograd.grad(..., create_graph=True)",
}


@checker("8.5", "the SIVI-SM objective")
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
        fail(f"does not match the reference: expected {fmt(reference)}, got {fmt(out)}")
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


# ---------------------------------------------------------------- 8.6 (one SIVI-SM update)


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
    ``objective`` (an 8.5 with a slip); returns the family step's objective."""
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
    """An 8.5 with one of the slips its checker names (``_SIVISM_MISTAKES``), to recognise it inside 8.6."""

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


@checker("8.6", "one SIVI-SM update of the family and of f")
def check_sivism_step(sivism_step):
    r"""Two updates with the learner's function and with the reference (:func:`helpers.score_matching.sivism_step`)
    from the same stand-in family (fixed draws) and ``f``, with plain counting SGD (a sign or a missing
    ``zero_grad`` changes where the weights go). The lesson and its hints fix the order: the family's step
    first, then ``f``'s on a recomputed objective. Names the other orders, a sign on either side, a missing
    ``zero_grad`` on either side, a step not taken, a return value that is not the objective, and an
    objective (the learner's 8.5, which the step calls) with one of the slips 8.5's checker names."""
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
        for kind, message in _SIVISM_MISTAKES.items():
            if kind != "fresh psi" and matches(_sm_two_steps(None, objective=_objective_with(kind))):
                fail(f"the update is right, but your sivism_objective (exercise 8.5) is not: {message}; fix 8.5 first")
        fail(
            "after two updates the weights differ from the reference's (if check 8.5 passed, your objective is "
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


# ---------------------------------------------------------------- 8.8


class _ShiftScale(nn.Module):
    def __init__(self, L, dtype):
        super().__init__()
        g = torch.Generator().manual_seed(21)
        self.a = nn.Parameter(torch.randn(L, L, generator=g, dtype=dtype) * 0.5)
        self.b = nn.Parameter(torch.randn(L, L, generator=g, dtype=dtype) * 0.5)
        self.seen = []

    def forward(self, kept):
        self.seen.append(kept.detach().clone())
        return kept @ self.a.T + 0.3, torch.tanh(kept @ self.b.T)


@checker("8.8", "an affine coupling step and its log-determinant")
def check_affine_coupling(affine_coupling):
    L = 4
    net = _ShiftScale(L, _F64)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=_F64)
    x = torch.randn(5, L, dtype=_F64, requires_grad=True)
    out = call_learner(affine_coupling, x, mask, net)
    y, log_det = as_tensor_tuple(out, ("y", "log_det"))
    expect_shape(y, (5, L), " for y (the same shape as x)")
    if log_det.shape == (5, L):
        fail("log_det has one value per coordinate; the log-determinant of the step is their sum over the last axis")
    expect_shape(log_det, (5,), " for log_det (one value per row of x)")
    if net.seen and not close(net.seen[0], mask * x.detach(), 1e-12, 1e-12):
        fail(
            "the network must see only the coordinates that pass unchanged, mask * x: otherwise the step cannot "
            "be inverted (its Jacobian is no longer triangular)"
        )
    ref_y, ref_ld = reference_coupling(x, mask, net)
    kept = mask * x
    t, s = net(kept)
    free = 1 - mask
    swapped_y = kept + free * (x * t.exp() + s)  # (s, t) = net(kept): the outputs read in the wrong order
    determinant = "log_det must be the log of |det|, sum (1 - m) s, not the determinant (a product of e^s) itself"
    diagnose(
        torch.cat([y.reshape(-1), log_det]),
        torch.cat([ref_y.reshape(-1), ref_ld]),
        {
            "log_det sums s over every coordinate; only the transformed ones, where mask is 0, contribute: "
            "sum_l (1 - m_l) s_l": torch.cat([ref_y.reshape(-1), s.sum(-1)]),
            "the log-determinant of x -> x e^s + t is + sum (1 - m) s: the sign is off": torch.cat(
                [ref_y.reshape(-1), -ref_ld]
            ),
            determinant: torch.cat([ref_y.reshape(-1), ref_ld.exp()]),
            determinant + " (and only the transformed coordinates, where mask is 0, contribute)": torch.cat(
                [ref_y.reshape(-1), s.exp().prod(-1)]
            ),
            determinant + " (and a product of (1 - m) e^s is 0 wherever mask is 1)": torch.cat(
                [ref_y.reshape(-1), (free * s.exp()).prod(-1)]
            ),
            "log_det sums e^s; the log-determinant sums the logs of the diagonal entries, sum (1 - m) s": torch.cat(
                [ref_y.reshape(-1), (free * s.exp()).sum(-1)]
            ),
            "t and s are swapped: shift_and_log_scale returns (t, s), the shift first, then the log-scale": (
                torch.cat([swapped_y.reshape(-1), (free * t).sum(-1)])
            ),
            "t and s are swapped in y: shift_and_log_scale returns (t, s), the shift first, then the log-scale": (
                torch.cat([swapped_y.reshape(-1), ref_ld])
            ),
            "scale first, then shift: y = x e^s + t on the transformed coordinates, not (x + t) e^s": torch.cat(
                [(kept + free * (x + t) * s.exp()).reshape(-1), ref_ld]
            ),
            "the forward step multiplies by e^s; dividing (e^{-s}) is the inverse step": torch.cat(
                [(kept + free * (x * (-s).exp() + t)).reshape(-1), ref_ld]
            ),
            "the masked coordinates must pass unchanged: y = m x + (1 - m)(x e^s + t)": torch.cat(
                [(x * s.exp() + t).reshape(-1), ref_ld]
            ),
            "the shift t is missing: y = x e^s + t on the transformed coordinates": torch.cat(
                [(kept + free * x * s.exp()).reshape(-1), ref_ld]
            ),
            "log_det is the sum over coordinates, not their mean": torch.cat([ref_y.reshape(-1), ref_ld / L]),
        },
        rtol=1e-6,
        atol=1e-9,
    )
    # the flow trains through this step: gradients in x and in the network's weights
    params = [x, net.a, net.b]
    names = ["x", "the shift network's weights", "the scale network's weights"]
    y, log_det = as_tensor_tuple(call_learner(affine_coupling, x, mask, net), ("y", "log_det"))
    ref_y, ref_ld = reference_coupling(x, mask, net)  # after the call: a grader's replay reloads net's weights in place
    expect_gradient(torch.cat([y.reshape(-1), log_det]), params, torch.cat([ref_y.reshape(-1), ref_ld]), names)
    # float32, the lesson's dtype, with the alternate mask
    net32 = _ShiftScale(2, torch.float32)
    mask32 = torch.tensor([0.0, 1.0])
    x32 = torch.randn(256, 2) * 3
    y32, ld32 = as_tensor_tuple(call_learner(affine_coupling, x32, mask32, net32), ("y", "log_det"))
    r_y, r_ld = reference_coupling(x32, mask32, net32)
    if not (close(y32, r_y, 1e-5, 1e-5) and close(ld32, r_ld, 1e-5, 1e-5)):
        fail(
            "right for the mask [1, 0, 1, 0] in float64 but not for the mask [0, 1] in float32: use mask, not fixed "
            "coordinates"
        )
    return "y = m x + (1 - m)(x e^s + t) with log|det| = sum (1 - m) s, and gradients for the flow's training."


# ---------------------------------------------------------------- 8.9


def _grid_problem(dtype=_F64):
    torch.manual_seed(31)
    log_q = torch.randn(50, dtype=dtype) * 3 + 40.0  # unnormalised, as log densities on a grid come
    log_p = torch.randn(50, dtype=dtype) * 4 - 7.0
    return log_q, log_p


@checker("8.9", "the KL divergence on a grid")
def check_kl_on_grid(kl_on_grid):
    log_q, log_p = _grid_problem()
    out = as_tensor_result(call_learner(kl_on_grid, log_q, log_p))
    expect_shape(out, (), " (one number: a 0-d tensor)")
    expect_finite(out)
    reference = reference_kl(log_q, log_p)
    lq_n, lp_n = log_q - torch.logsumexp(log_q, 0), log_p - torch.logsumexp(log_p, 0)
    w = lq_n.exp()
    lq_max, lp_max = log_q - log_q.max(), log_p - log_p.max()
    max_shift = (
        "subtracting the maximum keeps exp in range but does not normalise (the weights exp(log q_i - max) do not "
        "sum to one): subtract logsumexp(log q) and logsumexp(log p), which include the max shift"
    )
    diagnose(
        out,
        reference,
        {
            "that is KL(p || q), the other direction: weight by q, sum_i q_i (log q_i - log p_i)": reference_kl(
                log_p, log_q
            ),
            "the weights are normalised but the logs are not: use log q_i - logsumexp(log q) and the same for p, so "
            "that both are distributions over the grid": (w * (log_q - log_p)).sum(),
            "p is not normalised over the grid: subtract logsumexp(log_p) from log_p too": (w * (lq_n - log_p)).sum(),
            "q is not normalised over the grid: subtract logsumexp(log_q) from log_q too": (w * (log_q - lp_n)).sum(),
            "a sum over the grid points, not a mean (the normalised weights already sum to one)": (
                w * (lq_n - lp_n)
            ).mean(),
            "weight by the normalised q_i = exp(log q_i) / sum_j exp(log q_j), not by exp(log q_i) itself": (
                log_q.exp() * (lq_n - lp_n)
            ).sum(),
            "the sign is off: KL(q || p) = sum_i q_i (log q_i - log p_i), which is non-negative": -reference,
            "neither density is renormalised over the grid: subtract logsumexp(log q) from log q and logsumexp(log p) "
            "from log p first, so that both sum to one over the grid": (log_q.exp() * (log_q - log_p)).sum(),
            max_shift: (lq_max.exp() * (lq_max - lp_max)).sum(),
            max_shift + " (here in the logs)": (w * (lq_max - lp_max)).sum(),
            max_shift + " (here in the weights)": (lq_max.exp() * (lq_n - lp_n)).sum(),
        },
        rtol=1e-6,
        atol=1e-9,
    )
    # float32 with the spread of a trained family's log density on a grid: exp overflows and underflows
    lq32 = torch.linspace(-900.0, 60.0, 400)
    lp32 = -0.5 * torch.linspace(-8, 8, 400) ** 2 * 10
    out32 = as_tensor_result(call_learner(kl_on_grid, lq32, lp32))
    if not torch.isfinite(out32):
        fail(
            "not finite in float32 for log densities from -900 to 60 (exp overflows to inf and underflows to 0): "
            "normalise in log space, log q_i - logsumexp(log q), and never take the log of a probability that "
            "may be 0"
        )
    if not close(out32, reference_kl(lq32.double(), lp32.double()), 1e-4, 1e-3):
        fail("right in float64 but not in float32 for widely spread log densities: normalise in log space")
    return "KL(q || p) = sum_i q_i (log q_i - log p_i) with both normalised over the grid, in log space."
