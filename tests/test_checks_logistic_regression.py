"""The checkers of helpers.checks.logistic_regression, lesson 03's 3.4 (the log joint of Bayesian logistic
regression) and 3.5 (its mini-batch estimate), accept correct answers written in different ways and name the
mistake in plausible wrong ones, at the lesson's scale too."""

import math

import pytest
import torch
import torch.nn.functional as F
from checker_assertions import accepts, rejects, run
from torch.distributions import Normal

from helpers.checks import (
    check_logistic_log_joint,
    check_subsampled_log_joint,
)
from helpers.logistic_regression import BayesianLogisticRegression

# ------------------------------------------------------------ exercise 3.4 (the log joint)


def blr_ref(w, X, y, prior_std):
    return BayesianLogisticRegression(X, y, prior_std).log_joint(w)


def blr_logsigmoid(w, X, y, prior_std):
    a = torch.einsum("sd,nd->sn", w, X)
    log_lik = y * F.logsigmoid(a) + (1 - y) * F.logsigmoid(-a)
    return log_lik.sum(-1) + Normal(0.0, prior_std).log_prob(w).sum(-1)


def blr_bce(w, X, y, prior_std):
    a = w @ X.T
    bce = F.binary_cross_entropy_with_logits(a, y.expand_as(a), reduction="none")
    D = w.shape[-1]
    log_prior = -0.5 * (w**2).sum(-1) / prior_std**2 - D * math.log(prior_std * math.sqrt(2 * math.pi))
    return -bce.sum(-1) + log_prior


@pytest.mark.parametrize("fn", [blr_ref, blr_logsigmoid, blr_bce])
def test_logistic_log_joint_accepts(fn, capsys):
    accepts(check_logistic_log_joint, fn, capsys)


def test_logistic_log_joint_names_mistakes(capsys):
    def lik(w, X, y):
        a = w @ X.T
        return y * a - F.softplus(a)

    def prior(w, s):
        return Normal(0.0, s).log_prob(w).sum(-1)

    rejects(check_logistic_log_joint, lambda w, X, y, s: lik(w, X, y).sum(-1), capsys, "missing the log prior")
    rejects(
        check_logistic_log_joint,
        lambda w, X, y, s: lik(w, X, y).sum(-1) - 0.5 * (w**2).sum(-1) / s**2,
        capsys,
        "normalising constant",
    )
    rejects(
        check_logistic_log_joint,
        lambda w, X, y, s: lik(w, X, y).sum(-1) + prior(w, math.sqrt(s)),
        capsys,
        "prior_std^2",
    )
    rejects(
        check_logistic_log_joint,
        lambda w, X, y, s: lik(w, X, y).sum(-1) + prior(w, s**2),
        capsys,
        "not Normal(0, prior_std**2)",
    )
    rejects(
        check_logistic_log_joint, lambda w, X, y, s: lik(w, X, 1 - y).sum(-1) + prior(w, s), capsys, "labels swapped"
    )
    rejects(check_logistic_log_joint, lambda w, X, y, s: lik(w, X, y).mean(-1) + prior(w, s), capsys, "averaged")
    rejects(
        check_logistic_log_joint,
        lambda w, X, y, s: lik(w, X, y) + prior(w, s).unsqueeze(-1),
        capsys,
        "sum the log-likelihood over the data points",
    )
    rejects(
        check_logistic_log_joint,
        lambda w, X, y, s: (
            (y * torch.log(torch.sigmoid(w @ X.T)) + (1 - y) * torch.log(1 - torch.sigmoid(w @ X.T))).sum(-1)
            + prior(w, s)
        ),
        capsys,
        "logsigmoid",
    )


def blr_numpy(w, X, y, prior_std):  # the right numbers, computed outside torch: no gradient for the fits
    import numpy as np

    a = w.detach().numpy() @ X.numpy().T
    log_lik = (y.numpy() * a - np.logaddexp(0.0, a)).sum(-1)
    log_prior = (-0.5 * w.detach().numpy() ** 2 / prior_std**2 - np.log(prior_std * np.sqrt(2 * np.pi))).sum(-1)
    return torch.from_numpy(log_lik + log_prior)


