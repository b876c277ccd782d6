"""The ELBO checkers accept correct answers written in different ways and
name the mistake in plausible wrong ones."""

import json
import math

import pytest
import torch
from checker_assertions import accepts, rejects, run
from torch.distributions import Normal, kl_divergence

from helpers.checks import (
    RESULTS_ENV,
    check_elbo_samples,
    check_gaussian_elbo,
    check_kl_normal,
    check_reverse_kl,
    results,
)

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


# ------------------------------------------------------------ exercise 1.2


def kl_reference(mq, sq, mp, sp):
    return torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5


def kl_with_variances(mq, sq, mp, sp):
    vq, vp = sq**2, sp**2
    return 0.5 * (torch.log(vp) - torch.log(vq) + vq / vp + (mq - mp) ** 2 / vp - 1)


def kl_torch(mq, sq, mp, sp):
    shape = torch.broadcast_shapes(mq.shape, sp.shape)
    return kl_divergence(Normal(mq.expand(shape), sq.expand(shape)), Normal(mp.expand(shape), sp.expand(shape)))


@pytest.mark.parametrize("fn", [kl_reference, kl_with_variances, kl_torch])
def test_kl_accepts_correct_answers(fn, capsys):
    accepts(check_kl_normal, fn, capsys)


def test_kl_names_mistakes(capsys):
    rejects(check_kl_normal, lambda mq, sq, mp, sp: kl_reference(mp, sp, mq, sq), capsys, "swapped")
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: torch.log(sp**2 / sq**2) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5,
        capsys,
        "factor 1/2",
    )
    rejects(check_kl_normal, lambda mq, sq, mp, sp: kl_reference(mq, sq, mp, sp) + 0.5, capsys, "missing the constant")
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: torch.log(sp / sq) + sq**2 / (2 * sp**2) - 0.5 + 0 * mq + 0 * mp,
        capsys,
        "missing the mean term",
    )
    rejects(check_kl_normal, lambda mq, sq, mp, sp: -kl_reference(mq, sq, mp, sp), capsys, "sign error")
    # NaN on the edge case q = p (0/0 from a ratio of differences)
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: (
            kl_reference(mq, sq, mp, sp) * ((mq - mp) ** 2 + (sq - sp) ** 2) / ((mq - mp) ** 2 + (sq - sp) ** 2)
        ),
        capsys,
        "NaN",
        "q = p",
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
    rejects(check_kl_normal, lambda mq, sq, mp, sp: math.log(sp / sq) + 0 * mq, capsys, "use torch.log")
    rejects(
        check_elbo_samples,
        lambda *a: samples_rsample(*a).squeeze() if a[-1] == 1 else samples_rsample(*a),
        capsys,
        "S = 1",
    )


# ------------------------------------------------------------ common behaviour


@pytest.mark.parametrize("checker", [check_gaussian_elbo, check_kl_normal, check_elbo_samples])
def test_stub_reads_not_attempted(checker, capsys):
    def stub(*args):
        raise NotImplementedError(f"Exercise {checker.exercise}: ...")

    result, out = run(checker, stub, capsys)
    assert not result and result.status == "not attempted"
    assert out.startswith(f"Exercise {checker.exercise} (") and "not attempted yet" in out


@pytest.mark.parametrize(
    "bad",
    [
        lambda *a: None,
        lambda *a: "text",
        lambda *a: (1, 2),
        lambda *a: 1 / 0,
        lambda *a: torch.ones(2, 2, 2),
        lambda: 0,
        42,
    ],
)
@pytest.mark.parametrize("checker", [check_gaussian_elbo, check_kl_normal, check_elbo_samples])
def test_checkers_never_raise(checker, bad, capsys):
    result, out = run(checker, bad, capsys)
    assert not result and result.status == "failed" and "Exercise" in out


