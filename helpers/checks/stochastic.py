r"""Checkers for the stochastic-VI exercises (lesson 03).

3.1 and 3.2 are surrogate objectives: the checker differentiates the
learner's scalar with autograd and compares the *gradient* with that of the
reference estimators of :mod:`helpers.gradient_estimators`, on fixed draws
(the plausible mistakes are the reference with one piece changed). Correct
estimators that differ draw by draw (the exact entropy, sticking the landing,
a baseline) are accepted when they are unbiased: the average over many draws
must match the exact ELBO gradient of a Gaussian target within Monte Carlo error.
3.3, the leave-one-out baseline, is compared on fixed draws with
:func:`helpers.gradient_estimators.score_function_loo_surrogate`. 3.4 to 3.6 compare
with :class:`helpers.logistic_regression.BayesianLogisticRegression` and
:class:`helpers.linear_gaussian.LinearGaussianModel`.
"""

import math

import torch
from torch.distributions import MultivariateNormal, Normal

from .. import gradient_estimators as estimators  # the reference answers of 3.1 and 3.2
from ..datasets import load_breast_cancer
from ..estimators import standard_error
from ..gaussian import LOG_2PI, log_normal_diag, normal_entropy
from ..linear_gaussian import LinearGaussianModel
from ..logistic_regression import BayesianLogisticRegression
from ._core import (
    as_tensor_result,
    as_tensor_tuple,
    call_learner,
    checker,
    diagnose,
    diagnose_mean,
    expect_finite,
    expect_gradient,
    expect_shape,
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


# ---------------------------------------------------------------- 3.4 Bayesian logistic regression


def _logistic_problem():
    X = torch.tensor(
        [
            [1.0, 0.3, -1.2],
            [1.0, -0.7, 0.4],
            [1.0, 1.5, 0.9],
            [1.0, -0.2, -0.3],
            [1.0, 0.8, -1.7],
            [1.0, -1.1, 1.3],
            [1.0, 0.1, 0.2],
        ],
        dtype=_F64,
    )
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0], dtype=_F64)
    w = torch.tensor([[0.2, -0.5, 1.0], [-1.0, 0.7, 0.3], [0.0, 0.0, 0.0], [2.0, 1.5, -0.8]], dtype=_F64)
    return X, y, w, 1.5  # prior_std = 1.5, so std and variance differ


@checker("3.4", "log joint of Bayesian logistic regression")
def check_logistic_log_joint(log_joint):
    X, y, w, prior_std = _logistic_problem()
    model = BayesianLogisticRegression(X, y, prior_std)
    w_grad = w.clone().requires_grad_(True)  # the lesson's fits differentiate through the log joint
    out = as_tensor_result(call_learner(log_joint, w_grad, X, y, prior_std))
    S, D = w.shape
    if out.shape == (S, X.shape[0]):
        fail(
            f"returned shape {tuple(out.shape)}, one value per draw and data point: sum the log-likelihood "
            "over the data points"
        )
    expect_shape(out, (S,), " (one log joint per row of w)")
    expect_finite(out)
    ref = model.log_joint(w)
    logits = w @ X.T
    log_lik = y * logits - torch.nn.functional.softplus(logits)
    log_prior = model.log_prior(w)
    diagnose(
        out.detach(),
        ref,
        {
            "missing the log prior log N(w; 0, prior_std^2 I)": log_lik.sum(-1),
            "missing the log-likelihood: sum_n y_n log s(x_n.w) + (1 - y_n) log(1 - s(x_n.w))": log_prior,
            "the log prior misses its normalising constant -D (log prior_std + log(2 pi) / 2): it does not change "
            "the gradient, but the ELBO must be a bound on log p(y), so keep it": log_lik.sum(-1)
            - 0.5 * (w**2).sum(-1) / prior_std**2,
            (
                "prior_std is a standard deviation: the prior is N(0, prior_std^2 I), so divide w^2 by prior_std^2"
            ): log_lik.sum(-1) + Normal(0.0, math.sqrt(prior_std)).log_prob(w).sum(-1),
            "prior_std is the standard deviation: Normal(0, prior_std), not Normal(0, prior_std**2)": log_lik.sum(-1)
            + Normal(0.0, prior_std**2).log_prob(w).sum(-1),
            "labels swapped: y = 1 goes with log s(x.w), y = 0 with log(1 - s(x.w))": (
                (1 - y) * logits - torch.nn.functional.softplus(logits)
            ).sum(-1)
            + log_prior,
            "averaged the log-likelihood over the data points; the joint sums it": log_lik.mean(-1) + log_prior,
            "sign error in the log-likelihood: log s(a) = -softplus(-a) is negative": -log_lik.sum(-1) + log_prior,
        },
        context=" (on 4 weight vectors, 7 data points)",
    )
    expect_gradient(
        out, (w_grad,), model.log_joint(w_grad), ("w",), context=" (the lesson's fits ascend this log joint in w)"
    )
    far = as_tensor_result(call_learner(log_joint, 400 * w, X, y, prior_std))
    expect_finite(
        far,
        " for large weights (logits in the hundreds): log(sigmoid(a)) underflows; use "
        "torch.nn.functional.logsigmoid(a), or y a - softplus(a)",
    )
    diagnose(
        far,
        model.log_joint(400 * w),
        {},
        context=" for large weights (logits in the hundreds): clamping "
        "probabilities changes the answer there; compute in log space with logsigmoid or softplus",
        rtol=1e-6,
    )
    return "matches the log joint, batched over draws of w, and stays finite for large logits."


