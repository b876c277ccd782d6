r"""Checkers whose reference is in :mod:`helpers.gradient_estimators`: lesson 03's gradient estimators.

3.1 and 3.2 are surrogate objectives: the checker differentiates the learner's scalar with autograd and
compares the *gradient* with that of the reference estimators, on fixed draws (the plausible mistakes are the
reference with one piece changed). Correct estimators that differ draw by draw (the exact entropy, sticking the
landing, a baseline) are accepted when they are unbiased: the average over many draws must match the exact ELBO
gradient of a Gaussian target within Monte Carlo error. 3.3, the leave-one-out baseline, is compared on fixed
draws with :func:`helpers.gradient_estimators.score_function_loo_surrogate`.
"""

import math

import torch
from torch.distributions import MultivariateNormal

from .. import gradient_estimators as estimators  # the reference answers of 3.1 and 3.2
from ..estimators import standard_error
from ..gaussian import LOG_2PI, log_normal_diag, normal_entropy
from ._core import (
    as_tensor_result,
    call_learner,
    checker,
    diagnose,
    diagnose_mean,
    expect_finite,
    fail,
    flat,
    fmt,
    learner_grad,
)

_F64 = torch.float64


# ---------------------------------------------------------------- a Gaussian target with an exact ELBO gradient

_TARGET_MEAN = torch.tensor([0.5, -1.0], dtype=_F64)
_TARGET_COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=_F64)
_LOG_Z = 2.0  # an unnormalised target, so the weights f(z) are not centred at 0


_TARGET = MultivariateNormal(_TARGET_MEAN, _TARGET_COV)  # built once: the statistical test calls it often


def _log_joint(z):
    return _TARGET.log_prob(z) + _LOG_Z


def _exact_elbo(m, log_s):
    r""":math:`\mathbb E_q[\log p] + \mathbb H[q]` for :math:`q = \mathcal N(m, \mathrm{diag}(s^2))`, in closed form."""
    s2 = (2 * log_s).exp()
    prec = torch.linalg.inv(_TARGET_COV)
    d = m - _TARGET_MEAN
    expected = -0.5 * (2 * LOG_2PI + torch.logdet(_TARGET_COV) + (prec.diagonal() * s2).sum() + d @ prec @ d) + _LOG_Z
    return expected + normal_entropy(log_s.exp()).sum()


def _params():
    m = torch.tensor([0.2, -0.5], dtype=_F64, requires_grad=True)
    log_s = torch.tensor([math.log(0.7), math.log(1.1)], dtype=_F64, requires_grad=True)
    return m, log_s


def _gradient(out, m, log_s, what):
    """The gradient of the learner's scalar with respect to (m, log_s), flattened, or a diagnosis."""
    out = as_tensor_result(out)
    if out.dim() != 0:
        fail(f"returned shape {tuple(out.shape)}; return a scalar: the average over the S draws")
    expect_finite(out)
    if not out.requires_grad:
        fail(f"no gradient reaches m and log_s: {what}")
    gm, gs = learner_grad(out, (m, log_s), retain_graph=True)
    if gm is None:
        fail(f"no gradient reaches m: {what}")
    if gs is None:
        fail(f"no gradient reaches log_s: {what}")
    return flat(gm, gs)


_SCORE_HINT = "A baseline must leave out the draw it multiplies; average over draws, do not sum."
_PATHWISE_HINT = (
    "Build every draw as z = m + exp(log_s) * eps from the eps you are given, evaluate log p(x, z) and log q(z) at "
    "that same z, and average over the draws, do not sum."
)


def _unbiased(fn, make_input, m, log_s, what, S=2, repeats=1000, hint=_SCORE_HINT):
    """Average the learner's gradient over many small-``S`` calls; compare with the exact ELBO gradient.

    A small ``S`` exposes biases of order 1/S (a baseline that includes the
    draw it multiplies) and sums whose mean is zero; many repeats make the
    standard error small (the bias of a baseline that includes its own draw is
    half the gradient at S = 2, over ten standard errors after 1000 calls). The
    draws are seeded, so the verdict is repeatable.
    """
    exact = flat(*torch.autograd.grad(_exact_elbo(m, log_s), (m, log_s)))
    estimates = []
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)  # the first calls were validated; speed
    try:
        for _ in range(repeats):
            estimates.append(_gradient(call_learner(fn, _log_joint, m, log_s, make_input(S)), m, log_s, what))
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)
    estimates = torch.stack(estimates)  # (repeats, 2L)
    diagnose_mean(
        (estimates.mean(0), standard_error(estimates)),
        exact,
        {},
        rtol=0.02,
        atol=1e-3,
        labels=["d/dm_1", "d/dm_2", "d/dlog_s_1", "d/dlog_s_2"],
        unmatched=f"biased: averaged over {repeats} calls with S = {S} draws, {{label}} is {{got:.6g}} (standard "
        f"error {{got_se:.6g}}), but the exact ELBO gradient is {{expected:.6g}}. ({hint})",
    )


