r"""Checkers for the semi-implicit exercises (lessons 06 and 07).

6.2, the SIVI bound, is random by nature and can be written in several correct ways (the ``K`` extra draws
shared by all ``z`` or drawn for each; :math:`\psi_0` drawn with them or apart), so the checker compares
*expectations*: the average of many calls on a family whose marginal is known must match the reference bound,
:func:`helpers.semi_implicit.sivi_bound`, within Monte Carlo error, at ``K = 2`` and ``K = 8``, and at the
lesson's ``S = 500, K = 300``, where reusing the draws that generated ``z`` as the extra draws shows. The
averages of the plausible mistakes (no :math:`\psi_0`, which is :func:`helpers.semi_implicit.sivi_upper_bound`,
a division by ``K``, an average of log densities, ...) are computed the same way and named when the answer
matches one of them. 6.3, the upper bound, is checked the same way against
:func:`helpers.semi_implicit.sivi_upper_bound`. Both first time one call against the reference's and stop an
answer that would make the check (and the lesson) run for minutes. 6.5 (the full-covariance conditional) and 6.6
(the covariance of a semi-implicit family) are deterministic and compared with ``torch.cov`` and
``torch.distributions``, with gradients where the lesson trains through them; 6.5 is also timed against the
reference at the lesson's shapes, where a triangular solve broadcast over the ``S x K`` pairs is forty times
slower. 7.4, the doubly semi-implicit bound, is first compared *exactly* with
:func:`helpers.semi_implicit.dsivi_bound` on two-point stand-in families, whose draws are fixed and balanced so
that every correct way of drawing gives the same value, and each slip (one per part of the estimate: the
likelihood, the prior's average, q's average, the mean) is named, several at once; then in law, with 30 calls at
``S = K = 16``, where reusing the draws that generated ``z`` as the extra draws shows. 7.1, 7.3 and 7.6 compare with
:func:`helpers.semi_implicit_vae.semi_implicit_elbo_terms`, :func:`helpers.semi_implicit_vae.semi_implicit_log_weights`
and :func:`helpers.kernel_stein.ksd_u_statistic`; 7.7 with :func:`helpers.kernel_stein.ksivi_loss` on a stand-in
family with fixed draws and the whole interface of :class:`helpers.semi_implicit.SemiImplicitGaussian`.
"""

import functools
import math

import torch
from torch.distributions import MultivariateNormal, Normal

from ..gaussian import LOG_2PI, log_normal_diag
from ..gaussian import log_normal_tril as reference_log_normal_tril
from ..kernel_stein import ksd_u_statistic as reference_ksd
from ..kernel_stein import ksivi_loss as reference_ksivi_loss
from ..kernel_stein import median_bandwidth, rbf_kernel
from ..semi_implicit import SemiImplicitGaussian, sivi_bound, sivi_upper_bound
from ..semi_implicit import dsivi_bound as reference_dsivi_bound
from ..semi_implicit import semi_implicit_covariance as reference_covariance
from ..semi_implicit import sivi_bound as sivi_bound_reference
from ..semi_implicit import sivi_upper_bound as sivi_upper_bound_reference
from ..semi_implicit_vae import semi_implicit_elbo_terms as reference_elbo_terms
from ..semi_implicit_vae import semi_implicit_log_weights as reference_log_weights
from ._core import (
    Mistake,
    as_tensor_result,
    call_learner,
    checker,
    close,
    diagnose,
    expect_finite,
    expect_gradient,
    expect_shape,
    fail,
    flat,
    fmt,
    learner_grad,
)

__all__ = [
    "check_semi_implicit_log_weights",
    "check_sivi_bound",
    "check_sivi_upper_bound",
    "check_semi_implicit_covariance",
    "check_log_normal_tril",
    "check_dsivi_bound",
    "check_semi_implicit_elbo_terms",
    "check_ksd_u_statistic",
    "check_ksivi_loss",
]

_F64 = torch.float64


# ---------------------------------------------------------------- 6.2

_MEAN = torch.tensor([0.3, -0.5], dtype=_F64)
_TARGET_COV = torch.tensor([[1.5, 0.4], [0.4, 1.0]], dtype=_F64)
_TARGET = MultivariateNormal(torch.zeros(2, dtype=_F64), _TARGET_COV)
_S, _REPS, _KS = 2000, 40, (2, 8)


def _log_target(z):
    return _TARGET.log_prob(z)


def _family():
    return SemiImplicitGaussian.linear(_MEAN, tau=1.0, sigma=0.5)


def _variant(kind, q, S, K):
    """One estimate of the reference bound (``kind="correct"``) or of a plausible mistake."""
    if kind == "correct":
        return sivi_bound(_log_target, q, S, K)
    if kind in ("one too few", "one too many"):  # the bound itself, with one extra draw too few or too many
        return sivi_bound(_log_target, q, S, K - 1 if kind == "one too few" else K + 1)
    if kind == "no psi0":  # psi_0 left out: the upper bound
        return sivi_upper_bound(_log_target, q, S, K)
    if kind == "sign":
        return -sivi_bound(_log_target, q, S, K)
    z, psi0 = q.rsample(S)
    psi = q.sample_psi(K)
    own = q.log_conditional(z, psi0).unsqueeze(1)  # (S, 1)
    others = q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0))  # (S, K)
    both = torch.cat([own, others], 1)
    log_p = _log_target(z)

    def bound(log_terms, log_n):
        return (log_p - (torch.logsumexp(log_terms, 1) - log_n)).mean()

    if kind == "fresh psi0":  # the 'own' term from a new draw, not the psi that generated z
        extra = q.log_conditional(z, q.sample_psi(S)).unsqueeze(1)
        return bound(torch.cat([extra, others], 1), math.log(K + 1))
    if kind == "divide by K":
        return bound(both, math.log(K))
    if kind == "no division":
        return bound(both, 0.0)
    if kind == "mean of logs":
        return (log_p - both.mean(1)).mean()
    if kind == "own only":
        return bound(own, 0.0)
    if kind == "own only, divided":
        return bound(own, math.log(K + 1))
    if kind == "no target":
        return -(torch.logsumexp(both, 1) - math.log(K + 1)).mean()
    raise ValueError(kind)


_OFF_BY_ONE = (
    "off by one: draw exactly K extra psi (q.sample_psi(K)) and add the own term of psi_0: "
    "K + 1 terms in all, divided by K + 1"
)
_MISTAKES = {
    "no psi0": "psi_0, the draw that generated z, is missing from the average: without it "
    "E[log (1/K) sum_k q(z | psi_k)] <= log q(z), and the result is an upper bound on the ELBO. "
    "Average over K + 1 draws, psi_0 included",
    "fresh psi0": "the first term must use psi_0, the draw that generated z (the second output of the same "
    "q.rsample call), not a new draw of psi; with a new draw the result is an upper bound on the ELBO",
    "divide by K": "there are K + 1 terms in the average (psi_0 and the K extra draws): subtract log(K + 1), not log K",
    "no division": "the average needs its 1/(K + 1): logsumexp gives the log of the sum; subtract log(K + 1)",
    "mean of logs": "that averages the log densities; SIVI averages the densities themselves, in log space: "
    "logsumexp(log q(z | psi_k)) - log(K + 1)",
    "own only": "the K extra draws are missing: with psi_0 alone the bound does not improve as K grows; "
    "average q(z | psi_k) over psi_0 and the K extra draws",
    "own only, divided": "the K extra draws are missing from the sum: only psi_0's term is there, divided by K + 1; "
    "add the K terms q(z | psi_k) of the extra draws (in log space, with logsumexp)",
    "one too few": _OFF_BY_ONE,
    "one too many": _OFF_BY_ONE,
    "no target": "log_target(z) is missing: the bound is E[log p(z) - log q~_K(z)]",
    "sign": "sign error: the bound is E[log p(z) - log q~_K(z)], which training maximises",
}


def _expectation(estimate, reps=_REPS):
    values = torch.stack([torch.as_tensor(estimate(), dtype=_F64) for _ in range(reps)])
    return float(values.mean()), float(values.std()) / math.sqrt(reps)


def _diagnose_expectation(answer, variant, mistakes, Ks, reps, what="the bound", mistake_reps=_REPS):
    """Compare the mean of ``reps`` calls of ``answer(K)`` with the reference's, ``variant("correct", K)``, at each K.

    A difference of more than 4 standard errors fails: naming the mistake in ``mistakes`` (kind -> diagnosis)
    whose own expectation, ``variant(kind, K)`` averaged over ``mistake_reps`` calls, is within 4 standard errors at
    every K, or else quoting the two averages.
    """

    def z_score(a, b):
        return abs(a[0] - b[0]) / (math.hypot(a[1], b[1]) + 2.5e-4)

    learner = {K: _expectation(lambda K=K: answer(K), reps) for K in Ks}
    reference = {K: _expectation(lambda K=K: variant("correct", K), reps) for K in Ks}
    if max(z_score(learner[K], reference[K]) for K in Ks) <= 4:
        return
    best, best_z = None, 4.0
    # A mistake is ruled out at the first K where it is off by more than the best so far: try first the K at
    # which the answer is furthest from the reference, where the wrong variants differ most.
    order = sorted(Ks, key=lambda K: -z_score(learner[K], reference[K]))
    for kind, message in mistakes.items():
        worst = 0.0
        for K in order:
            worst = max(worst, z_score(learner[K], _expectation(lambda K=K, kind=kind: variant(kind, K), mistake_reps)))
            if worst > best_z:
                break
        if worst <= best_z:
            best, best_z = message, worst
    if best is not None:
        fail(best)
    K = max(Ks, key=lambda K: z_score(learner[K], reference[K]))
    fail(
        f"at K = {K}, the average of {reps} calls with S = {_S} is {fmt(learner[K][0])} "
        f"(s.e. {learner[K][1]:.2g}); {what}'s expectation is {fmt(reference[K][0])} (s.e. {reference[K][1]:.2g})"
    )