def test_results_are_recorded_as_json_lines(tmp_path, monkeypatch, capsys):
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    check_kl_normal(kl_reference)
    check_kl_normal(lambda *a: -kl_reference(*a))
    capsys.readouterr()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["status"] for r in lines] == ["passed", "failed"]
    assert {tuple(sorted(r)) for r in lines} == {("exercise", "message", "status", "task")}
    assert lines[1]["exercise"] == "1.2" and "sign error" in lines[1]["message"]
    assert results()[-2:] == lines


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
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: -torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5,
        capsys,
        "log term has the wrong sign",
    )
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / sp**2 - 0.5,
        capsys,
        "including the 2",
    )


# ------------------------------------------------------------ exercise 1.4


def reverse_kl_trapezoid(m, s, log_target, z_grid):
    log_q = Normal(m, s).log_prob(z_grid)
    return torch.trapezoid(log_q.exp() * (log_q - log_target(z_grid)), z_grid)


def reverse_kl_rectangles(m, s, log_target, z_grid):
    # a Riemann sum on the uniform grid: the integrand vanishes at both ends, so it equals the trapezoid rule
    dz = z_grid[1] - z_grid[0]
    log_q = Normal(m, s).log_prob(z_grid)
    return (torch.exp(log_q) * (log_q - log_target(z_grid))).sum() * dz


def reverse_kl_closed_entropy(m, s, log_target, z_grid):
    # KL = -H[q] - E_q[log p]: the entropy in closed form, the cross-entropy by quadrature
    q = Normal(m, s)
    return -q.entropy() - torch.trapezoid(q.log_prob(z_grid).exp() * log_target(z_grid), z_grid)


def reverse_kl_simpson(m, s, log_target, z_grid):
    # Simpson's rule (an odd number of grid points)
    log_q = Normal(m, s).log_prob(z_grid)
    f = log_q.exp() * (log_q - log_target(z_grid))
    h = z_grid[1] - z_grid[0]
    return h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


@pytest.mark.parametrize(
    "fn", [reverse_kl_trapezoid, reverse_kl_rectangles, reverse_kl_closed_entropy, reverse_kl_simpson]
)
def test_reverse_kl_accepts_correct_answers(fn, capsys):
    accepts(check_reverse_kl, fn, capsys)


def _q_and_p(m, s, log_target, z_grid):
    log_q, log_p = Normal(m, s).log_prob(z_grid), log_target(z_grid)
    return log_q, log_p


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (
            lambda m, s, lt, z: torch.trapezoid(lt(z).exp() * (lt(z) - Normal(m, s).log_prob(z)), z),
            "forward KL(p || q)",
        ),
        (lambda m, s, lt, z: -reverse_kl_trapezoid(m, s, lt, z), "sign error"),
        (lambda m, s, lt, z: torch.trapezoid(Normal(m, s).log_prob(z) - lt(z), z), "weighted by q's density"),
        (
            lambda m, s, lt, z: torch.trapezoid(lt(z).exp() * (Normal(m, s).log_prob(z) - lt(z)), z),
            "the weights are p's density",
        ),
        (
            lambda m, s, lt, z: (Normal(m, s).log_prob(z).exp() * (Normal(m, s).log_prob(z) - lt(z))).sum(),
            "missing the grid spacing",
        ),
        (
            lambda m, s, lt, z: (Normal(m, s).log_prob(z).exp() * (Normal(m, s).log_prob(z) - lt(z))).mean(),
            "a mean over the grid points",
        ),
        (
            lambda m, s, lt, z: -torch.trapezoid(Normal(m, s).log_prob(z).exp() * lt(z), z),
            "missing the entropy part",
        ),
        (lambda m, s, lt, z: reverse_kl_trapezoid(m, s.sqrt(), lt, z), "s is used as a variance"),
        (
            lambda m, s, lt, z: torch.tensor(reverse_kl_trapezoid(m, s, lt, z).item(), dtype=torch.float64),
            "no gradient reaches m and s",
        ),
        (
            lambda m, s, lt, z: reverse_kl_trapezoid(m, s, lt, z).unsqueeze(0),
            "wrong shape",
        ),
    ],
)
def test_reverse_kl_names_mistakes(fn, words, capsys):
    rejects(check_reverse_kl, fn, capsys, words)