def _same_twice(fn, m, log_s, inp, what, name):
    first = _gradient(call_learner(fn, _log_joint, m, log_s, inp), m, log_s, what)
    second = _gradient(call_learner(fn, _log_joint, m, log_s, inp), m, log_s, what)
    if not torch.equal(first, second):
        fail(
            f"two calls with the same {name} gave different "
            "gradients: use the draws you are given, do not draw new ones inside the function"
        )
    return first


def _grad(value, m, log_s):
    """The gradient of a reference (or of a mistake) with respect to (m, log_s), flattened."""
    return flat(*torch.autograd.grad(value, (m, log_s)))


def _score_mistake(m, log_s, z, weight_fn):
    """The score-function surrogate with the weight ``weight_fn(z, log_q)`` in place of the detached f(z)."""
    log_q = log_normal_diag(z, m, log_s)  # (S,)
    return _grad((weight_fn(z, log_q) * log_q).mean(), m, log_s)


def _classify(grad, accepted, mistakes, context):
    """True if ``grad`` equals an accepted form; fail naming a mistake it equals; else False (undecided)."""
    if any(torch.allclose(grad, a, rtol=1e-6, atol=1e-9) for a in accepted):
        return True
    for message, wrong in mistakes.items():
        if torch.allclose(grad, wrong, rtol=1e-6, atol=1e-9):
            fail(message + context)
    return False


@checker("3.1", "score-function gradient estimator")
def check_score_function(score_function_surrogate):
    m, log_s = _params()
    z = (m + log_s.exp() * torch.randn(6, 2, dtype=_F64)).detach()  # (S, L), no gradient
    what = "build log q(z) from m and log_s with torch operations (Normal(m, log_s.exp()).log_prob(z))"
    grad = _same_twice(score_function_surrogate, m, log_s, z, what, "z")

    ref = _grad(estimators.score_function_surrogate(_log_joint, m, log_s, z), m, log_s)
    zero_mean_term = _grad(-log_normal_diag(z, m, log_s).mean(), m, log_s)  # -E[grad log q], zero in expectation
    accepted = [ref, ref + zero_mean_term]
    mistakes = {
        "the weight f(z) = log p(x, z) - log q(z) must not carry gradient: .detach() it, so that only "
        "the log q(z) multiplying it is differentiated": _score_mistake(m, log_s, z, lambda z, lq: _log_joint(z) - lq),
        "the weight misses -log q(z): f(z) = log p(x, z) - log q(z); without it the estimator ignores "
        "the entropy": _score_mistake(m, log_s, z, lambda z, lq: _log_joint(z).detach()),
        "sign error: return the surrogate whose gradient is +grad ELBO (training uses loss = -surrogate)": -ref,
        "summed over the S draws; average them (.mean()), so the estimate does not grow with S": ref * z.shape[0],
    }
    if _classify(grad, accepted, mistakes, " (on 6 fixed draws z)"):
        return "matches the score-function estimator on fixed draws."

    def draws(S):
        return (m + log_s.exp() * torch.randn(S, 2, dtype=_F64)).detach()

    _unbiased(score_function_surrogate, draws, m, log_s, what)
    return "a different form from the reference, and unbiased: it matches the exact ELBO gradient on average."


def _loo_mistake(m, log_s, z, baseline_of, detach=True):
    """The score-function surrogate with the baseline ``baseline_of(f)`` (right or wrong) subtracted."""
    log_q = log_normal_diag(z, m, log_s)  # (S,)
    f = _log_joint(z) - log_q
    f = f.detach() if detach else f
    return _grad(((f - baseline_of(f)) * log_q).mean(), m, log_s)


@checker("3.3", "the leave-one-out baseline")
def check_loo_baseline(score_function_loo_surrogate):
    r"""Compare the gradient with the reference's on fixed draws (``S = 5`` and ``S = 2``), and name the baselines
    that are biased or wrong: one that includes its own draw (the plain mean), the wrong count, no baseline at all.
    The algebraically equal form :math:`\frac{S}{S-1}(f_j - \bar f)` is the same gradient and passes."""
    m, log_s = _params()
    what = "build log q(z) from m and log_s with torch operations (Normal(m, log_s.exp()).log_prob(z))"
    for S in (5, 2):
        z = (m + log_s.exp() * torch.randn(S, 2, dtype=_F64)).detach()
        context = f" (on {S} fixed draws z)"
        grad = _same_twice(score_function_loo_surrogate, m, log_s, z, what, "z")
        ref = _grad(estimators.score_function_loo_surrogate(_log_joint, m, log_s, z), m, log_s)
        mistakes = {
            "the baseline includes the draw it multiplies (the mean of all S weights): then b_j depends on z_j and "
            "the estimator is biased by the factor (S - 1) / S; leave draw j out: b_j = (sum_k f_k - f_j) / (S - 1)": (
                _loo_mistake(m, log_s, z, lambda f: f.mean())
            ),
            "the mean of the other draws divides by S - 1 (there are S - 1 of them), not by S": _loo_mistake(
                m, log_s, z, lambda f: (f.sum() - f) / len(f)
            ),
            "no baseline is subtracted: that is exercise 3.1's estimator; subtract b_j, the mean weight of the other "
            "draws": _grad(estimators.score_function_surrogate(_log_joint, m, log_s, z), m, log_s),
            "the weights f must not carry gradient (.detach()): only log q(z_j) multiplying them is differentiated": (
                _loo_mistake(m, log_s, z, lambda f: (f.sum() - f) / (len(f) - 1), detach=False)
            ),
            "the baseline is added; subtract it: (f_j - b_j) grad log q(z_j)": _loo_mistake(
                m, log_s, z, lambda f: -(f.sum() - f) / (len(f) - 1)
            ),
            "sign error: return the surrogate whose gradient is +grad ELBO (training uses loss = -surrogate)": -ref,
            "summed over the S draws; average them (.mean())": ref * S,
        }
        if not _classify(grad, [ref], mistakes, context):
            diagnose(grad, ref, {}, context=context, rtol=1e-6, atol=1e-9)
    return "matches the score-function estimator with the leave-one-out baseline, at S = 5 and S = 2."