def _mean_gradient(estimate, params, learner, reps=_REPS):
    """Average and standard error of the gradient of ``estimate()`` with respect to ``params`` (flattened)."""
    grads = []
    for _ in range(reps):
        value = estimate()
        if not value.requires_grad:
            return None
        take = learner_grad if learner else torch.autograd.grad
        grads.append(
            flat(*(torch.zeros_like(p) if g is None else g for p, g in zip(params, take(value, params), strict=True)))
        )
    g = torch.stack(grads)
    return g.mean(0), g.std(0) / math.sqrt(reps)


def _timed(fn, reference, *args, repeats=3, grad=None):
    """Time ``fn(*args)`` and ``reference(*args)``: ``(fn's output, fn's seconds, reference's seconds)``.

    Each time is the shortest of ``repeats`` runs (of the forward pass and, with ``grad``, of the gradient with
    respect to the tensors ``grad``), so that a busy machine slows both alike. Called through
    :func:`call_learner`, the times are recorded with the output and the grader's replay reads the same verdict.
    An answer slower than a second on its first run is not run again: it is already too slow.
    """
    import time

    def run(f):
        start = time.perf_counter()
        out = f(*args)
        if grad is not None:
            torch.autograd.grad(torch.as_tensor(out).sum(), grad, allow_unused=True)
        return out, time.perf_counter() - start

    out, seconds = run(fn)
    if seconds < 1.0:
        seconds = min([seconds] + [run(fn)[1] for _ in range(repeats - 1)])
    reference_seconds = min(run(reference)[1] for _ in range(repeats))
    return out, seconds, reference_seconds


def _expect_fast(fn, reference, args, what, slower=20, grace=0.005, grad=None):
    """Fail, naming ``what``, when one call of the answer takes ``slower`` times the reference's, plus ``grace`` s."""
    # the answer is bound into the function called, as in checks.pyro._trained: the record digests the tensors only
    _, seconds, reference_seconds = call_learner(functools.partial(_timed, fn, reference, grad=grad), *args)
    if seconds > slower * reference_seconds + grace:
        fail(
            f"right so far, but too slow: one call took {seconds:.2g} s where the reference takes "
            f"{reference_seconds:.2g} s ({seconds / max(reference_seconds, 1e-9):.0f} times longer). {what}"
        )


_SLOW_BOUND = (
    "The lesson calls it thousands of times: build the (S, K) table of log q(z_s | psi_k) with one broadcast call "
    "of q.log_conditional (z of shape (S, 1, L) against psi of shape (1, K, L)), with no Python loop over the "
    "draws and no S x S table."
)

# The lesson's sizes, S = 500 draws of z and K = 300 extra draws, where reusing the draws psi_0 that generated z as
# the "extra" ones shows: for the first K draws of z, the own draw is then among the extra ones. A narrow
# conditional in 3 dimensions makes that bias several standard errors of 10 calls, and the family's own marginal
# as the target removes the noise of log p - log q (section 4 of the lesson does the same).
_REUSE_MEAN = torch.tensor([0.3, -0.5, 0.2], dtype=_F64)
_REUSE_S, _REUSE_K, _REUSE_REPS = 500, 300, 10


def _reuse_family():
    return SemiImplicitGaussian.linear(_REUSE_MEAN, tau=1.0, sigma=0.4)


def _reuse_target(z):
    return Normal(_REUSE_MEAN, math.sqrt(1.0 + 0.4**2)).log_prob(z).sum(-1)


def _reused_draws(q, S, K, with_psi0):
    """A bound whose K "extra" draws are psi0[:K], the draws that generated the first K draws of z."""
    z, psi0 = q.rsample(S)
    others = q.log_conditional(z.unsqueeze(1), psi0[:K].unsqueeze(0))  # (S, K)
    if with_psi0:
        others = torch.cat([q.log_conditional(z, psi0).unsqueeze(1), others], 1)
    return (_reuse_target(z) - (torch.logsumexp(others, 1) - math.log(others.shape[1]))).mean()


def _check_at_lesson_sizes(answer, reference, with_psi0, what):
    """The answer's average at S = 500, K = 300 against the reference's; name the reuse of psi_0 as extra draws."""
    q = _reuse_family()
    learner = _expectation(lambda: call_learner(answer, _reuse_target, q, _REUSE_S, _REUSE_K), _REUSE_REPS)
    expected = _expectation(lambda: reference(_reuse_target, q, _REUSE_S, _REUSE_K), _REUSE_REPS)
    if abs(learner[0] - expected[0]) <= 4 * math.hypot(learner[1], expected[1]) + 2.5e-3:
        return
    reused = _expectation(lambda: _reused_draws(q, _REUSE_S, _REUSE_K, with_psi0), _REUSE_REPS)
    if abs(learner[0] - reused[0]) <= 4 * math.hypot(learner[1], reused[1]) + 2.5e-3:
        fail(
            "the K extra draws must be independent of z: psi0[:K] (the draws that generated z) puts, for the first "
            "K draws of z, the very draw that generated it among the extra ones. The bias is invisible when K is "
            f"small against S, but at the lesson's S = {_REUSE_S}, K = {_REUSE_K} it moves the estimate from "
            f"{fmt(expected[0])} to {fmt(reused[0])}. Draw the extra ones with q.sample_psi(K)"
        )
    fail(
        f"right at small K, but at the lesson's S = {_REUSE_S}, K = {_REUSE_K} the average of {_REUSE_REPS} calls "
        f"is {fmt(learner[0])} (s.e. {learner[1]:.2g}); {what}'s expectation is {fmt(expected[0])} "
        f"(s.e. {expected[1]:.2g}). Are the K extra draws fresh draws of psi, independent of z, for every K?"
    )


@checker("6.2", "the SIVI bound in log space")
def check_sivi_bound(sivi_bound):
    q = _family()
    out = as_tensor_result(call_learner(sivi_bound, _log_target, q, 16, 3))
    if out.dim() == 1 and out.shape[0] == 16:
        fail("returned one value per draw of z, shape (S,); return their average over the S draws, a 0-d tensor")
    expect_shape(out, (), " (the bound is one number: a 0-d tensor)")
    expect_finite(out)
    if not out.requires_grad:
        fail(
            "no gradient reaches the family's parameters: build the bound from q.rsample and q.sample_psi "
            "without .detach() or torch.no_grad(), so that training can follow it"
        )

    with torch.no_grad():
        _expect_fast(sivi_bound, sivi_bound_reference, (_log_target, q, _S, max(_KS)), _SLOW_BOUND)
        _diagnose_expectation(
            lambda K: call_learner(sivi_bound, _log_target, q, _S, K),
            lambda kind, K: _variant(kind, q, _S, K),
            _MISTAKES,
            _KS,
            _REPS,
            mistake_reps=20,
        )
        _check_at_lesson_sizes(sivi_bound, sivi_bound_reference, True, "the bound")

        # log space: 100 coordinates and sigma = 1e-4 put log q(z | psi_0) near +780, beyond exp's range even in float64
        q_sharp = SemiImplicitGaussian.linear(torch.zeros(100, dtype=torch.float32), tau=1.0, sigma=1e-4)
        out = as_tensor_result(call_learner(sivi_bound, lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1), q_sharp, 8, 5))
        if not torch.isfinite(out).all():
            fail(
                f"the result is {fmt(out)} for a sharp 100-dimensional conditional: exp(log q) overflows. "
                "Average in log space: torch.logsumexp(log_q, dim) - math.log(K + 1)"
            )

    # Gradient, along every parameter of the family: the average gradient of many calls must match the reference's.
    # (Along the mean alone a wrong answer can pass: translating the family leaves the gap unchanged, so extra draws
    # psi_k detached from the graph change only the gradient in the mixing scale.)
    params = [q.mixing.weight, q.mixing.bias]
    names = [f"the mixing weight [{i}, {j}]" for i in range(2) for j in range(2)] + ["the mean [0]", "the mean [1]"]
    learner = _mean_gradient(lambda: call_learner(sivi_bound, _log_target, q, 500, 8), params, learner=True)
    if learner is None:
        fail("no gradient reaches the family's parameters: build the bound without .detach() or torch.no_grad()")
    reference = _mean_gradient(lambda: _variant("correct", q, 500, 8), params, learner=False)
    z = (learner[0] - reference[0]).abs() / (torch.hypot(learner[1], reference[1]) + 0.005)
    if (z > 4).any():
        i = int(z.argmax())
        fail(
            f"the value is right but its gradient is not: with respect to {names[i]} your bound's gradient averages "
            f"{fmt(learner[0][i])} over {_REPS} calls, the reference's {fmt(reference[0][i])} (s.e. "
            f"{float(torch.hypot(learner[1][i], reference[1][i])):.2g}); z and every psi_k must stay differentiable, "
            "from q.rsample(S) and q.sample_psi(K) through the conditionals (no torch.no_grad(), no .detach())"
        )
    return (
        "an unbiased estimate of the (K + 1)-draw bound at K = 2 and K = 8 and at the lesson's S = 500, K = 300, "
        "with the right gradient, finite where exp would overflow."
    )