def test_reverse_kl_names_an_ignored_target(capsys):
    weights, locs, scales = (torch.tensor(v, dtype=torch.float64) for v in ([0.3, 0.7], [-2.0, 1.5], [0.5, 0.8]))

    def lesson_target(z):
        return torch.logsumexp(torch.log(weights) + Normal(locs, scales).log_prob(z.unsqueeze(-1)), -1)

    rejects(
        check_reverse_kl,
        lambda m, s, lt, z: reverse_kl_trapezoid(m, s, lesson_target, z),
        capsys,
        "ignores its log_target",
    )


def test_reverse_kl_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(m, s, log_target, z_grid):
        log_q = Normal(m, s).log_prob(z_grid)
        q = log_q.exp()
        q.mul_(1.0)  # in place on a tensor autograd needs: the gradient fails
        return torch.trapezoid(q * (log_q - log_target(z_grid)), z_grid)

    result, out = run(check_reverse_kl, in_place, capsys)
    assert result.status == "failed" and "changes a tensor in place" in out, out


# ------------------------------------------------------------ exercise 1.4 at the lesson's scale (float32, narrow q)


def _kl_log_ratio(m, s, lt, z):  # log of a ratio of densities: 0 * log(0 / p) is nan where q underflows
    q, p = Normal(m, s).log_prob(z).exp(), lt(z).exp()
    return torch.trapezoid(q * torch.log(q / p), z)


def _kl_log_of_exps(m, s, lt, z):  # log(q) of an exp: log 0 = -inf where q underflows
    q = Normal(m, s).log_prob(z).exp()
    return torch.trapezoid(q * (torch.log(q) - lt(z)), z)


def _kl_log_p_of_exp(m, s, lt, z):  # log(p) of an exp: +inf where p underflows
    log_q = Normal(m, s).log_prob(z)
    return torch.trapezoid(log_q.exp() * (log_q - torch.log(lt(z).exp())), z)


def _kl_masked(m, s, lt, z):  # the value is finite, but torch.where still sends the masked branch's nan gradient back
    q, p = Normal(m, s).log_prob(z).exp(), lt(z).exp()
    return torch.trapezoid(torch.where(q > 0, q * torch.log(q / p), torch.zeros_like(q)), z)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_kl_log_ratio, "q's density underflows to 0"),
        (_kl_log_of_exps, "keep the logs"),
        (_kl_log_p_of_exp, "in float32 at the lesson's scale"),
        (_kl_masked, "the gradient with respect to m is nan"),
        (
            lambda m, s, lt, z: torch.trapezoid(z, Normal(m, s).log_prob(z).exp() * (Normal(m, s).log_prob(z) - lt(z))),
            "the arguments of torch.trapezoid are swapped",
        ),
        (lambda m, s, lt, z: -reverse_kl_trapezoid(m, s, lt, z), "sign error: KL(q || p)"),
    ],
)
def test_reverse_kl_names_the_lesson_scale_slips(fn, words, capsys):
    rejects(check_reverse_kl, fn, capsys, words)


def test_reverse_kl_swapped_arguments_are_not_called_a_sign_error(capsys):
    def swapped(m, s, lt, z):
        log_q = Normal(m, s).log_prob(z)
        return torch.trapezoid(z, log_q.exp() * (log_q - lt(z)))

    result, out = run(check_reverse_kl, swapped, capsys)
    assert not result and "sign error" not in out, out


def reverse_kl_float32_safe(m, s, log_target, z_grid):
    # the lesson's dtype kept: xlogy-free, logs only, the integrand computed in the grid's dtype
    log_q = torch.distributions.Normal(m.to(z_grid.dtype), s.to(z_grid.dtype)).log_prob(z_grid)
    return torch.trapezoid(torch.exp(log_q) * (log_q - log_target(z_grid)), x=z_grid)


def test_reverse_kl_accepts_the_keyword_form(capsys):
    accepts(check_reverse_kl, reverse_kl_float32_safe, capsys)