def blr_float_loop(w, X, y, prior_std):  # a float() loop re-wrapped in a tensor: right values, no gradient
    values = [float(blr_ref(w[s : s + 1], X, y, prior_std)[0]) for s in range(w.shape[0])]
    return torch.tensor(values, dtype=w.dtype)


def blr_in_place(w, X, y, prior_std):
    a = w @ X.T
    log_p = F.logsigmoid(a)  # logsigmoid's backward needs its input a ...
    a.mul_(1.0)  # ... which is then modified in place
    return (y * log_p + (1 - y) * (log_p - a)).sum(-1) + Normal(0.0, prior_std).log_prob(w).sum(-1)


@pytest.mark.parametrize(
    "fn, words",
    [
        (blr_numpy, "no gradient reaches w"),
        (blr_float_loop, "no gradient reaches w"),
        (lambda w, X, y, s: blr_ref(w.detach(), X, y, s), "no gradient reaches w"),
        (lambda w, X, y, s: blr_ref(w, X, y, s).detach() + 0 * w.sum(-1), "gradient with respect to w is not"),
        (blr_in_place, "changes a tensor in place"),
    ],
)
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning")  # the float() answer
def test_logistic_log_joint_needs_a_gradient(fn, words, capsys):
    rejects(check_logistic_log_joint, fn, capsys, words)


# ------------------------------------------------------------ exercise 3.5


def subsampled_reference(w, X, y, batch, prior_std):
    N, M = X.shape[0], batch.shape[0]
    a = w @ X[batch].T
    log_lik = (y[batch] * a - torch.nn.functional.softplus(a)).sum(-1)
    return Normal(0.0, prior_std).log_prob(w).sum(-1) + N / M * log_lik


def subsampled_with_mean(w, X, y, batch, prior_std):
    # N times the batch mean, the Bernoulli distribution, and a boolean mask instead of indices
    mask = torch.zeros(X.shape[0], dtype=torch.bool)
    mask[batch] = True
    log_lik = torch.distributions.Bernoulli(logits=w @ X[mask].T).log_prob(y[mask])  # (S, M)
    return Normal(0.0, prior_std).log_prob(w).sum(-1) + X.shape[0] * log_lik.mean(-1)


def subsampled_by_weights(w, X, y, batch, prior_std):
    # a weight N / M on each batch row, zero elsewhere, and logsigmoid
    weights = torch.zeros(X.shape[0], dtype=w.dtype).index_fill(0, batch, X.shape[0] / len(batch))
    a = w @ X.T
    log_lik = y * F.logsigmoid(a) + (1 - y) * F.logsigmoid(-a)
    log_prior = -0.5 * (w**2).sum(-1) / prior_std**2 - w.shape[-1] * (math.log(prior_std) + 0.5 * math.log(2 * math.pi))
    return (log_lik * weights).sum(-1) + log_prior


@pytest.mark.parametrize("fn", [subsampled_reference, subsampled_with_mean, subsampled_by_weights])
def test_subsampled_log_joint_accepts_correct_answers(fn, capsys):
    accepts(check_subsampled_log_joint, fn, capsys)


def _prior(w, prior_std):
    return Normal(0.0, prior_std).log_prob(w).sum(-1)