# ---------------------------------------------------------------- 6.3


def _upper_family():
    # a wide conditional against a narrower mixing spread: the upper bound's estimates have heavy tails when the
    # extra draws rarely land near z, and with (tau, sigma) = (0.6, 0.8) 100 calls pin its mean down to ~0.02
    return SemiImplicitGaussian.linear(_MEAN, tau=0.6, sigma=0.8)


_UPPER_REPS, _UPPER_KS = 100, (1, 2, 8)  # K = 1 tells "one too many" apart; K = 8 the ways to average


def _upper_variant(kind, q, S, K):
    """One estimate of the reference upper bound (``kind="correct"``) or of a plausible mistake."""
    if kind == "correct":
        return sivi_upper_bound(_log_target, q, S, K)
    if kind == "one too few":
        return torch.tensor(math.inf) if K == 1 else sivi_upper_bound(_log_target, q, S, K - 1)
    if kind == "one too many":
        return sivi_upper_bound(_log_target, q, S, K + 1)
    if kind == "with psi0":
        return sivi_bound(_log_target, q, S, K)
    if kind == "sign":
        return -sivi_upper_bound(_log_target, q, S, K)
    z, psi0 = q.rsample(S)
    if kind == "z as psi":  # the first output of a second q.rsample call: draws of z, not of psi
        others = q.log_conditional(z.unsqueeze(1), q.rsample(K)[0].unsqueeze(0))
        return (_log_target(z) - (torch.logsumexp(others, 1) - math.log(K))).mean()
    others = q.log_conditional(z.unsqueeze(1), q.sample_psi(K).unsqueeze(0))  # (S, K)
    log_p = _log_target(z)
    if kind == "divide by K + 1":
        return (log_p - (torch.logsumexp(others, 1) - math.log(K + 1))).mean()
    if kind == "no division":
        return (log_p - torch.logsumexp(others, 1)).mean()
    if kind == "mean of logs":
        return (log_p - others.mean(1)).mean()
    if kind == "no target":
        return -(torch.logsumexp(others, 1) - math.log(K)).mean()
    raise ValueError(kind)


_UPPER_MISTAKES = {
    "with psi0": "that is the lower bound of exercise 6.2: psi_0, the draw that generated z, is in the average. "
    "The upper bound leaves it out and averages q(z | psi_k) over the K extra draws only",
    "z as psi": "the extra draws are draws of z, not of psi: q.rsample(K) returns (z, psi), and its first output "
    "carries the conditional's noise on top of psi. Take the K extra draws from q.sample_psi(K)",
    "divide by K + 1": "there are K terms in the average (the K extra draws, without psi_0): subtract log K, "
    "not log(K + 1)",
    "no division": "the average needs its 1/K: logsumexp gives the log of the sum; subtract log K",
    "mean of logs": "your estimate's expectation is that of log q(z | psi) for a single draw of psi, whatever K: "
    "either it averages the log densities (a mean of log q(z | psi_k)) or it uses only one extra draw. The bound "
    "needs the log of the average of the K densities themselves, in log space: logsumexp over the K draws - log K",
    "one too few": "off by one: average over exactly K extra draws of psi (q.sample_psi(K))",
    "one too many": "off by one: average over exactly K extra draws of psi (q.sample_psi(K)), nothing else",
    "no target": "log_target(z) is missing: the bound is E[log p(z) - log (1/K) sum_k q(z | psi_k)]",
    "sign": "sign error: the bound is E[log p(z) - log (1/K) sum_k q(z | psi_k)]",
}


@checker("6.3", "the upper bound on the ELBO")
def check_sivi_upper_bound(sivi_upper_bound):
    q = _upper_family()
    with torch.no_grad():
        out = as_tensor_result(call_learner(sivi_upper_bound, _log_target, q, 16, 3))
        if out.dim() == 1 and out.shape[0] == 16:
            fail("returned one value per draw of z, shape (S,); return their average over the S draws, a 0-d tensor")
        expect_shape(out, (), " (the bound is one number: a 0-d tensor)")
        expect_finite(out)
        _expect_fast(sivi_upper_bound, sivi_upper_bound_reference, (_log_target, q, _S, max(_UPPER_KS)), _SLOW_BOUND)
        _diagnose_expectation(
            lambda K: call_learner(sivi_upper_bound, _log_target, q, _S, K),
            lambda kind, K: _upper_variant(kind, q, _S, K),
            _UPPER_MISTAKES,
            _UPPER_KS,
            _UPPER_REPS,
            what="the upper bound",
            mistake_reps=20,
        )
        _check_at_lesson_sizes(sivi_upper_bound, sivi_upper_bound_reference, False, "the upper bound")
        # log space: without psi_0, every q(z | psi_k) of a sharp 100-dimensional conditional underflows to 0
        q_sharp = SemiImplicitGaussian.linear(torch.zeros(100, dtype=torch.float32), tau=1.0, sigma=1e-2)
        out = as_tensor_result(
            call_learner(sivi_upper_bound, lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1), q_sharp, 8, 5)
        )
        if not torch.isfinite(out).all():
            fail(
                f"the result is {fmt(out)} for a sharp 100-dimensional conditional: exp(log q) underflows to 0. "
                "Average in log space: torch.logsumexp(log_q, dim) - math.log(K)"
            )
    return (
        "an unbiased estimate of the K-draw upper bound at K = 1, 2 and 8 and at the lesson's S = 500, K = 300, "
        "finite where exp would underflow."
    )


# ---------------------------------------------------------------- 6.6


def _covariance_problem(dtype=_F64):
    torch.manual_seed(5)
    psi = torch.randn(400, 3, dtype=dtype) @ torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.0, -0.6, 0.3]]).to(
        dtype
    ).T + torch.tensor([2.0, -1.0, 0.5], dtype=dtype)  # correlated, off-centre mixing draws
    C = torch.tensor([[0.5, 0.0, 0.0], [0.3, 0.4, 0.0], [-0.2, 0.1, 0.6]], dtype=dtype)  # not symmetric: C C^T != C^T C
    return psi, C


