r"""Checkers whose reference is in :mod:`helpers.logistic_regression`: lesson 03's log joints.

3.4 (the log joint, batched over draws of w) and 3.5 (its mini-batch estimate) compare with
:class:`helpers.logistic_regression.BayesianLogisticRegression`, on a small problem whose N is not divisible by
the batch sizes, at the lesson's scale (the breast-cancer data near the MAP, float32), and where some points
are confidently misclassified.
"""

import math

import torch
from torch.distributions import Normal

from ..datasets import load_breast_cancer
from ..logistic_regression import BayesianLogisticRegression
from ._core import (
    Mistake,
    as_tensor_result,
    call_learner,
    checker,
    diagnose,
    expect_finite,
    expect_gradient,
    expect_shape,
    fail,
    fmt,
    learner_grad,
)

_F64 = torch.float64


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


_SIGNS = (
    ". Each term is log p(y_n | x_n, w) = y_n log s(a_n) + (1 - y_n) log(1 - s(a_n)), with log s(a) = -softplus(-a) "
    "and log(1 - s(a)) = -softplus(a), which combine to y_n a_n - softplus(a_n): the log of a probability, "
    "never above 0"
)


def _log_lik_sign_slips(logits, y):
    """The sign slips of a Bernoulli log-likelihood in logits, each summed over the data points: message -> value."""
    softplus, logsigmoid = torch.nn.functional.softplus, torch.nn.functional.logsigmoid
    a = logits
    return {
        "sign slip in the log-likelihood: softplus(a_n) is subtracted, not added (you wrote y_n a_n + softplus(a_n))": (
            y * a + softplus(a)
        ).sum(-1),
        "sign slip in the log-likelihood: the term in the label is +y_n a_n (you wrote -y_n a_n - softplus(a_n))": (
            -y * a - softplus(a)
        ).sum(-1),
        "sign slip in the log-likelihood: y_n a_n - softplus(-a_n) has the wrong sign inside the softplus "
        "(softplus(-a) = softplus(a) - a)": (y * a - softplus(-a)).sum(-1),
        "sign slip in the log-likelihood: log(1 - s(a)) is log s(-a), the log-sigmoid of -a; you used log s(a) "
        "for both labels": logsigmoid(a).sum(-1),
        "sign slip in the log-likelihood: the term of y_n = 0 is added, not subtracted; you wrote y_n log s(a_n) "
        "- (1 - y_n) log(1 - s(a_n))": (y * logsigmoid(a) - (1 - y) * logsigmoid(-a)).sum(-1),
        "sign slip in the log-likelihood: log(1 - s(a)) is not -log s(a) (that is log(1 / s(a))); it is "
        "log s(-a) = -softplus(a)": (y * logsigmoid(a) - (1 - y) * logsigmoid(a)).sum(-1),
    }