def _batch_sum(w, X, y, batch):
    a = w @ X[batch].T
    return (y[batch] * a - F.softplus(a)).sum(-1)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda w, X, y, b, p: _prior(w, p) + _batch_sum(w, X, y, torch.arange(X.shape[0])), "ignores the batch"),
        (lambda w, X, y, b, p: _prior(w, p) + _batch_sum(w, X, y, b), "needs the factor N / B"),
        (lambda w, X, y, b, p: _prior(w, p) + len(b) / X.shape[0] * _batch_sum(w, X, y, b), "upside down"),
        (
            lambda w, X, y, b, p: X.shape[0] / len(b) * (_prior(w, p) + _batch_sum(w, X, y, b)),
            "must not be rescaled",
        ),
        (
            lambda w, X, y, b, p: len(b) / X.shape[0] * _prior(w, p) + X.shape[0] / len(b) * _batch_sum(w, X, y, b),
            "the prior was divided",
        ),
        (lambda w, X, y, b, p: _prior(w, p) + _batch_sum(w, X, y, b) / len(b), "without the factor N"),
        (lambda w, X, y, b, p: X.shape[0] / len(b) * _batch_sum(w, X, y, b), "missing the log prior"),
        (
            lambda w, X, y, b, p: torch.tensor(subsampled_reference(w, X, y, b, p).tolist(), dtype=w.dtype),
            "no gradient reaches w",
        ),
        (lambda w, X, y, b, p: subsampled_reference(w, X, y, b, p).sum(), "wrong shape"),
    ],
)
def test_subsampled_log_joint_names_mistakes(fn, words, capsys):
    rejects(check_subsampled_log_joint, fn, capsys, words)


def test_subsampled_log_joint_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(w, X, y, batch, prior_std):
        p = torch.sigmoid(w @ X[batch].T)  # sigmoid's backward needs its output ...
        p.mul_(1.0)  # ... which is then modified in place
        return subsampled_reference(w, X, y, batch, prior_std) + 0 * p.sum(-1)

    rejects(check_subsampled_log_joint, in_place, capsys, "changes a tensor in place", "x = x + ...")


def test_subsampled_log_joint_names_a_mutated_input(capsys):
    def mutates(w, X, y, batch, prior_std):
        y[batch] = y[batch]  # harmless ...
        X.mul_(1.0)  # ... and so is this, in value; but X[batch] *= is the learner's slip
        X[batch] *= 1.0 + 1e-9
        return subsampled_reference(w, X, y, batch, prior_std)

    rejects(check_subsampled_log_joint, mutates, capsys, "changed its argument `X` in place", "`X.clone()`")


# ------------------------------------------------------------ 3.5 at the lesson's scale, and N not divisible by B


def _scaled(factor_of):
    def fn(w, X, y, b, p):
        return _prior(w, p) + factor_of(X.shape[0], len(b)) * _batch_sum(w, X, y, b)

    return fn


def _subsampled_log_sigmoid(w, X, y, batch, prior_std):
    # log(sigmoid(.)) and log(1 - sigmoid(.)): fine on small logits, log 0 at the MAP of the breast-cancer data
    p = torch.sigmoid(w @ X[batch].T)
    log_lik = (y[batch] * torch.log(p) + (1 - y[batch]) * torch.log(1 - p)).sum(-1)
    return _prior(w, prior_std) + X.shape[0] / len(batch) * log_lik


def _subsampled_one_minus(w, X, y, batch, prior_std):
    # log(sigmoid(a)) for y = 1 and log(1 - sigmoid(a)) for y = 0, selected with torch.where
    a = w @ X[batch].T
    log_lik = torch.where(y[batch] == 1, torch.log(torch.sigmoid(a)), torch.log(1 - torch.sigmoid(a))).sum(-1)
    return _prior(w, prior_std) + X.shape[0] / len(batch) * log_lik