@checker("6.6", "the covariance of a semi-implicit family")
def check_semi_implicit_covariance(semi_implicit_covariance):
    psi, C = _covariance_problem()
    try:
        raw = call_learner(semi_implicit_covariance, psi, C)
    except Mistake as exc:
        if "must match the size of tensor" in str(exc) or "operands could not be broadcast" in str(exc):
            fail(
                f"your function raised a broadcasting error for psi of shape {tuple(psi.shape)}: the covariance of "
                f"psi came out {psi.shape[0]} x {psi.shape[0]}, between the draws, and cannot be added to C C^T "
                f"({C.shape[0]} x {C.shape[0]}). torch.cov (and np.cov) take the variables in rows: pass psi.T, so "
                "that the L coordinates are the variables"
            )
        raise
    if not isinstance(raw, torch.Tensor):
        fail(
            f"returned a {type(raw).__module__}.{type(raw).__name__}, not a torch tensor: the lesson uses the result "
            "as a tensor (its diagonal, square roots, on the device of psi). Compute with torch on the inputs "
            "(torch.cov, @), not NumPy"
        )
    out = as_tensor_result(raw)
    expect_shape(out, (3, 3), " (an L x L covariance matrix, L = psi.shape[1])")
    expect_finite(out)
    n = psi.shape[0]
    cov_unbiased, cov_ml = torch.cov(psi.T), torch.cov(psi.T, correction=0)
    conditional = C @ C.T
    reference = reference_covariance(psi, C)
    if close(out, reference - cov_unbiased + cov_ml, 1e-6, 1e-9):
        reference = reference - cov_unbiased + cov_ml  # dividing by n instead of n - 1 is as right
    uncentred = psi.T @ psi / n  # the second moment about 0, not the covariance
    diagnose(
        out,
        reference,
        {
            "the conditional's covariance is C C^T (C is its Cholesky factor), not C itself": cov_unbiased + C,
            "the conditional's covariance is C C^T, not C^T C (C is lower-triangular, so the two differ)": cov_unbiased
            + C.T @ C,
            "the conditional's covariance is missing: given psi, z still varies with covariance C C^T "
            "(law of total covariance: Cov z = Cov psi + E[Cov(z | psi)])": cov_unbiased,
            "the spread of the mixing variable is missing: psi varies from draw to draw, which adds Cov psi "
            "(law of total covariance: Cov z = Cov psi + E[Cov(z | psi)])": conditional,
            "Cov psi must be centred: subtract the mean of the draws before the outer products (or use torch.cov)": (
                uncentred + conditional
            ),
            "only the diagonal is kept; the covariance of z is a full L x L matrix, Cov psi + C C^T": torch.diag(
                (cov_unbiased + conditional).diagonal()
            ),
            "torch.cov expects the variables in rows and the draws in columns: pass psi.T, not psi (or "
            "compute the covariance of the columns yourself)": (
                torch.cov(psi)[:3, :3] + conditional  # the covariance of the draws, not of the coordinates
            ),
            "those are standard deviations' squares summed, not covariances: Cov z = Cov psi + C C^T": cov_unbiased
            + torch.diag((C**2).sum(0)),
        },
        rtol=1e-6,
        atol=1e-9,
    )
    # the lesson's dtype and scale: float32, 31 dimensions, thousands of draws
    psi32 = torch.randn(5000, 31) * 3 + 10
    C32 = torch.tril(torch.randn(31, 31) * 0.05) + 0.2 * torch.eye(31)
    out32 = as_tensor_result(call_learner(semi_implicit_covariance, psi32, C32))
    expect_shape(out32, (31, 31), " for psi of shape (5000, 31)")
    if out32.dtype != torch.float32:
        fail(
            f"returned {out32.dtype} for float32 inputs (the lesson's): a NumPy round trip (np.cov, .numpy(), "
            "torch.tensor(...)) or a float64 constant changed the dtype. Compute with torch on the inputs "
            "(torch.cov(psi.T) + C @ C.T)"
        )
    ref32 = reference_covariance(psi32.double(), C32.double())
    if not (close(out32, ref32, 1e-3, 1e-3) or close(out32, ref32 - torch.cov(psi32.double().T) / 5000, 1e-3, 1e-3)):
        fail("right for 3 dimensions in float64 but not for 31 dimensions in float32, the lesson's case")
    return "Cov z = Cov psi + C C^T: the law of total covariance, estimated from the mixing draws."


# ---------------------------------------------------------------- 6.5


def _tril_problem(dtype=_F64):
    torch.manual_seed(6)
    z = torch.randn(4, 1, 3, dtype=dtype)  # S = 4 draws of z against K = 5 of psi, broadcast as in the bounds
    psi = torch.randn(1, 5, 3, dtype=dtype)
    C = torch.tensor([[0.7, 0.0, 0.0], [0.4, 1.3, 0.0], [-0.5, 0.2, 0.9]], dtype=dtype)
    return z, psi, C


def _quadratic(z, psi, M):
    d = z - psi
    return (d @ torch.linalg.inv(M).T * d).sum(-1)  # d^T M^{-1} d, row by row


@checker("6.5", "the full-covariance Gaussian conditional")
def check_log_normal_tril(log_normal_tril):
    z, psi, C = _tril_problem()
    out = as_tensor_result(call_learner(log_normal_tril, z, psi, C))
    if out.shape == (4, 5, 3):
        fail("returned one value per coordinate; the density is over the whole vector z: sum over the last axis")
    expect_shape(out, (4, 5), " (z of shape (4, 1, 3) against psi of shape (1, 5, 3) broadcast to (4, 5))")
    expect_finite(out)
    L = z.shape[-1]
    Sigma = C @ C.T
    reference = reference_log_normal_tril(z, psi, C)
    log_det_half = C.diagonal().log().sum()
    const = 0.5 * L * LOG_2PI

    def form(quad, log_det_half=log_det_half, const=const, half=0.5):
        return -half * quad - log_det_half - const

    d = z - psi
    diagnose(
        out,
        reference,
        {
            "C is the Cholesky factor of the covariance, Sigma = C C^T; you used C itself as the covariance": form(
                _quadratic(z, psi, C + C.T - torch.diag(C.diagonal())), log_det_half=0.5 * log_det_half
            ),
            "Sigma = C C^T, so solve with C (lower-triangular): u = C^{-1}(z - psi); solving with C^T gives "
            "(C^T C)^{-1}, the wrong matrix": form(_quadratic(z, psi, C.T @ C)),
            "the quadratic form needs C^{-1}(z - psi) (a triangular solve), not C (z - psi)": form(
                ((d @ C.T) ** 2).sum(-1)
            ),
            "log |Sigma|^{1/2} = sum_l log C_ll: the log-determinant term is missing": form(
                _quadratic(z, psi, Sigma), log_det_half=0.0
            ),
            "log |Sigma|^{1/2} = sum_l log C_ll, once: you subtracted log |Sigma| = 2 sum_l log C_ll": form(
                _quadratic(z, psi, Sigma), log_det_half=2 * log_det_half
            ),
            "the exponent is -|C^{-1}(z - psi)|^2 / 2: the factor 1/2 is missing": form(
                _quadratic(z, psi, Sigma), half=1.0
            ),
            "the normalising constant -L/2 log(2 pi) is missing": form(_quadratic(z, psi, Sigma), const=0.0),
            "the normalising constant is -L/2 log(2 pi), L times -1/2 log(2 pi): you wrote it once": form(
                _quadratic(z, psi, Sigma), const=0.5 * LOG_2PI
            ),
            "the off-diagonal entries of C are ignored: the conditional has a full covariance C C^T": Normal(
                psi, C.diagonal()
            )
            .log_prob(z)
            .sum(-1),
        },
        rtol=1e-6,
        atol=1e-8,
    )
    # gradients: the lesson trains the mixing network (through psi), the draws z and C itself through this function
    # (C is lower-triangular: its entries above the diagonal are not variables, so the gradient is taken with
    # respect to a matrix whose upper triangle is masked out, and an answer may or may not read those zeros)
    z_g, psi_g, C_raw = (t.clone().requires_grad_(True) for t in (z, psi, C))
    out = as_tensor_result(call_learner(log_normal_tril, z_g, psi_g, C_raw.tril()))
    reference = reference_log_normal_tril(z_g, psi_g, C_raw.tril())
    expect_gradient(out, [z_g, psi_g, C_raw], reference, ["z", "psi", "scale_tril"], rtol=1e-5, atol=1e-8)
    # the lesson's dtype and scale: float32, 31 dimensions, a narrow conditional
    torch.manual_seed(7)
    C32 = torch.tril(torch.randn(31, 31) * 0.01, -1) + torch.diag(torch.rand(31) * 0.05 + 0.01)
    psi32 = torch.randn(1, 20, 31)
    z32 = psi32[:, :4].transpose(0, 1) + torch.randn(4, 1, 31) @ C32.T  # near some of the psi
    out32 = as_tensor_result(call_learner(log_normal_tril, z32, psi32, C32))
    expect_shape(out32, (4, 20), " for z (4, 1, 31) against psi (1, 20, 31)")
    ref32 = reference_log_normal_tril(z32.double(), psi32.double(), C32.double())
    if not torch.isfinite(out32).all():
        fail(
            "not finite for a narrow 31-dimensional conditional in float32 (the lesson's case): take logs before "
            "exponentials, e.g. sum the log of C's diagonal instead of the log of a determinant"
        )
    if not close(out32, ref32, 1e-4, 0.5):
        fail(
            "right in float64 for 3 dimensions, but off for a narrow 31-dimensional conditional in float32: "
            "avoid inverting Sigma = C C^T (its condition number is C's squared); solve with C "
            "(torch.linalg.solve_triangular) and use sum(log diag C) for the log-determinant"
        )
    # the lesson's shapes: the bound's table, z (50, 1, 31) against psi (1, 101, 31), forward and backward, 1500 times
    # in the fit. A triangular solve broadcast over the S x K pairs solves 5050 systems one by one: 40 times the
    # reference's time here, and the lesson's fit eight times slower. Timed against the reference in the same call.
    torch.manual_seed(8)
    C_fit = (torch.tril(torch.randn(31, 31) * 0.01, -1) + torch.diag(torch.rand(31) * 0.05 + 0.05)).requires_grad_()
    z_fit, psi_fit = torch.randn(50, 1, 31, requires_grad=True), torch.randn(1, 101, 31, requires_grad=True)
    _expect_fast(
        log_normal_tril,
        reference_log_normal_tril,
        (z_fit, psi_fit, C_fit),
        "The lesson calls it on all S x K = 50 x 101 pairs of the bound at once, 1500 times: a triangular solve "
        "broadcast over the pairs (solve_triangular(C, (z - psi).unsqueeze(-1))) solves 5050 small systems one by "
        "one. Solve once for all of them: put the pairs' differences as the columns of one right-hand side "
        "(shape (L, S K)), or compute C^{-1} once and apply it to z and psi before subtracting",
        slower=12,
        grace=0.003,
        grad=(z_fit, psi_fit, C_fit),
    )
    return "log N(z; psi, C C^T) by a triangular solve, with log|Sigma|^{1/2} = sum log C_ll; right gradients."