def _reparam_variant(m, log_s, eps, z_of=None, log_q_of=None):
    """Gradient and value of the reparameterized ELBO with ``z`` or ``log q`` built another way (right or wrong)."""
    s = log_s.exp()
    z = m + s * eps if z_of is None else z_of(m, s, log_s, eps)
    log_q = log_normal_diag(z, m, log_s) if log_q_of is None else log_q_of(m, log_s, z)
    value = (_log_joint(z) - log_q).mean()
    return _grad(value, m, log_s), value.detach()


@checker("3.2", "reparameterization gradient estimator")
def check_reparameterization(reparameterization_surrogate):
    m, log_s = _params()
    eps = torch.randn(6, 2, dtype=_F64)
    what = "build z = m + exp(log_s) * eps with torch operations, so the gradient flows through the draw"
    grad = _same_twice(reparameterization_surrogate, m, log_s, eps, what, "eps")
    value = as_tensor_result(call_learner(reparameterization_surrogate, _log_joint, m, log_s, eps)).detach()

    reference = estimators.reparameterization_surrogate(_log_joint, m, log_s, eps)
    ref, ref_value = _grad(reference, m, log_s), reference.detach()
    entropy, entropy_value = _reparam_variant(  # E[log p] by Monte Carlo, the entropy in closed form
        m, log_s, eps, log_q_of=lambda m, ls, z: -normal_entropy(ls.exp()).sum().expand(z.shape[0])
    )
    sticking, _ = _reparam_variant(  # "sticking the landing": log q with its parameters held fixed
        m, log_s, eps, log_q_of=lambda m, ls, z: log_normal_diag(z, m.detach(), ls.detach())
    )
    mistakes = {
        "no gradient flows through the sample: build z = m + exp(log_s) * eps without .detach() "
        "(the pathwise gradient is the point of this estimator)": _reparam_variant(
            m, log_s, eps, z_of=lambda m, s, ls, e: (m + s * e).detach()
        )[0],
        "the scale is s = exp(log_s): z = m + exp(log_s) * eps, not m + log_s * eps": _reparam_variant(
            m, log_s, eps, z_of=lambda m, s, ls, e: m + ls * e
        )[0],
        "z = m + s * eps uses the standard deviation s, not the variance s^2": _reparam_variant(
            m, log_s, eps, z_of=lambda m, s, ls, e: m + s**2 * e
        )[0],
        (
            "log q(z) uses the variance as the scale: Normal(m, s), with s = exp(log_s) the standard deviation"
        ): _reparam_variant(m, log_s, eps, log_q_of=lambda m, ls, z: log_normal_diag(z, m, 2 * ls))[0],
        "the -log q(z) term carries no gradient: the ELBO is E[log p(x, z) - log q(z)] with "
        "log q(z) = log N(eps; 0, I) - sum(log_s), and the change of variables' -sum(log_s) is what depends on "
        "the parameters": _reparam_variant(
            m, log_s, eps, log_q_of=lambda m, ls, z: torch.zeros(z.shape[0], dtype=z.dtype)
        )[0],
        "sign error: return the ELBO estimate itself (training uses loss = -elbo)": -ref,
        "summed over the S draws; average them (.mean())": ref * eps.shape[0],
    }
    if not _classify(grad, [ref, entropy, sticking], mistakes, " (on 6 fixed draws eps)"):
        _unbiased(
            reparameterization_surrogate,
            lambda S: torch.randn(S, 2, dtype=_F64),
            m,
            log_s,
            what,
            hint=_PATHWISE_HINT,
        )
    if not (
        math.isclose(float(value), float(ref_value), rel_tol=1e-6, abs_tol=1e-9)
        or math.isclose(float(value), float(entropy_value), rel_tol=1e-6, abs_tol=1e-9)
    ):
        fail(
            f"the gradient is right, but the value {fmt(value)} is not the ELBO estimate {fmt(ref_value)} on "
            "these draws: return the average of log p(x, z_s) - log q(z_s)"
        )
    return "its value estimates the ELBO and its gradient is the pathwise (reparameterization) estimate."