def _subsampled_clamped(eps, added=False):
    # probabilities kept away from 0 and 1, by a clamp or by adding eps: finite, and wrong for a confident mistake
    def fn(w, X, y, batch, prior_std):
        p = torch.sigmoid(w @ X[batch].T)
        if added:
            log_p, log_1mp = torch.log(p + eps), torch.log(1 - p + eps)
        else:
            p = p.clamp(eps, 1 - eps)
            log_p, log_1mp = torch.log(p), torch.log(1 - p)
        log_lik = (y[batch] * log_p + (1 - y[batch]) * log_1mp).sum(-1)
        return _prior(w, prior_std) + X.shape[0] / len(batch) * log_lik

    return fn


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_subsampled_clamped(1e-7), "a misclassified point costs |a| nats"),
        (_subsampled_clamped(1e-12, added=True), "never clamp"),
        (_subsampled_clamped(1e-30, added=True), "logits in the hundreds"),
        (_scaled(lambda N, B: N // B), "N // B is integer division (12 // 5 = 2, not 2.4)"),
        (_scaled(lambda N, B: round(N / B)), "round(N / B) give the same"),
        (_scaled(lambda N, B: int(N / B)), "integer division"),
        (_subsampled_log_sigmoid, "use softplus"),
        (_subsampled_log_sigmoid, "at the lesson's scale"),
        (_subsampled_one_minus, "the gradient in w is not finite"),
    ],
)
def test_subsampled_log_joint_names_the_lesson_scale_slips(fn, words, capsys):
    rejects(check_subsampled_log_joint, fn, capsys, words)


def subsampled_float64(w, X, y, batch, prior_std):
    # computed in float64 and returned in the input's dtype
    out = subsampled_reference(w.double(), X.double(), y.double(), batch, prior_std)
    return out.to(w.dtype)


def subsampled_bce(w, X, y, batch, prior_std):
    a = w @ X[batch].T
    bce = F.binary_cross_entropy_with_logits(a, y[batch].expand_as(a), reduction="none").sum(-1)
    return _prior(w, prior_std) - X.shape[0] / batch.numel() * bce


@pytest.mark.parametrize("fn", [subsampled_float64, subsampled_bce])
def test_subsampled_log_joint_accepts_more_forms(fn, capsys):
    accepts(check_subsampled_log_joint, fn, capsys)


# ------------------------------------------------------------ 3.4's sign slips, 3.5's rows and axes


def _log_joint_from(log_lik_terms, log_prior=None):
    """A 3.4 answer from a formula for the per-point log-likelihood, with the right prior unless one is given."""

    def fn(w, X, y, prior_std):
        a = torch.einsum("sd,nd->sn", w, X)
        prior = Normal(0.0, prior_std).log_prob(w).sum(-1) if log_prior is None else log_prior(w, prior_std)
        return log_lik_terms(a, y).sum(-1) + prior

    return fn


def _gauss_parts(w, s):
    return -0.5 * (w**2).sum(-1) / s**2, -w.shape[-1] * (math.log(s) + 0.5 * math.log(2 * math.pi))


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_log_joint_from(lambda a, y: y * a + F.softplus(a)), ["softplus(a_n) is subtracted", "never above 0"]),
        (_log_joint_from(lambda a, y: -(y * a) - F.softplus(a)), ["the term in the label is +y_n a_n"]),
        (_log_joint_from(lambda a, y: y * a - F.softplus(-a)), ["wrong sign inside the softplus"]),
        (_log_joint_from(lambda a, y: y * F.logsigmoid(a) + (1 - y) * F.logsigmoid(a)), ["log s(-a)"]),
        (
            _log_joint_from(lambda a, y: y * F.logsigmoid(a) - (1 - y) * F.logsigmoid(-a)),
            ["the term of y_n = 0 is added"],
        ),
        (_log_joint_from(lambda a, y: y * F.logsigmoid(a) - (1 - y) * F.logsigmoid(a)), ["is not -log s(a)"]),
        (
            _log_joint_from(
                lambda a, y: y * a - F.softplus(a), lambda w, s: -_gauss_parts(w, s)[0] + _gauss_parts(w, s)[1]
            ),
            ["sign slip in the log prior", "quadratic term is negative"],
        ),
        (
            _log_joint_from(
                lambda a, y: y * a - F.softplus(a), lambda w, s: _gauss_parts(w, s)[0] - _gauss_parts(w, s)[1]
            ),
            ["normalising constant", "plus sign"],
        ),
        (
            _log_joint_from(lambda a, y: y * a - F.softplus(a), lambda w, s: -Normal(0.0, s).log_prob(w).sum(-1)),
            ["the log prior is subtracted"],
        ),
        # no single slip we name, but the log-likelihood comes out positive: a sign, said so
        (_log_joint_from(lambda a, y: 2 * y * a + F.softplus(a)), ["a sign is off", "positive log-likelihood"]),
    ],
)
def test_logistic_log_joint_names_sign_slips(fn, words, capsys):
    rejects(check_logistic_log_joint, fn, capsys, *words)