# ---------------------------------------------------------------- 7.1


def _amortized_problem():
    torch.manual_seed(0)
    x = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [3.0, 1.0, -2.0]], dtype=_F64)
    z = torch.tensor([[0.3, -0.2], [1.0, 0.4], [-0.6, 0.9]], dtype=_F64)  # B = 3, L = 2
    psi = torch.randn(5, 3, 2, dtype=_F64)  # K + 1 = 5 draws per data point: the axes cannot be confused
    psi[0] = z + 0.1 * torch.randn(3, 2, dtype=_F64)  # psi_0 generated z, so it sits next to it
    log_scale = torch.tensor([[-0.5, 0.1], [0.0, -0.3], [0.2, 0.4]], dtype=_F64)

    def log_joint(x, z):
        return -0.5 * ((x[..., :2] - z) ** 2).sum(-1) - 0.5 * (z**2).sum(-1)

    return x, z, psi, log_scale, log_joint


@checker("7.1", "the amortized SIVI surrogate")
def check_semi_implicit_elbo_terms(semi_implicit_elbo_terms):
    x, z, psi, log_scale, log_joint = _amortized_problem()
    out = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi, log_scale, log_joint))
    if out.dim() == 0:
        fail("returned one number; return one surrogate per data point, shape (B,) (no mean over the batch)")
    expect_shape(out, (3,), " (one value per data point)")
    expect_finite(out)
    log_q = log_normal_diag(z, psi, log_scale)  # (K + 1, B)
    K1, L = psi.shape[0], z.shape[-1]
    lj = log_joint(x, z)

    def surrogate(log_terms, n):  # a mistake's surrogate: log p(x, z) - log (1/n) sum of the terms' densities
        return lj - (torch.logsumexp(log_terms, 0) - math.log(n))

    diagnose(
        out,
        reference_elbo_terms(x, z, psi, log_scale, log_joint),
        {
            "psi[0], the draw that generated z, is missing from the average (that gives an upper bound on the ELBO); "
            "average over all K + 1 rows of psi": surrogate(log_q[1:], K1 - 1),
            "there are K + 1 terms (psi.shape[0]), so subtract log(K + 1), not log K": surrogate(log_q, K1 - 1),
            "the average needs its 1/(K + 1): subtract log(psi.shape[0]) after the logsumexp": lj
            - torch.logsumexp(log_q, 0),
            "that averages the log densities; average the densities, in log space (logsumexp over the draws)": lj
            - log_q.mean(0),
            "only psi[0] is used: the K extra draws must enter the average": lj - log_q[0],
            "log_joint(x, z) is missing: the surrogate is log p(x, z) - log q~(z | x)": -(
                torch.logsumexp(log_q, 0) - math.log(K1)
            ),
            "sign error: the surrogate is log p(x, z) - log q~(z | x)": -surrogate(log_q, K1),
            "exp(log_scale) is the standard deviation, not the variance": surrogate(
                log_normal_diag(z, psi, 0.5 * log_scale), K1
            ),
            (
                "the Gaussian's log density is summed over the L coordinates before averaging over draws, not averaged"
            ): surrogate(log_q / L, K1),
            "exp(log_scale) is the standard deviation itself, not exp(2 log_scale)": surrogate(
                log_normal_diag(z, psi, 2 * log_scale), K1
            ),
            "psi[0], the draw that generated z, is missing from the sum (you still divide by K + 1): "
            "sum over all K + 1 rows of psi": surrogate(log_q[1:], K1),
        },
    )
    psi_g, log_scale_g = psi.clone().requires_grad_(True), log_scale.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi_g, log_scale_g, log_joint))
    if not out.requires_grad:
        fail(
            "no gradient flows back to psi and log_scale: keep the computation in torch, without .detach() "
            "or torch.no_grad(), or training cannot follow it"
        )
    g_psi, g_ls = learner_grad(out.sum(), (psi_g, log_scale_g))
    psi_r, ls_r = psi.clone().requires_grad_(True), log_scale.clone().requires_grad_(True)
    r_psi, r_ls = torch.autograd.grad(reference_elbo_terms(x, z, psi_r, ls_r, log_joint).sum(), (psi_r, ls_r))
    if g_psi is None or g_ls is None or not (close(g_psi, r_psi, 1e-5, 1e-7) and close(g_ls, r_ls, 1e-5, 1e-7)):
        fail(
            "the value is right but its gradient with respect to psi or log_scale is not: part of the computation "
            "is detached from the graph"
        )
    big = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi, log_scale - 40.0, log_joint))
    if not torch.isfinite(big).all():
        fail(
            "not finite when the conditional is very narrow (log_scale - 40): exp under- or overflows; "
            "average in log space with torch.logsumexp"
        )
    return "log p(x, z) - log of the (K + 1)-draw average of q(z | psi_k), per data point, in log space."


# ---------------------------------------------------------------- 7.3


def _iw_problem(dtype=_F64, M=5, K_psi=3, B=2, L=2, scale=1.0):
    torch.manual_seed(8)
    x = torch.randn(B, 3, dtype=dtype)
    log_scale = torch.tensor([-0.5, 0.1, 0.0, -0.3], dtype=dtype).repeat(B * L)[: B * L].reshape(B, L)
    log_scale = log_scale + math.log(scale)
    psi_own = torch.randn(M, B, L, dtype=dtype)
    z = psi_own + log_scale.exp() * torch.randn(M, B, L, dtype=dtype)  # each z_k next to its own psi_k0
    psi_extra = torch.randn(K_psi, B, L, dtype=dtype)  # M != K_psi + 1 != B: the axes cannot be confused

    def log_joint(x, z):
        return -0.5 * ((x.sum(-1, keepdim=True) - z) ** 2).sum(-1) - 0.5 * (z**2).sum(-1)  # (M, B)

    return x, z, psi_own, psi_extra, log_scale, log_joint


@checker("7.3", "the importance log-weights of a semi-implicit encoder")
def check_semi_implicit_log_weights(semi_implicit_log_weights):
    x, z, psi_own, psi_extra, log_scale, log_joint = _iw_problem()
    out = as_tensor_result(call_learner(semi_implicit_log_weights, x, z, psi_own, psi_extra, log_scale, log_joint))
    if out.shape == (2,):
        fail(
            "returned one value per image; return one log-weight per draw and image, shape (M, B): the bound's "
            "average over the draws is taken later, by log_mean_exp"
        )
    expect_shape(out, (5, 2), " (one log-weight per draw z_k and image: (M, B))")
    expect_finite(out)
    M, K = z.shape[0], psi_extra.shape[0]
    lj = log_joint(x, z)
    own = log_normal_diag(z, psi_own, log_scale)  # (M, B)
    others = log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), log_scale)  # (M, K, B)
    every_own = log_normal_diag(z.unsqueeze(1), psi_own.unsqueeze(0), log_scale)  # (M, M, B): z_k against all psi_j0

    def weights(log_terms, n):
        return lj - (torch.logsumexp(log_terms, 1) - math.log(n))

    with_own = torch.cat([own.unsqueeze(1), others], 1)
    diagnose(
        out,
        reference_log_weights(x, z, psi_own, psi_extra, log_scale, log_joint),
        {
            "z_k's own generating draw psi_k0 is missing from its average: without it the weight is not unbiased for "
            "p(x) and the result is no bound; average q(z_k | psi_k0) with the K_psi extra draws": weights(others, K),
            "there are K_psi + 1 terms in each average (the own draw and the K_psi extra ones): subtract "
            "log(K_psi + 1), not log K_psi": weights(with_own, K),
            "the average needs its 1 / (K_psi + 1)": lj - torch.logsumexp(with_own, 1),
            "psi_k0 generated z_k only: the other draws' own psi are not among z_k's mixing draws; average q(z_k | "
            "psi_k0) with the K_psi shared extra draws": weights(torch.cat([every_own, others], 1), M + K),
            "that averages the log densities; average the densities, in log space (log-sum-exp over the psi draws)": (
                lj - with_own.mean(1)
            ),
            "log p(x, z_k) is missing: the weight is p(x, z_k) / q~(z_k | x)": -(
                torch.logsumexp(with_own, 1) - math.log(K + 1)
            ),
            "a sign is off: log w_k = log p(x, z_k) - log q~(z_k | x)": -weights(with_own, K + 1),
            "exp(log_scale) is the standard deviation, not the variance": weights(
                torch.cat(
                    [
                        log_normal_diag(z, psi_own, 0.5 * log_scale).unsqueeze(1),
                        log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), 0.5 * log_scale),
                    ],
                    1,
                ),
                K + 1,
            ),
        },
        rtol=1e-6,
        atol=1e-9,
    )
    # the lesson's case: float32, 8 latent dimensions, a narrow conditional whose densities overflow exp
    x32, z32, own32, extra32, ls32, lj32 = _iw_problem(torch.float32, M=5, K_psi=50, B=2, L=8, scale=1e-6)
    out32 = as_tensor_result(call_learner(semi_implicit_log_weights, x32, z32, own32, extra32, ls32, lj32))
    expect_shape(out32, (5, 2), " for M = 5 draws, K_psi = 50 and L = 8 in float32")
    if not torch.isfinite(out32).all():
        fail(
            "not finite for a narrow conditional in float32 (the densities exceed exp's range): average in log "
            "space, with a log-sum-exp over the draws of psi"
        )
    ref32 = reference_log_weights(x32.double(), z32.double(), own32.double(), extra32.double(), ls32.double(), lj32)
    if not close(out32, ref32, 1e-4, 1e-2):
        fail("right in float64, but not for a narrow conditional in float32: average in log space")
    return "log p(x, z_k) - log of the (K_psi + 1)-draw average with z_k's own psi_k0, in log space."


