"""The stochastic-VI checkers (lesson 03) accept correct answers written in
different ways, including estimators that differ draw by draw but are
unbiased, and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
import torch.nn.functional as F
from checker_assertions import accepts, rejects, run
from torch.distributions import Normal

from helpers import gradient_estimators as ref
from helpers.checks import (
    check_logistic_log_joint,
    check_loo_baseline,
    check_ppca_posterior,
    check_reparameterization,
    check_score_function,
    check_subsampled_log_joint,
)
from helpers.linear_gaussian import LinearGaussianModel
from helpers.logistic_regression import BayesianLogisticRegression

# ------------------------------------------------------------ exercise 3.1


def score_hand_written(log_joint, m, log_s, z):
    # log N(z; m, s^2) written out, summed over the L coordinates
    log_q = (-0.5 * ((z - m) / log_s.exp()) ** 2 - log_s - 0.5 * math.log(2 * math.pi)).sum(-1)
    return (log_q * (log_joint(z) - log_q.detach())).mean()


def score_with_zero_mean_term(log_joint, m, log_s, z):
    log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)
    return (log_q * (log_joint(z) - log_q).detach() - log_q).mean()


def score_leave_one_out(log_joint, m, log_s, z):
    # a control variate: each weight minus the mean of the other S - 1 weights (unbiased)
    log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)
    f = (log_joint(z) - log_q).detach()
    S = f.shape[0]
    baseline = (f.sum() - f) / (S - 1)
    return ((f - baseline) * log_q).mean()


def score_loop(log_joint, m, log_s, z):
    terms = []
    for zs in z:
        lq = Normal(m, log_s.exp()).log_prob(zs).sum()
        terms.append(lq * (log_joint(zs.unsqueeze(0))[0] - lq).item())
    return torch.stack(terms).mean()


@pytest.mark.parametrize(
    "fn", [ref.score_function_surrogate, score_hand_written, score_with_zero_mean_term, score_leave_one_out, score_loop]
)
def test_score_function_accepts(fn, capsys):
    accepts(check_score_function, fn, capsys)


def test_score_function_names_mistakes(capsys):
    def log_q_of(m, log_s, z):
        return Normal(m, log_s.exp()).log_prob(z).sum(-1)

    rejects(
        check_score_function,
        lambda lj, m, ls, z: (log_q_of(m, ls, z) * (lj(z) - log_q_of(m, ls, z))).mean(),
        capsys,
        "must not carry gradient",
        ".detach()",
    )
    rejects(check_score_function, lambda lj, m, ls, z: (log_q_of(m, ls, z) * lj(z)).mean(), capsys, "misses -log q(z)")
    rejects(
        check_score_function, lambda lj, m, ls, z: -ref.score_function_surrogate(lj, m, ls, z), capsys, "sign error"
    )
    rejects(
        check_score_function,
        lambda lj, m, ls, z: z.shape[0] * ref.score_function_surrogate(lj, m, ls, z),
        capsys,
        "summed over the S draws",
    )
    rejects(
        check_score_function,
        lambda lj, m, ls, z: ref.score_function_surrogate(lj, m, ls, (m + ls.exp() * torch.randn_like(z)).detach()),
        capsys,
        "use the draws you are given",
    )
    rejects(
        check_score_function,
        lambda lj, m, ls, z: log_q_of(m, ls, z) * (lj(z) - log_q_of(m, ls, z)).detach(),
        capsys,
        "return a scalar",
    )
    rejects(
        check_score_function,
        lambda lj, m, ls, z: ref.score_function_surrogate(lj, m, ls, z).detach(),
        capsys,
        "no gradient reaches m and log_s",
    )
    # wrong answers of other forms: the statistical test (small S, many calls) catches them
    rejects(check_score_function, lambda lj, m, ls, z: log_q_of(m, ls, z).sum(), capsys, "biased")

    def baseline_including_itself(lj, m, ls, z):  # biased by the factor (S - 1) / S
        log_q = log_q_of(m, ls, z)
        f = (lj(z) - log_q).detach()
        return ((f - f.mean()) * log_q).mean()

    rejects(check_score_function, baseline_including_itself, capsys, "biased", "leave out the draw")
    # a biased estimator of another form: the statistical test names the coordinate
    rejects(
        check_score_function,
        lambda lj, m, ls, z: ref.score_function_surrogate(lj, m, ls.detach(), z) + ls.sum(),
        capsys,
        "biased",
        "d/dlog_s_1",
    )


# ------------------------------------------------------------ exercise 3.2


def reparam_exact_entropy(log_joint, m, log_s, eps):
    z = m + log_s.exp() * eps
    return log_joint(z).mean() + Normal(m, log_s.exp()).entropy().sum()


def reparam_sticking_the_landing(log_joint, m, log_s, eps):
    z = m + log_s.exp() * eps
    return (log_joint(z) - Normal(m.detach(), log_s.exp().detach()).log_prob(z).sum(-1)).mean()


def reparam_standard_normal(log_joint, m, log_s, eps):
    # log q(z) = log N(eps; 0, I) - sum(log s): the change of variables
    z = m + torch.exp(log_s) * eps
    log_q = Normal(0.0, 1.0).log_prob(eps).sum(-1) - log_s.sum()
    return torch.mean(log_joint(z) - log_q)


@pytest.mark.parametrize(
    "fn",
    [ref.reparameterization_surrogate, reparam_exact_entropy, reparam_sticking_the_landing, reparam_standard_normal],
)
def test_reparameterization_accepts(fn, capsys):
    accepts(check_reparameterization, fn, capsys)


def test_reparameterization_names_mistakes(capsys):
    def with_z(z_of, use_log_q=True):
        def fn(log_joint, m, log_s, eps):
            z = z_of(m, log_s, eps)
            log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1) if use_log_q else 0.0
            return (log_joint(z) - log_q).mean()

        return fn

    rejects(
        check_reparameterization,
        with_z(lambda m, ls, e: (m + ls.exp() * e).detach()),
        capsys,
        "no gradient flows through the sample",
    )
    rejects(check_reparameterization, with_z(lambda m, ls, e: m + ls * e), capsys, "not m + log_s * eps")
    rejects(check_reparameterization, with_z(lambda m, ls, e: m + ls.exp() ** 2 * e), capsys, "not the variance")
    rejects(
        check_reparameterization,
        with_z(lambda m, ls, e: m + ls.exp() * e, use_log_q=False),
        capsys,
        "the -log q(z) term carries no gradient",
    )
    rejects(
        check_reparameterization,
        lambda lj, m, ls, e: -ref.reparameterization_surrogate(lj, m, ls, e),
        capsys,
        "sign error",
    )

    def forgot_log_det(lj, m, ls, e):
        return (lj(m + ls.exp() * e) - Normal(0.0, 1.0).log_prob(e).sum(-1)).mean()

    rejects(check_reparameterization, forgot_log_det, capsys, "-sum(log_s)")
    rejects(
        check_reparameterization,
        lambda lj, m, ls, e: e.shape[0] * ref.reparameterization_surrogate(lj, m, ls, e),
        capsys,
        "summed over the S draws",
    )
    rejects(
        check_reparameterization,
        lambda lj, m, ls, e: ref.reparameterization_surrogate(lj, m, ls, torch.randn_like(e)),
        capsys,
        "use the draws you are given",
    )
    # the right gradient with a value that is not the ELBO estimate
    rejects(
        check_reparameterization,
        lambda lj, m, ls, e: ref.reparameterization_surrogate(lj, m, ls, e) + 5.0,
        capsys,
        "the gradient is right, but the value",
    )


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


# ------------------------------------------------------------ exercise 3.6 (the exact PPCA posterior)


def ppca_ref(x, W, b, sigma):
    return LinearGaussianModel(W, b, sigma).posterior(x)


def ppca_solve(x, W, b, sigma):
    L = W.shape[1]
    precision = torch.eye(L, dtype=W.dtype) + W.T @ W / sigma**2
    mean = torch.linalg.solve(precision, W.T @ (x - b).T).T / sigma**2
    return mean, torch.linalg.inv(precision)


def ppca_woodbury(x, W, b, sigma):
    # Sigma = I - W^T (W W^T + sigma^2 I)^{-1} W, and mean = W^T (W W^T + sigma^2 I)^{-1} (x - b)
    D = W.shape[0]
    C = W @ W.T + sigma**2 * torch.eye(D, dtype=W.dtype)
    K = torch.linalg.solve(C, W).T  # (L, D)
    return (x - b) @ K.T, torch.eye(W.shape[1], dtype=W.dtype) - K @ W


@pytest.mark.parametrize("fn", [ppca_ref, ppca_solve, ppca_woodbury])
def test_ppca_posterior_accepts(fn, capsys):
    accepts(check_ppca_posterior, fn, capsys)


def test_ppca_posterior_names_mistakes(capsys):
    def with_precision(make_precision, centre=True):
        def fn(x, W, b, sigma):
            cov = torch.linalg.inv(make_precision(W, sigma))
            return ((x - b) if centre else x) @ W @ cov / sigma**2, cov

        return fn

    def eye(W):
        return torch.eye(W.shape[1], dtype=W.dtype)

    rejects(check_ppca_posterior, with_precision(lambda W, s: W.T @ W / s**2), capsys, "missing the prior's identity")
    rejects(
        check_ppca_posterior,
        with_precision(lambda W, s: eye(W) + W.T @ W / s**2, centre=False),
        capsys,
        "subtract the offset",
    )
    rejects(
        check_ppca_posterior,
        lambda x, W, b, s: (ppca_ref(x, W, b, s)[0], eye(W) + W.T @ W / s**2),
        capsys,
        "returned the precision",
    )
    rejects(
        check_ppca_posterior,
        lambda x, W, b, s: (ppca_ref(x, W, b, s)[0].T, ppca_ref(x, W, b, s)[1]),
        capsys,
        "one row per data point",
    )
    rejects(
        check_ppca_posterior,
        lambda x, W, b, s: ppca_ref(x, W, b, math.sqrt(s)),
        capsys,
        "sigma is a standard deviation",
    )
    rejects(check_ppca_posterior, lambda x, W, b, s: ppca_ref(x, W, b, s)[0], capsys, "return the tuple (mean, cov)")


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


# ------------------------------------------------------------ exercise 3.3 (the leave-one-out baseline)


def loo_scaled_mean(log_joint, m, log_s, z):  # f_j - b_j = S / (S - 1) (f_j - mean f): the same gradient
    log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)
    f = (log_joint(z) - log_q).detach()
    S = len(f)
    return (S / (S - 1) * (f - f.mean()) * log_q).mean()


def loo_loop(log_joint, m, log_s, z):
    log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)
    f = (log_joint(z) - log_q).detach()
    terms = []
    for j in range(len(f)):
        others = torch.cat([f[:j], f[j + 1 :]])
        terms.append((f[j] - others.mean()) * log_q[j])
    return torch.stack(terms).mean()


def loo_mask(log_joint, m, log_s, z):
    log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)
    f = (log_joint(z) - log_q).detach()
    S = len(f)
    off = 1.0 - torch.eye(S, dtype=f.dtype)
    return ((f - off @ f / (S - 1)) * log_q).mean()


@pytest.mark.parametrize("fn", [ref.score_function_loo_surrogate, loo_scaled_mean, loo_loop, loo_mask])
def test_loo_baseline_accepts(fn, capsys):
    accepts(check_loo_baseline, fn, capsys)


def _with_baseline(baseline_of, detach=True):
    def surrogate(log_joint, m, log_s, z):
        log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)
        f = log_joint(z) - log_q
        f = f.detach() if detach else f
        return ((f - baseline_of(f)) * log_q).mean()

    return surrogate


@pytest.mark.parametrize(
    "fn, words",
    [
        (_with_baseline(lambda f: f.mean()), "includes the draw it multiplies"),
        (_with_baseline(lambda f: (f.sum() - f) / len(f)), "not by S"),
        (ref.score_function_surrogate, "no baseline is subtracted"),
        (_with_baseline(lambda f: (f.sum() - f) / (len(f) - 1), detach=False), "must not carry gradient"),
        (_with_baseline(lambda f: -(f.sum() - f) / (len(f) - 1)), "subtract it"),
        (lambda lj, m, ls, z: -ref.score_function_loo_surrogate(lj, m, ls, z), "sign error"),
        (lambda lj, m, ls, z: len(z) * ref.score_function_loo_surrogate(lj, m, ls, z), "average them"),
        (
            lambda lj, m, ls, z: ref.score_function_loo_surrogate(
                lj, m, ls, (m + ls.exp() * torch.randn_like(z)).detach()
            ),
            "do not draw new ones",
        ),
        (_with_baseline(lambda f: f.median()), "does not match the reference"),
    ],
)
def test_loo_baseline_names_mistakes(fn, words, capsys):
    rejects(check_loo_baseline, fn, capsys, words)


def test_the_reference_loo_baseline_needs_two_draws():
    m, log_s = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="at least 2 draws"):
        ref.score_function_loo_surrogate(lambda z: -(z**2).sum(-1), m, log_s, torch.zeros(1, 2))


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


# ------------------------------------------------------------ 3.2: a biased answer is not told about baselines


def test_reparameterization_bias_message_is_about_the_pathwise_estimate(capsys):
    def folded(log_joint, m, log_s, eps):  # |eps| is not standard normal: the estimate is biased
        z = m + log_s.exp() * eps.abs()
        return (log_joint(z) - Normal(m, log_s.exp()).log_prob(z).sum(-1)).mean()

    result, out = run(check_reparameterization, folded, capsys)
    assert not result and "biased" in out and "z = m + exp(log_s) * eps" in out, out
    assert "baseline" not in out, out
