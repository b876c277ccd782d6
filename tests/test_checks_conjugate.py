"""The checkers of helpers.checks.conjugate, lesson 01's 1.1 (the closed-form ELBO) and 1.3 (the Monte Carlo
ELBO's terms), accept correct answers written in different ways and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import BAD_ANSWERS, accepts, never_raises, reads_not_attempted, rejects
from torch.distributions import Normal, kl_divergence

from helpers.checks import check_elbo_samples, check_gaussian_elbo

LOG2PI = math.log(2 * math.pi)


# ------------------------------------------------------------ exercise 1.1


def elbo_reference(m, s, x, model):
    return model.gaussian_elbo(m, s, x)


def elbo_with_distributions(m, s, x, model):
    # E_q[log p(x|z)] written via log N(x_i; m, sigma^2) minus the variance correction
    sigma2, s02 = model.noise_std**2, model.prior_std**2
    loglik_at_mean = Normal(m.unsqueeze(-1), model.noise_std).log_prob(x).sum(-1)
    logprior_at_mean = Normal(torch.as_tensor(model.prior_mean, dtype=m.dtype), model.prior_std).log_prob(m)
    entropy = Normal(m, s).entropy()
    return loglik_at_mean - x.shape[0] * s**2 / (2 * sigma2) + logprior_at_mean - s**2 / (2 * s02) + entropy


def elbo_from_identity(m, s, x, model):
    # log p(x) - KL(q || posterior): correct, and written very differently
    m_N, s_N = model.posterior(x)
    return model.log_evidence(x) - kl_divergence(Normal(m, s), Normal(m_N.expand(m.shape), s_N.expand(m.shape)))


def elbo_sufficient_stats(m, s, x, model):
    N, sx, sxx = x.numel(), x.sum(), (x**2).sum()
    sq = sxx - 2 * m * sx + N * m**2
    return (
        -0.5 * N * (LOG2PI + 2 * math.log(model.noise_std))
        - (sq + N * s * s) / (2 * model.noise_std**2)
        - 0.5 * (LOG2PI + 2 * math.log(model.prior_std))
        - ((m - model.prior_mean) ** 2 + s * s) / (2 * model.prior_std**2)
        + 0.5 * (1 + LOG2PI)
        + torch.log(s)
    )


@pytest.mark.parametrize("fn", [elbo_reference, elbo_with_distributions, elbo_from_identity, elbo_sufficient_stats])
def test_gaussian_elbo_accepts_correct_answers(fn, capsys):
    accepts(check_gaussian_elbo, fn, capsys)


def test_gaussian_elbo_names_mistakes(capsys):
    rejects(
        check_gaussian_elbo,
        lambda m, s, x, model: model.gaussian_elbo(m, s, x) - Normal(m, s).entropy(),
        capsys,
        "missing the entropy",
    )
    rejects(check_gaussian_elbo, lambda m, s, x, model: -model.gaussian_elbo(m, s, x), capsys, "negative ELBO")
    rejects(
        check_gaussian_elbo, lambda m, s, x, model: model.gaussian_elbo(m, s.sqrt(), x), capsys, "used as a variance"
    )
    rejects(
        check_gaussian_elbo,
        lambda m, s, x, model: model.gaussian_elbo(m, s, x) + x.numel() * s**2 / (2 * model.noise_std**2),
        capsys,
        "likelihood term misses the spread",
    )
    rejects(
        check_gaussian_elbo,
        lambda m, s, x, model: model.gaussian_elbo(m, s, x) - 2 * Normal(m, s).entropy(),
        capsys,
        "entropy has the wrong sign",
    )
    rejects(
        check_gaussian_elbo,
        lambda m, s, x, model: model.gaussian_elbo(m, s, x).sum(),
        capsys,
        "wrong shape",
        "grid",
        "unsqueeze",
    )
    rejects(
        check_gaussian_elbo,
        lambda m, s, x, model: model.gaussian_elbo(m, s, x) + 0.1,
        capsys,
        "does not match the reference",
    )


# ------------------------------------------------------------ exercise 1.3


def samples_rsample(m, s, x, model, S):
    q = Normal(m, s)
    z = q.rsample((S,))
    return model.log_joint(x, z) - q.log_prob(z)


def samples_manual(m, s, x, model, S):
    eps = torch.randn(S, dtype=m.dtype)
    z = m + s * eps
    log_q = -0.5 * LOG2PI - torch.log(s) - 0.5 * eps**2
    log_prior = -0.5 * LOG2PI - math.log(model.prior_std) - 0.5 * ((z - model.prior_mean) / model.prior_std) ** 2
    log_lik = (
        -0.5 * LOG2PI - math.log(model.noise_std) - 0.5 * ((x[None, :] - z[:, None]) / model.noise_std) ** 2
    ).sum(1)
    return log_lik + log_prior - log_q


def samples_analytic_entropy(m, s, x, model, S):
    # a correct, lower-variance estimator: Monte Carlo for log p(x, z), exact entropy
    q = Normal(m, s)
    z = q.rsample((S,))
    return model.log_joint(x, z) + q.entropy()


@pytest.mark.parametrize("fn", [samples_rsample, samples_manual, samples_analytic_entropy])
def test_elbo_samples_accepts_correct_answers(fn, capsys):
    accepts(check_elbo_samples, fn, capsys)


def test_elbo_samples_names_mistakes(capsys):
    def no_reparam(m, s, x, model, S):
        q = Normal(m, s)
        z = q.sample((S,))
        return model.log_joint(x, z) - q.log_prob(z)

    def variance(m, s, x, model, S):
        return samples_rsample(m, s**2, x, model, S)

    def no_entropy(m, s, x, model, S):
        return model.log_joint(x, Normal(m, s).rsample((S,)))

    def plug_in_mean(m, s, x, model, S):
        return (model.log_joint(x, m) - Normal(m, s).log_prob(m)).expand(S)

    rejects(check_elbo_samples, no_reparam, capsys, "does not flow through the sample", "rsample")
    rejects(check_elbo_samples, variance, capsys, "standard deviation s, not the variance")
    rejects(check_elbo_samples, no_entropy, capsys, "missing the -log q")
    rejects(check_elbo_samples, plug_in_mean, capsys, "all S terms are equal")
    rejects(check_elbo_samples, lambda *a: samples_rsample(*a).mean(), capsys, "single number", "shape (S,)")
    rejects(check_elbo_samples, lambda *a: samples_rsample(*a).detach(), capsys, "no gradient")
    rejects(
        check_elbo_samples,
        lambda *a: samples_rsample(*a).squeeze() if a[-1] == 1 else samples_rsample(*a),
        capsys,
        "S = 1",
    )


# ------------------------------------------------------------ common behaviour


@pytest.mark.parametrize("checker", [check_gaussian_elbo, check_elbo_samples])
def test_stub_reads_not_attempted(checker, capsys):
    reads_not_attempted(checker, capsys)


@pytest.mark.parametrize("bad", BAD_ANSWERS)
@pytest.mark.parametrize("checker", [check_gaussian_elbo, check_elbo_samples])
def test_checkers_never_raise(checker, bad, capsys):
    never_raises(checker, bad, capsys)


def test_checker_does_not_shift_the_notebooks_random_stream(capsys):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_elbo_samples(samples_rsample)
    capsys.readouterr()
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # the wrong answer's own warning
def test_elbo_samples_names_subtler_mistakes(capsys):
    def prior_at_mean(m, s, x, model, S):
        q = Normal(m, s)
        z = q.rsample((S,))
        return model.log_likelihood(x, z) + model.log_prior(m) - q.log_prob(z)

    def missing_log_s(m, s, x, model, S):
        eps = torch.randn(S, dtype=m.dtype)
        z = m + s * eps
        return model.log_joint(x, z) - Normal(0.0, 1.0).log_prob(eps)

    def math_log(m, s, x, model, S):
        z = m + s * torch.randn(S, dtype=m.dtype)
        return model.log_joint(x, z) + 0.5 * (1 + LOG2PI) + math.log(s)

    rejects(check_elbo_samples, prior_at_mean, capsys, "prior must be evaluated at the sample")
    rejects(check_elbo_samples, missing_log_s, capsys, "missing the -log s")
    rejects(check_elbo_samples, math_log, capsys, "misses the entropy's 1/s", "torch.log(s), not math.log(s)")


def test_elbo_samples_accepts_sticking_the_landing(capsys):
    # log q evaluated with detached parameters: a correct, lower-variance gradient estimator
    def stl(m, s, x, model, S):
        z = Normal(m, s).rsample((S,))
        return model.log_joint(x, z) - Normal(m.detach(), s.detach()).log_prob(z)

    accepts(check_elbo_samples, stl, capsys)


def test_more_named_mistakes(capsys):
    rejects(
        check_gaussian_elbo,
        lambda m, s, x, model: model.gaussian_elbo(m, s, x) + (x.numel() - 1) * s**2 / (2 * model.noise_std**2),
        capsys,
        "summed over the N data points",
    )
    rejects(
        check_gaussian_elbo,
        lambda m, s, x, model: model.gaussian_elbo(m, s, x) - 0.5 * torch.log(s),
        capsys,
        "with s squared",
    )
