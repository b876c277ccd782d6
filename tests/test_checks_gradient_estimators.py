"""The checkers of helpers.checks.gradient_estimators, lesson 03's 3.1 (the score-function estimator), 3.2 (the
reparameterization estimator) and 3.3 (the leave-one-out baseline), accept correct answers written in different
ways and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, rejects, run
from torch.distributions import Normal

from helpers import gradient_estimators as ref
from helpers.checks import (
    check_loo_baseline,
    check_reparameterization,
    check_score_function,
)

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


# ------------------------------------------------------------ 3.2: a biased answer is not told about baselines


def test_reparameterization_bias_message_is_about_the_pathwise_estimate(capsys):
    def folded(log_joint, m, log_s, eps):  # |eps| is not standard normal: the estimate is biased
        z = m + log_s.exp() * eps.abs()
        return (log_joint(z) - Normal(m, log_s.exp()).log_prob(z).sum(-1)).mean()

    result, out = run(check_reparameterization, folded, capsys)
    assert not result and "biased" in out and "z = m + exp(log_s) * eps" in out, out
    assert "baseline" not in out, out