# ---------------------------------------------------------------- 7.4

_X_OBS = torch.tensor([1.0, -0.5], dtype=_F64)


def _log_likelihood(z):
    return -0.5 * ((_X_OBS - z) ** 2).sum(-1) - math.log(2 * math.pi)


def _alternate(first, second, n):
    """``(n, L)``: row ``i`` is ``first`` for even ``i``, else ``second``."""
    return torch.where((torch.arange(n) % 2 == 0).unsqueeze(-1), first, second)


class _Alternating(torch.nn.Module):
    """A "mixing network" that ignores its noise: its rows alternate ``a, b, a, ...``."""

    def __init__(self, a, b):
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)

    def forward(self, noise):
        return _alternate(self.a, self.b, noise.shape[0])


class _TwoPointFamily(torch.nn.Module):
    """A semi-implicit stand-in whose mixing variable takes two values, ``a`` and ``b``, in a fixed balanced order.

    It has the whole interface of :class:`helpers.semi_implicit.SemiImplicitGaussian` (``mixing``, ``noise_dim``,
    ``L``, ``log_sigma``, ``sigma``, ``scale_tril``, ``full_covariance``, ``sample_psi``, ``rsample``,
    ``log_conditional``), and a deterministic one: ``sample_psi(n)`` gives ``a, b, a, b, ...``, ``rsample(n)`` gives
    ``psi_0 = b, a, b, ...`` with ``z = psi_0 + sigma * eps`` from a fixed bank. With ``K`` even and ``S`` odd, every
    correct way of drawing the extra draws (``K`` shared, ``K`` for each ``z`` in either layout, from ``sample_psi`` or
    from another ``rsample``) holds as many ``a`` as ``b``, so every correct answer gives the reference's value
    exactly and each mistake a value of its own; a fresh ``sample_psi(S)`` in place of ``psi_0`` differs from it.
    """

    full_covariance = False

    def __init__(self, a, b, sigma, seed):
        super().__init__()
        a, b = torch.tensor(a, dtype=_F64), torch.tensor(b, dtype=_F64)
        self.L = self.noise_dim = a.shape[-1]
        self.mixing = _Alternating(a, b)
        self.register_buffer("log_sigma", torch.tensor(sigma, dtype=_F64).log())
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("eps", torch.randn(64, self.L, generator=g, dtype=_F64))

    @property
    def sigma(self):
        return self.log_sigma.exp()

    def scale_tril(self):
        return torch.diag_embed(self.sigma)

    def sample_psi(self, n):
        return self.mixing(torch.zeros(n, self.noise_dim, dtype=_F64))

    def rsample(self, n):
        psi = _alternate(self.mixing.b, self.mixing.a, n)
        return psi + self.sigma * self.eps[torch.arange(n) % len(self.eps)], psi

    def log_conditional(self, z, psi):
        return log_normal_diag(z, psi, self.log_sigma)


def _two_point_problem():
    prior = _TwoPointFamily([0.6, -0.2], [-0.9, 0.7], [0.8, 0.6], seed=1)
    q = _TwoPointFamily([0.3, 0.4], [0.1, -0.6], [0.5, 0.7], seed=2)  # another conditional than the prior's
    return prior, q


_COUNTS = (
    "the two averages have different numbers of terms: the prior's has K (divide by K: subtract log K), "
    "q's has K + 1, psi_0 included (subtract log(K + 1))"
)
# Each part of the estimate, as it is and as each plausible slip makes it: one value per draw of z, (S,).
_DSIVI_PRIOR_SLIPS = {
    "the prior's average takes no own term: z came from q, so no draw of zeta generated it, and adding one (q's "
    "psi_0 here) pushes log p~(z) up and the estimate above the bound. Average p(z | zeta_k) over the K independent "
    "draws only": lambda t: torch.logsumexp(torch.cat([t["prior_at_own"], t["prior"]], 1), 1) - math.log(t["K"] + 1),
    _COUNTS: lambda t: torch.logsumexp(t["prior"], 1) - math.log(t["K"] + 1),
    "the prior's average needs its 1/K: subtract log K after the logsumexp": lambda t: torch.logsumexp(t["prior"], 1),
    "the prior's term averages log densities; average the densities p(z | zeta_k) themselves, in log space: "
    "logsumexp(...) - log K": lambda t: t["prior"].mean(1),
    "the prior's average needs draws zeta_k of the *prior's* mixing variable (prior.sample_psi(K)), not q's draws "
    "psi_k": lambda t: torch.logsumexp(t["prior_at_psi"], 1) - math.log(t["K"]),
    "the prior's average uses q's conditional: evaluate the prior's own conditional, "
    "prior.log_conditional(z, zeta_k)": lambda t: torch.logsumexp(t["q_at_zeta"], 1) - math.log(t["K"]),
    "the prior's term enters with a plus sign: the bound is E[log p(x | z) + log p~(z) - log q~(z)]": lambda t: (
        -(torch.logsumexp(t["prior"], 1) - math.log(t["K"]))
    ),
    "the prior's term log p~(z) is missing: the bound is E[log p(x | z) + log p~(z) - log q~(z)]": lambda t: (
        0 * t["ll"]
    ),
}
_DSIVI_Q_SLIPS = {
    "psi_0, the draw that generated z, is missing from q's average: without it the estimate overshoots (it can exceed "
    "log p(x)). Average q(z | psi_k) over psi_0 and the K extra draws, as in 6.2": lambda t: (
        torch.logsumexp(t["q"], 1) - math.log(t["K"])
    ),
    "q's first term must use psi_0, the draw that generated z (the second output of the same q.rsample call), not a "
    "fresh draw of psi": lambda t: torch.logsumexp(torch.cat([t["q_fresh"], t["q"]], 1), 1) - math.log(t["K"] + 1),
    _COUNTS: lambda t: torch.logsumexp(torch.cat([t["q_own"], t["q"]], 1), 1) - math.log(t["K"]),
    "q's average needs its 1/(K + 1): subtract log(K + 1) after the logsumexp": lambda t: torch.logsumexp(
        torch.cat([t["q_own"], t["q"]], 1), 1
    ),
    "q's term averages log densities; average the densities q(z | psi_k) themselves, in log space: logsumexp(...) - "
    "log(K + 1)": lambda t: torch.cat([t["q_own"], t["q"]], 1).mean(1),
    "q's K extra draws are missing: with psi_0 alone the estimate does not improve as K grows; average q(z | psi_k) "
    "over psi_0 and the K extra draws": lambda t: t["q_own"][:, 0],
    "q's term enters with a minus sign: the bound is E[log p(x | z) + log p~(z) - log q~(z)]": lambda t: (
        -(torch.logsumexp(torch.cat([t["q_own"], t["q"]], 1), 1) - math.log(t["K"] + 1))
    ),
    "q's term log q~(z) is missing: the bound is E[log p(x | z) + log p~(z) - log q~(z)]": lambda t: 0 * t["ll"],
}
_DSIVI_LL_SLIPS = {
    "log_likelihood(z), the first term, is missing": lambda t: 0 * t["ll"],
    "log_likelihood(z) enters with a plus sign: the bound is E[log p(x | z) + log p~(z) - log q~(z)]": lambda t: (
        -t["ll"]
    ),
}
_DSIVI_MEAN_SLIPS = {
    "average over the S draws of z (a mean), not their sum": lambda v: v.sum(),
    "the whole estimate has the wrong sign: the bound is E[log p(x | z) + log p~(z) - log q~(z)], which a fit "
    "maximises": lambda v: -v.mean(),
}


def _dsivi_tables(prior, q, S, K):
    """The two-point stand-ins' draws and every log density a right or wrong answer can form from them."""
    z, psi0 = q.rsample(S)
    zeta, psi, fresh = prior.sample_psi(K), q.sample_psi(K), q.sample_psi(S)
    return {
        "K": K,
        "ll": _log_likelihood(z),
        "prior": prior.log_conditional(z.unsqueeze(1), zeta.unsqueeze(0)),  # (S, K)
        "prior_at_own": prior.log_conditional(z, psi0).unsqueeze(1),  # (S, 1)
        "prior_at_psi": prior.log_conditional(z.unsqueeze(1), psi.unsqueeze(0)),
        "q_at_zeta": q.log_conditional(z.unsqueeze(1), zeta.unsqueeze(0)),
        "q": q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0)),  # (S, K)
        "q_own": q.log_conditional(z, psi0).unsqueeze(1),
        "q_fresh": q.log_conditional(z, fresh).unsqueeze(1),
    }