def test_logistic_log_joint_does_not_blame_signs_for_a_missing_constant(capsys):
    # the constant-less prior and a mean over the points: two slips, no sign among them, and no word of signs
    fn = _log_joint_from(lambda a, y: (y * a - F.softplus(a)) / a.shape[-1], lambda w, s: _gauss_parts(w, s)[0])
    result, out = run(check_logistic_log_joint, fn, capsys)
    assert not result and "sign" not in out, out


def _first_rows(index_X, index_y):
    """A 3.5 answer that takes rows of X and y by index_X(batch) and index_y(batch)."""

    def fn(w, X, y, batch, prior_std):
        rows_X, rows_y = index_X(batch), index_y(batch)
        a = w @ X[rows_X].T
        log_lik = (y[rows_y] * F.logsigmoid(a) + (1 - y[rows_y]) * F.logsigmoid(-a)).sum(-1)
        return _prior(w, prior_std) + X.shape[0] / batch.numel() * log_lik

    return fn


def _slice(batch):
    return slice(0, len(batch))


def _same(batch):
    return batch


def _n_from(n_of):
    def fn(w, X, y, batch, prior_std):
        return _prior(w, prior_std) + n_of(w, X) / len(batch) * _batch_sum(w, X, y, batch)

    return fn


def _labels_not_batched(w, X, y, batch, prior_std):
    a = w @ X[batch].T
    return _prior(w, prior_std) + X.shape[0] / len(batch) * (y * a - F.softplus(a)).sum(-1)


def _all_logits_batched_labels(w, X, y, batch, prior_std):
    a = w @ X.T
    return _prior(w, prior_std) + X.shape[0] / len(batch) * (y[batch] * a - F.softplus(a)).sum(-1)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_first_rows(_slice, _slice), ["X[batch] and y[batch]", "you took the first B rows", "not unbiased"]),
        (_first_rows(_slice, _same), ["your X holds the first B rows"]),
        (_first_rows(_same, _slice), ["your y holds the first B rows"]),
        (_n_from(lambda w, X: X.shape[1]), ["the factor's N is 3", "D = 3 features", "X's first axis"]),
        (_n_from(lambda w, X: X.size(-1)), ["the factor's N is 3"]),
        (_n_from(lambda w, X: len(w)), ["the factor's N is 4", "S = 4 draws"]),
        (_labels_not_batched, ["must match the size", "the labels y at the indices in batch"]),
        (_all_logits_batched_labels, ["must match the size", "both the rows of X and the labels y"]),
    ],
)
def test_subsampled_log_joint_names_wrong_rows_and_axes(fn, words, capsys):
    rejects(check_subsampled_log_joint, fn, capsys, *words)


def subsampled_gather(w, X, y, batch, prior_std):
    # the rows by index_select, the prior from MultivariateNormal, N as the length of y
    Xb, yb = X.index_select(0, batch), y.index_select(0, batch)
    a = (w.unsqueeze(-2) * Xb).sum(-1)
    prior = torch.distributions.MultivariateNormal(
        torch.zeros(w.shape[-1], dtype=w.dtype), prior_std**2 * torch.eye(w.shape[-1], dtype=w.dtype)
    )
    return prior.log_prob(w) - len(y) / len(batch) * F.binary_cross_entropy_with_logits(
        a, yb.expand_as(a), reduction="none"
    ).sum(-1)


def test_subsampled_log_joint_accepts_n_from_the_labels(capsys):
    accepts(check_subsampled_log_joint, subsampled_gather, capsys)