# ---------------------------------------------------------------- 3.5 subsampled log joint


@checker("3.5", "the subsampled log joint")
def check_subsampled_log_joint(subsampled_log_joint):
    r"""Compare with :meth:`BayesianLogisticRegression.subsampled_log_joint` on two batch sizes, then test unbiasedness
    exactly: averaged over the batches of a partition of the data, the estimates and their gradients in ``w`` must
    equal the full log joint and its gradient (each index is in exactly one batch)."""
    X, y, w, prior_std = _logistic_problem()
    X, y = torch.cat([X, -X.flip(0)[:5]]), torch.cat([y, 1 - y.flip(0)[:5]])  # N = 12 data points
    model = BayesianLogisticRegression(X, y, prior_std)
    N = X.shape[0]
    for batch in (torch.tensor([3, 10, 0, 6, 9]), torch.tensor([7, 1, 11, 4, 2, 8, 5])):  # B = 5, 7: N / B not whole
        B = batch.shape[0]
        context = f" (a batch of B = {B} of N = {N} data points, 4 draws of w)"
        out = as_tensor_result(call_learner(subsampled_log_joint, w, X, y, batch, prior_std))
        expect_shape(out, (w.shape[0],), context + ", one value per row of w")
        expect_finite(out, context)
        ref = model.subsampled_log_joint(w, batch)
        log_prior = model.log_prior(w)
        log_lik_batch = ref - log_prior  # (N / B) sum over the batch
        diagnose(
            out,
            ref,
            {
                "ignores the batch: this is the full log joint; use only the rows X[batch], y[batch]": model.log_joint(
                    w
                ),
                "the batch's log-likelihood needs the factor N / B: a batch of B points holds, in expectation, "
                "B / N of the full sum": log_prior + log_lik_batch * B / N,
                "the factor is upside down: scale the batch's sum by N / B, not B / N": log_prior
                + log_lik_batch * (B / N) ** 2,
                "the log prior must not be rescaled: it is not a sum over data points, it appears once": log_prior
                * N
                / B
                + log_lik_batch,
                "the prior was divided by N / B; leave it as it is and scale only the log-likelihood": log_prior * B / N
                + log_lik_batch,
                "averaged the batch's log-likelihood without the factor N: (N / B) sum = N times the mean": (
                    log_prior + log_lik_batch / N
                ),
                "missing the log prior log N(w; 0, prior_std^2 I)": log_lik_batch,
                f"N // B is integer division ({N} // {B} = {N // B}, not {N / B:.4g}): the factor is the ratio "
                "N / B, written with /"
                + (" (int(N / B) and round(N / B) give the same here)" if round(N / B) == N // B else ""): log_prior
                + log_lik_batch * (N // B) * B / N,
                f"the factor N / B was rounded ({round(N / B)} instead of {N / B:.4g}): keep the ratio N / B as it "
                "is": log_prior + log_lik_batch * round(N / B) * B / N,
            },
            context=context,
        )
    _check_lesson_scale(subsampled_log_joint)
    # confidently misclassified points: with weights 400 times larger, some logits are in the hundreds on the wrong
    # side, where such a point costs |a| nats; a probability clamped to [eps, 1 - eps] charges -log(eps) instead
    far = 400 * w
    out = as_tensor_result(call_learner(subsampled_log_joint, far, X, y, batch, prior_std))
    context = f" for large weights (logits in the hundreds, a batch of B = {B}; some points confidently misclassified)"
    expect_finite(out, context + ": log(sigmoid(a)) underflows there; use softplus, y a - softplus(a), or logsigmoid")
    diagnose(
        out,
        model.subsampled_log_joint(far, batch),
        {},
        context=context + ": a misclassified point costs |a| nats, not the -log(eps) of a clamped probability; "
        "compute in log space with softplus or logsigmoid, never clamp",
        rtol=1e-6,
    )
    # unbiasedness, exactly: the mean over the batches of a partition is the full log joint, gradients included
    w_grad = w.clone().requires_grad_(True)
    partition = torch.randperm(N).reshape(3, 4)
    with torch.enable_grad():
        estimates = torch.stack(
            [as_tensor_result(call_learner(subsampled_log_joint, w_grad, X, y, b, prior_std)) for b in partition]
        )  # (3, S)
    if not estimates.requires_grad:
        fail(
            "no gradient reaches w: the training loop differentiates this estimate; compute it with torch "
            "operations on w (no .item(), float() or NumPy)"
        )
    (grad,) = learner_grad(estimates.mean(0).sum(), w_grad)
    (grad_ref,) = torch.autograd.grad(model.log_joint(w_grad).sum(), w_grad)
    diagnose(estimates.mean(0).detach(), model.log_joint(w), {}, context=" averaged over the 3 batches of a partition")
    diagnose(grad, grad_ref, {}, context=" (the gradient in w, averaged over the 3 batches of a partition)")
    return "matches N / B times the batch's log-likelihood plus the prior; averaged over a partition, it is exact."


def _check_lesson_scale(subsampled_log_joint):
    """Lesson 03 runs 3.5 on the breast-cancer data (N = 426, D = 31, float32) near the posterior, with batches of
    B = 32: at the MAP some logits exceed 50, where sigmoid(a) rounds to 1 in float32, so log(1 - sigmoid(a)) is
    log 0 and a log-likelihood written with log(sigmoid(.)) is -inf or nan (0 * -inf). Compared, value and
    gradient, with the reference in float64."""
    data = load_breast_cancer()
    X, y, prior_std = data.X_train, data.y_train, 1.0
    model = BayesianLogisticRegression(X, y, prior_std)
    w_map, cov = model.laplace(iters=10)  # Newton has converged to float32 rounding by then
    gen = torch.Generator().manual_seed(0)
    N = X.shape[0]
    w = torch.cat(
        [w_map.unsqueeze(0), w_map + torch.randn(3, w_map.shape[0], generator=gen) @ torch.linalg.cholesky(cov).T]
    )
    # a batch of B = 32 that holds the data points with the largest logits at the MAP (N / B = 13.3 is not whole)
    largest = (X @ w_map).abs().argsort(descending=True)[:4]
    rest = torch.randperm(N, generator=gen)
    rest = rest[~torch.isin(rest, largest)][:28]
    batch = torch.cat([largest, rest])[torch.randperm(32, generator=gen)]
    context = (
        " (at the lesson's scale: the breast-cancer data, N = 426, float32, w near the MAP where some logits "
        "exceed 50, a batch of B = 32)"
    )
    w_grad = w.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(subsampled_log_joint, w_grad, X, y, batch, prior_std))
    expect_shape(out, (w.shape[0],), context + ", one value per row of w")
    if not torch.isfinite(out).all():
        fail(
            f"the result has {'NaN' if torch.isnan(out).any() else 'inf'}{context}: sigmoid(a) rounds to 1 for "
            "large logits, so log(1 - sigmoid(a)) is log 0 (and 0 * log 0 is nan); use softplus: "
            "y a - softplus(a), or torch.nn.functional.logsigmoid(a) and logsigmoid(-a)"
        )
    model64 = BayesianLogisticRegression(X.double(), y.double(), prior_std)
    with torch.enable_grad():
        w64 = w.double().requires_grad_(True)
        ref = model64.subsampled_log_joint(w64, batch)
        (grad_ref,) = torch.autograd.grad(ref.sum(), w64)
    B = batch.shape[0]
    log_prior = model64.log_prior(w.double())
    diagnose(
        out.detach(),
        ref.detach(),
        {
            f"N // B is integer division ({N} // {B} = {N // B}, not {N / B:.4g}): the factor is the ratio N / B, "
            "written with /": log_prior + (ref.detach() - log_prior) * (N // B) * B / N,
        },
        context=context + "; clamping probabilities or log(sigmoid) changes the answer there: use softplus",
        rtol=1e-4,
        atol=1e-3,
    )
    if not out.requires_grad:
        fail(
            "no gradient reaches w: the training loop differentiates this estimate; compute it with torch "
            "operations on w (no .item(), float() or NumPy)"
        )
    (grad,) = learner_grad(out.sum(), w_grad)
    if grad is None or not torch.isfinite(grad).all():
        fail(
            f"the value is right but the gradient in w is not finite{context}: log(sigmoid(a)) sends a nan or inf "
            "gradient back where sigmoid(a) rounds to 0 or 1; use softplus or logsigmoid"
        )
    diagnose(grad, grad_ref, {}, context=" (the gradient in w" + context[1:], rtol=1e-3, atol=1e-2)


# ---------------------------------------------------------------- 3.6 exact PPCA posterior


@checker("3.6", "exact posterior of the linear-Gaussian model")
def check_ppca_posterior(posterior):
    W = torch.tensor([[1.0, 0.5], [-0.4, 1.2], [0.3, -0.8], [2.0, 0.1]], dtype=_F64)  # columns not orthogonal
    b = torch.tensor([0.5, -1.0, 0.2, 0.0], dtype=_F64)
    sigma = 0.7
    x = torch.tensor([[1.0, 0.2, -0.5, 2.5], [-0.3, -2.0, 1.1, 0.4], [0.5, -1.0, 0.2, 0.0]], dtype=_F64)
    model = LinearGaussianModel(W, b, sigma)
    mean, cov = as_tensor_tuple(call_learner(posterior, x, W, b, sigma), ("mean", "cov"))
    N, L = x.shape[0], W.shape[1]
    if mean.shape == (L, N):
        fail(f"mean has shape {tuple(mean.shape)}; return one row per data point, shape ({N}, {L})")
    expect_shape(mean, (N, L), " (for mean: one row per data point)")
    expect_shape(cov, (L, L), " (for cov: one covariance, shared by all data points)")
    expect_finite(flat(mean, cov))
    ref_mean, ref_cov = model.posterior(x)
    eye = torch.eye(L, dtype=_F64)

    def with_precision(precision, centred=x - b, sigma_power=2):
        c = torch.linalg.inv(precision)
        return flat(centred @ W @ c / sigma**sigma_power, c)

    diagnose(
        flat(mean, cov),
        flat(ref_mean, ref_cov),
        {
            "missing the prior's identity: the posterior precision is I + W^T W / sigma^2 (without I it is "
            "least squares)": with_precision(W.T @ W / sigma**2),
            "sigma is a standard deviation: use sigma^2 in I + W^T W / sigma^2 and in the mean": with_precision(
                eye + W.T @ W / sigma, sigma_power=1
            ),
            "the mean must subtract the offset: Sigma W^T (x - b) / sigma^2": with_precision(
                eye + W.T @ W / sigma**2, x
            ),
            "the offset is subtracted: x - b, not x + b": with_precision(eye + W.T @ W / sigma**2, x + b),
            "returned the precision I + W^T W / sigma^2; return its inverse, the covariance": flat(
                ref_mean, eye + W.T @ W / sigma**2
            ),
            "the mean misses the factor Sigma: mean = Sigma W^T (x - b) / sigma^2": flat(
                (x - b) @ W / sigma**2, ref_cov
            ),
            "the mean misses the 1/sigma^2: mean = Sigma W^T (x - b) / sigma^2": flat(ref_mean * sigma**2, ref_cov),
        },
        labels=["mean"] * ref_mean.numel() + ["cov"] * ref_cov.numel(),
    )
    return "matches the exact posterior mean of every data point and the shared covariance."