def _dsivi_named(outs, probes):
    """The fewest slips, one per part of the estimate, whose values match the answer's ``outs`` at every probe."""
    from itertools import product

    right = {
        "prior": lambda t: torch.logsumexp(t["prior"], 1) - math.log(t["K"]),
        "q": lambda t: torch.logsumexp(torch.cat([t["q_own"], t["q"]], 1), 1) - math.log(t["K"] + 1),
        "ll": lambda t: t["ll"],
        "mean": lambda v: v.mean(),
    }
    parts = [
        [(None, right["ll"]), *_DSIVI_LL_SLIPS.items()],
        [(None, right["prior"]), *_DSIVI_PRIOR_SLIPS.items()],
        [(None, right["q"]), *_DSIVI_Q_SLIPS.items()],
        [(None, right["mean"]), *_DSIVI_MEAN_SLIPS.items()],
    ]
    tables = [_dsivi_tables(*p) for p in probes]
    values = [[[(m, f(t)) for m, f in part] for part in parts[:3]] for t in tables]  # per probe, part, slip
    best = None
    for choice in product(*(range(len(part)) for part in parts)):
        named = [part[i][0] for part, i in zip(parts, choice, strict=True) if part[i][0] is not None]
        if best is not None and len(named) >= len(best):
            continue
        reduce = parts[3][choice[3]][1]
        if all(
            close(out, reduce(v[0][choice[0]][1] + v[1][choice[1]][1] - v[2][choice[2]][1]), 1e-6, 1e-9)
            for out, v in zip(outs, values, strict=True)
        ):
            best = named
    return best


@checker("7.4", "the doubly semi-implicit bound")
def check_dsivi_bound(dsivi_bound):
    with torch.no_grad():
        prior, q = _two_point_problem()
        # 1. the shape, then the value on the two-point stand-ins, exactly: cheap, and it names each slip by its part
        probes = ((prior, q, 5, 2), (prior, q, 7, 4))  # S odd, K even, neither the same twice
        outs = []
        for p, qq, S, K in probes:
            out = as_tensor_result(call_learner(dsivi_bound, _log_likelihood, p, qq, S, K))
            if out.dim() == 1 and out.shape[0] == S:
                fail("returned one value per draw of z, shape (S,); return their average over the S draws (0-d)")
            expect_shape(out, (), " (the bound is one number: a 0-d tensor)")
            expect_finite(out)
            outs.append(out)
        references = [reference_dsivi_bound(_log_likelihood, *probe) for probe in probes]
        if not all(close(o, r, 1e-6, 1e-9) for o, r in zip(outs, references, strict=True)):
            named = _dsivi_named(outs, probes)
            if named:
                order = ("First", "Second", "Third", "Fourth")[: len(named)]
                fail(named[0] if len(named) == 1 else " ".join(f"{o}, {m}." for o, m in zip(order, named, strict=True)))
            fail(
                f"on a family whose mixing variable takes two values (K = {probes[0][3]}, S = {probes[0][2]}), "
                f"the estimate is {fmt(outs[0])} where the bound's is {fmt(references[0])}: no single slip we know "
                "gives that; compare each of its three terms with the bound above"
            )
        # 2. in law, on the lesson's example with a narrow q: catches extra draws that are not independent of z
        #    (the draws psi_0 of the same call reused as the K extras), which the fixed draws above cannot show
        S = K = 16
        learner = _mean_se(lambda: call_learner(dsivi_bound, _log_likelihood, _PRIOR, _NARROW_POSTERIOR, S, K), 30)
        want = _mean_se(lambda: reference_dsivi_bound(_log_likelihood, _PRIOR, _NARROW_POSTERIOR, S, K), 100)
        if abs(learner[0] - want[0]) > 4 * math.hypot(learner[1], want[1]) + 1e-3:
            reused = _mean_se(lambda: _dsivi_reused(S, K), 100)
            if abs(learner[0] - reused[0]) <= 4 * math.hypot(learner[1], reused[1]) + 1e-3:
                fail(
                    "the extra draws psi_k must be fresh, independent of z (q.sample_psi(K)): reusing the draws "
                    "psi_0 that generated the z's puts each z's own draw in its average twice"
                )
            fail(
                f"right on fixed draws, but at S = K = {S} the average of 30 calls is {fmt(learner[0])} (s.e. "
                f"{learner[1]:.2g}) where the bound's expectation is {fmt(want[0])} (s.e. {want[1]:.2g}): draw zeta_k "
                "and psi_k fresh, independent of z and of each other"
            )
        # 3. log space: a sharp prior conditional in 100 dimensions makes every p(z | zeta_k) underflow to 0
        sharp_prior = SemiImplicitGaussian.linear(torch.zeros(100, dtype=torch.float32), tau=1.0, sigma=1e-2)
        sharp_q = SemiImplicitGaussian.linear(torch.zeros(100, dtype=torch.float32), tau=1.0, sigma=1e-2)
        out = as_tensor_result(call_learner(dsivi_bound, lambda z: -0.5 * (z**2).sum(-1), sharp_prior, sharp_q, 8, 5))
        if not torch.isfinite(out).all():
            fail(
                f"the result is {fmt(out)} for sharp 100-dimensional conditionals: exp(log p) under- or overflows. "
                "Average both sides in log space, with torch.logsumexp"
            )
    return (
        "the prior's plain average of K terms and q's average with psi_0, K + 1 terms, in log space; "
        "unbiased for the bound with fresh draws."
    )


# Lesson 07's example, prior z ~ N(0, 0.89 I) written semi-implicitly, x | z ~ N(z, I), and q the exact posterior,
# semi-implicit with a narrow conditional, so that each z's own psi_0 dominates its average.
_PRIOR = SemiImplicitGaussian.linear(torch.zeros(2, dtype=_F64), tau=0.4, sigma=math.sqrt(0.89 - 0.4**2))
_POST_VAR = 0.89 / 1.89
_NARROW_POSTERIOR = SemiImplicitGaussian.linear(0.89 / 1.89 * _X_OBS, tau=math.sqrt(_POST_VAR - 0.15**2), sigma=0.15)


def _mean_se(estimate, reps):
    values = torch.stack([torch.as_tensor(estimate(), dtype=_F64).reshape(()) for _ in range(reps)])
    return float(values.mean()), float(values.std()) / math.sqrt(reps)


def _dsivi_reused(S, K):  # the slip: the K "extra" draws are the psi_0 that generated the first K draws of z
    z, psi0 = _NARROW_POSTERIOR.rsample(S)
    log_prior = torch.logsumexp(_PRIOR.log_conditional(z.unsqueeze(1), _PRIOR.sample_psi(K).unsqueeze(0)), 1)
    own = _NARROW_POSTERIOR.log_conditional(z, psi0).unsqueeze(1)
    others = _NARROW_POSTERIOR.log_conditional(z.unsqueeze(1), psi0[:K].unsqueeze(0))
    log_q = torch.logsumexp(torch.cat([own, others], 1), 1) - math.log(K + 1)
    return (_log_likelihood(z) + log_prior - math.log(K) - log_q).mean()


# ---------------------------------------------------------------- 7.6