def _diagnose_with_signs(out, reference, mistakes, log_prior, quadratic, context=""):
    """:func:`diagnose`, and where no mistake matches, a positive log-likelihood named as a sign slip: what is left
    of the answer without the log prior must be a sum of log probabilities, at most 0. (Only where it is positive
    even without the prior's constant, so that an answer whose prior lacks it is not told about signs.)"""
    try:
        diagnose(out, reference, mistakes, context=context, atol=1e-6)  # Normal(0.0, s) takes log s in float32
    except Mistake as exc:
        if not str(exc).startswith("does not match the reference") or not (out - quadratic > 1e-9).any():
            raise
        fail(
            f"a sign is off: your result minus the log prior is {fmt((out - log_prior).max())} for one draw of w, a "
            "positive log-likelihood" + _SIGNS + context
        )


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
    softplus = torch.nn.functional.softplus
    log_lik = y * logits - softplus(logits)
    log_prior = model.log_prior(w)
    quadratic = -0.5 * (w**2).sum(-1) / prior_std**2
    constant = log_prior - quadratic  # -D (log prior_std + log(2 pi) / 2)
    _diagnose_with_signs(
        out.detach(),
        ref,
        {
            "missing the log prior log N(w; 0, prior_std^2 I)": log_lik.sum(-1),
            "missing the log-likelihood: sum_n y_n log s(x_n.w) + (1 - y_n) log(1 - s(x_n.w))": log_prior,
            "the log prior misses its normalising constant -D (log prior_std + log(2 pi) / 2): it does not change "
            "the gradient, but the ELBO must be a bound on log p(y), so keep it": log_lik.sum(-1) + quadratic,
            (
                "prior_std is a standard deviation: the prior is N(0, prior_std^2 I), so divide w^2 by prior_std^2"
            ): log_lik.sum(-1) + Normal(0.0, math.sqrt(prior_std)).log_prob(w).sum(-1),
            "prior_std is the standard deviation: Normal(0, prior_std), not Normal(0, prior_std**2)": log_lik.sum(-1)
            + Normal(0.0, prior_std**2).log_prob(w).sum(-1),
            "labels swapped: y = 1 goes with log s(x.w), y = 0 with log(1 - s(x.w))": (
                (1 - y) * logits - softplus(logits)
            ).sum(-1)
            + log_prior,
            "averaged the log-likelihood over the data points; the joint sums it": log_lik.mean(-1) + log_prior,
            "sign error in the log-likelihood: log s(a) = -softplus(-a) is negative": -log_lik.sum(-1) + log_prior,
            **{message + _SIGNS: value + log_prior for message, value in _log_lik_sign_slips(logits, y).items()},
            "sign slip in the log prior: log N(w_d; 0, prior_std^2) = -w_d^2 / (2 prior_std^2) - log prior_std "
            "- log(2 pi) / 2, whose quadratic term is negative (the density falls away from 0); you added "
            "w^2 / (2 prior_std^2)": log_lik.sum(-1) - quadratic + constant,
            "sign slip in the log prior's normalising constant: it is -D (log prior_std + log(2 pi) / 2), "
            "the log of 1 / (prior_std sqrt(2 pi)) for each of the D weights; you added it with a plus sign": (
                log_lik.sum(-1) + quadratic - constant
            ),
            "the log prior is subtracted: the log joint is log p(w) + log p(y | X, w), a sum, since "
            "p(y, w | X) = p(w) p(y | X, w)": log_lik.sum(-1) - log_prior,
        },
        log_prior,
        quadratic,
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


def _wrong_rows(model, w, batch, log_prior):
    """The estimates from the first B rows of X or y instead of the batch's rows: message -> value."""
    N, B = model.X.shape[0], batch.shape[0]
    first = torch.arange(B)
    message = (
        "the batch's rows are X[batch] and y[batch], the data points whose indices batch holds; {} the first B "
        "rows, which are the same data points at every step, so the estimate is not unbiased for the full log joint "
        "(each data point must have the chance B / N of being in the batch)"
    )
    values = {}
    for rows_X, rows_y, what in (
        (first, first, "you took"),
        (first, batch, "your X holds"),
        (batch, first, "your y holds"),
    ):
        a = w @ model.X[rows_X].T
        log_lik = (model.y[rows_y] * a - torch.nn.functional.softplus(a)).sum(-1)
        values[message.format(what)] = log_prior + N / B * log_lik
    return values


def _call_on_batch(subsampled_log_joint, w, X, y, batch, prior_std):
    """The learner's call, with a broadcasting error between the batch's B entries and all N named."""
    try:
        return call_learner(subsampled_log_joint, w, X, y, batch, prior_std)
    except Mistake as exc:
        text = str(exc)
        N, B = X.shape[0], batch.shape[0]
        if "must match the size of tensor" in text and (f"({N})" in text and f"({B})" in text):
            fail(
                f"{text}. With a batch of B = {B} of the N = {N} data points, the batch's logits have B entries "
                "per draw of w but something has all N: take both the rows of X and the labels y at the indices in "
                "batch"
            )
        raise


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
        out = as_tensor_result(_call_on_batch(subsampled_log_joint, w, X, y, batch, prior_std))
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
                **_wrong_rows(model, w, batch, log_prior),
                **{
                    f"the factor's N is {size}, {which}; N is the number of data points, the rows of X (here "
                    f"N = {N}): take it from X's first axis (or the length of y)": log_prior + log_lik_batch * size / N
                    for size, which in (
                        (X.shape[1], f"X's second axis, the D = {X.shape[1]} features"),
                        (w.shape[0], f"w's first axis, the S = {w.shape[0]} draws"),
                    )
                },
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