@checker("7.6", "the kernel Stein discrepancy as a U-statistic")
def check_ksd_u_statistic(ksd_u_statistic):
    torch.manual_seed(0)
    S = 6
    z, diff, h = torch.randn(S, 2, dtype=_F64), torch.randn(S, 2, dtype=_F64), 0.7
    out = as_tensor_result(call_learner(ksd_u_statistic, z, diff, h))
    if out.shape == (S, S):
        fail("returned the (S, S) matrix of terms; return their average over the pairs i != j, a 0-d tensor")
    expect_shape(out, (), " (one number: a 0-d tensor)")
    expect_finite(out)
    gram = rbf_kernel(z, h) * (diff @ diff.T)
    off = gram.sum() - gram.diagonal().sum()
    sq = torch.cdist(z, z) ** 2
    diagnose(
        out,
        reference_ksd(z, diff, h),
        {
            "the diagonal i = j is included: there the conditional score's noise is squared instead of averaged "
            "away, which biases the estimate upwards; sum over i != j only": gram.mean(),
            "the diagonal is included (divide by S(S - 1) the sum over i != j only): its terms are biased": gram.sum()
            / (S * (S - 1)),
            "there are S(S - 1) pairs i != j: divide by S(S - 1), not S^2": off / S**2,
            "the kernel is exp(-|z_i - z_j|^2 / (2 h^2)): the factor 2 is missing": (
                (torch.exp(-sq / h**2) * (diff @ diff.T)).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "the kernel divides the squared distance by 2 h^2 (h is a length); you divided by 2 h": (
                (torch.exp(-sq / (2 * h)) * (diff @ diff.T)).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "the kernel uses the squared distance |z_i - z_j|^2, not the distance itself": (
                (torch.exp(-sq.sqrt() / (2 * h**2)) * (diff @ diff.T)).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "the kernel weights are missing: the terms are k(z_i, z_j) d_i . d_j": (
                (diff @ diff.T).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "sign error: KSD^2 is a sum of k(z_i, z_j) d_i . d_j": -off / (S * (S - 1)),
            (
                "that sums each pair once (i < j) but divides by S(S - 1), the number of ordered pairs: "
                "sum over all i != j (both (i, j) and (j, i)), or divide the sum over i < j by S(S - 1) / 2"
            ): off / 2 / (S * (S - 1)),
        },
    )
    z_grad, diff_grad = z.clone().requires_grad_(True), diff.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(ksd_u_statistic, z_grad, diff_grad, h))
    if not out.requires_grad:
        fail("no gradient flows to z: build the kernel with torch operations (no .detach(), .item() or numpy)")
    g, g_diff = learner_grad(out, (z_grad, diff_grad))
    if g is None:
        fail("no gradient flows to z: build the kernel from z with torch operations (no .detach())")
    diff_r = diff.clone().requires_grad_(True)
    (r_diff,) = torch.autograd.grad(reference_ksd(z, diff_r, h), diff_r)
    if g_diff is None or not close(g_diff, r_diff, 1e-5, 1e-8):
        fail(
            "no (or a wrong) gradient flows to diff: training needs it, since diff holds the scores of the draws; "
            "do not detach it"
        )
    if not torch.isfinite(g).all():
        fail(
            "the gradient with respect to z is not finite; compute the squared distances with torch operations, "
            "e.g. ((z[:, None] - z[None]) ** 2).sum(-1)"
        )
    return "an unbiased U-statistic over the pairs i != j, differentiable in z."


# ---------------------------------------------------------------- 7.7


class _FixedFamily(torch.nn.Module):
    """A stand-in for a semi-implicit family whose draws are fixed functions of its parameters: every call of
    ``rsample(S)`` returns the same ``(z, psi)``, differentiable in ``shift`` and ``log_sigma``, so that a loss
    built from it can be compared with the reference's value and gradient exactly. ``sample_psi`` returns
    *other* draws, as a family's fresh draws would be. It has the whole interface of
    :class:`helpers.semi_implicit.SemiImplicitGaussian` that lessons 06 to 08 teach (``sigma``, ``log_sigma``,
    ``scale_tril``, ``full_covariance``, ``L``, ``noise_dim``, ``sample_psi``, ``rsample``, ``log_conditional``)."""

    full_covariance = False
    L = noise_dim = 2

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.register_buffer("psi_base", torch.randn(6, 2, generator=g, dtype=_F64))
        self.register_buffer("eps", torch.randn(6, 2, generator=g, dtype=_F64))
        self.register_buffer("other_psi", torch.randn(6, 2, generator=g, dtype=_F64))
        self.shift = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=_F64))
        self.log_sigma = torch.nn.Parameter(torch.tensor([-0.4, 0.1], dtype=_F64))

    @property
    def sigma(self):
        return self.log_sigma.exp()

    def rsample(self, S):
        psi = self.psi_base[:S] + self.shift
        return psi + self.sigma * self.eps[:S], psi

    def sample_psi(self, n):
        return self.other_psi[:n] + self.shift

    def scale_tril(self):
        return torch.diag_embed(self.sigma)

    def log_conditional(self, z, psi):
        return log_normal_diag(z, psi, self.log_sigma)


def _banana_like(z):  # a non-Gaussian target, so that its score depends on z non-linearly
    return -0.5 * z[:, 0] ** 2 / 4 - 0.5 * (z[:, 1] - z[:, 0] ** 2 / 4) ** 2


def _ksivi_variant(kind, q, S, h):
    z, psi = q.rsample(S)
    if kind == "no create_graph":
        (score_p,) = torch.autograd.grad(_banana_like(z).sum(), z, retain_graph=True)
    else:
        (score_p,) = torch.autograd.grad(_banana_like(z).sum(), z, create_graph=True)
    if kind == "mean score":
        score_p = score_p / S
    if kind == "no target score":
        score_p = torch.zeros_like(score_p)
    score_q = {
        "sigma, not sigma^2": -(z - psi) / q.sigma,
        "conditional score sign": (z - psi) / q.sigma**2,
        "fresh psi": -(z - q.sample_psi(S)) / q.sigma**2,
        "no conditional score": torch.zeros_like(z),
    }.get(kind, -(z - psi) / q.sigma**2)
    return (-1 if kind == "loss sign" else 1) * reference_ksd(z, score_p - score_q, h)


_KSIVI_MISTAKES = {
    "no create_graph": "the value is right but its gradient is not: the target's score depends on z, which depends on "
    "the family's parameters; take it with torch.autograd.grad(..., create_graph=True) so that it stays in the graph",
    "sigma, not sigma^2": "the conditional score is -(z - psi) / sigma^2: the gradient of log N(z; psi, sigma^2) "
    "divides by the variance, not the standard deviation",
    "conditional score sign": "a sign is off: d_i = s_p(z_i) - grad_z log q(z_i | psi_i) = s_p(z_i) + (z_i - psi_i) "
    "/ sigma^2 (the conditional score is -(z - psi) / sigma^2, and d_i is a difference of scores, not a sum)",
    "fresh psi": "the conditional score needs psi_i, the draw that generated z_i (the second output of "
    "q.rsample(S)), not a fresh draw of psi",
    "no target score": "the target's score s_p(z_i) is missing from d_i: KSD compares two scores, d_i = s_p(z_i) - "
    "grad_z log q(z_i | psi_i); take s_p with torch.autograd.grad(log_target(z).sum(), z, create_graph=True)",
    "no conditional score": "the conditional score is missing from d_i: d_i = s_p(z_i) - grad_z log q(z_i | psi_i), "
    "with grad_z log q(z | psi) = -(z - psi) / sigma^2 standing in for the intractable s_q(z_i)",
    "loss sign": "the loss has the wrong sign: KSD^2 is zero at q = p and positive elsewhere, and training minimises "
    "it; return the U-statistic itself, not its negative",
    "mean score": "the target's score is divided by S: take the gradient of log_target(z).sum(), not of its mean "
    "(each z_i's score is the gradient of its own log density)",
}


@checker("7.7", "the KSIVI loss with conditional scores")
def check_ksivi_loss(ksivi_loss):
    q, S, h = _FixedFamily(), 6, 0.9
    calls = []

    def spy_ksd(z, diff, bandwidth):  # the statistic the learner must hand the pieces to
        calls.append(float(bandwidth))
        return reference_ksd(z, diff, bandwidth)

    out = as_tensor_result(call_learner(ksivi_loss, _banana_like, q, S, h, spy_ksd))
    expect_shape(out, (), " (the loss is one number: a 0-d tensor)")
    expect_finite(out)
    if not calls:
        fail("the U-statistic you are given (the argument ksd) was never called: hand it z, the d_i and the bandwidth")
    if abs(calls[-1] - h) > 1e-12:
        fail(
            f"the bandwidth passed was {h}, but the statistic received {calls[-1]:.6g}: use the bandwidth you are given"
        )
    reference = reference_ksivi_loss(_banana_like, q, S, bandwidth=h)
    variants = {kind: _ksivi_variant(kind, q, S, h) for kind in _KSIVI_MISTAKES}
    if not close(out, reference, 1e-6, 1e-9):
        for kind, message in _KSIVI_MISTAKES.items():
            if kind != "no create_graph" and close(out, variants[kind], 1e-6, 1e-9):
                fail(message)
        fail(f"does not match the reference: expected {fmt(reference)}, got {fmt(out)}")
    params = [q.shift, q.log_sigma]
    if not out.requires_grad:
        fail("no gradient reaches the family's parameters: build the loss from q.rsample without .detach()")
    got = learner_grad(out, params)
    want = torch.autograd.grad(reference, params)
    if any(g is None for g in got) or not all(close(g, w, 1e-6, 1e-9) for g, w in zip(got, want, strict=True)):
        no_graph = torch.autograd.grad(variants["no create_graph"], params)
        if all(g is not None for g in got) and all(close(g, w, 1e-6, 1e-9) for g, w in zip(got, no_graph, strict=True)):
            fail(_KSIVI_MISTAKES["no create_graph"])
        fail(
            "the value is right but its gradient with respect to the family's parameters is not: keep z, psi, "
            "sigma and the target's score in the graph (no .detach(), create_graph=True for the score)"
        )
    # the default bandwidth: the median heuristic of the same draws
    calls.clear()
    call_learner(ksivi_loss, _banana_like, q, S, None, spy_ksd)
    z, _ = q.rsample(S)
    if not calls or abs(calls[-1] - float(median_bandwidth(z.detach()))) > 1e-9:
        fail("with bandwidth=None, use the median heuristic of the draws: median_bandwidth(z)")
    return "the U-statistic of KSD^2 with d_i = s_p(z_i) + (z_i - psi_i) / sigma^2, differentiable through the score."
