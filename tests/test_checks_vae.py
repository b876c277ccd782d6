"""The VAE checkers (lesson 05) accept correct answers written in different ways
and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import BAD_ANSWERS, accepts, never_raises, reads_not_attempted, rejects, replays_to_passed
from torch.distributions import Normal, kl_divergence

from helpers import vae
from helpers.checks import (
    check_aggregate_log_ratio,
    check_binomial_log_likelihood,
    check_kl_standard_normal,
    check_log_mean_exp,
    check_log_weights,
    check_mutual_information,
    check_training_step,
    check_vae_elbo,
)

# ------------------------------------------------------------ 5.1

_SP = torch.nn.functional.softplus


def _log_choose(x, n):
    return math.lgamma(n + 1) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, l, n: vae.binomial_log_prob(x, n, l),
        lambda x, l, n: torch.distributions.Binomial(n, logits=l).log_prob(x),
        lambda x, l, n: _log_choose(x, n) + x * l - n * _SP(l),
        lambda x, l, n: (
            _log_choose(x, n) + x * torch.nn.functional.logsigmoid(l) + (n - x) * torch.nn.functional.logsigmoid(-l)
        ),
        lambda x, l, n: _log_choose(x, n) - x * _SP(-l) - (n - x) * _SP(l),
    ],
)
def test_binomial_log_likelihood_accepts(fn, capsys):
    accepts(check_binomial_log_likelihood, fn, capsys)


def test_binomial_log_likelihood_names_mistakes(capsys):
    check = check_binomial_log_likelihood
    rejects(check, lambda x, l, n: x * l - n * _SP(l), capsys, "missing log C(n, x)")
    rejects(check, lambda x, l, n: _log_choose(x, n) + (n - x) * l - n * _SP(l), capsys, "swapped")
    rejects(check, lambda x, l, n: _log_choose(x, n) + x * l - n * _SP(-l), capsys, "sign inside softplus")
    rejects(check, lambda x, l, n: _log_choose(x, n) + x * l - _SP(l), capsys, "Bernoulli")
    rejects(check, lambda x, l, n: _log_choose(x, n) + x * (l - _SP(l)), capsys, "failures' term is missing")
    naive = lambda x, l, n: (  # noqa: E731
        _log_choose(x, n) + x * torch.log(torch.sigmoid(l)) + (n - x) * torch.log(1 - torch.sigmoid(l))
    )
    rejects(check, naive, capsys, "in float32 at logits beyond", "softplus")
    rejects(check, lambda x, l, n: (_log_choose(x, n) + x * l - n * _SP(l)).sum(), capsys, "returned one number")
    rejects(check, lambda x, l, n: (_log_choose(x, n) + x * l - n * _SP(l)).detach(), capsys, "no gradient")


# ------------------------------------------------------------ 5.2


@pytest.mark.parametrize(
    "fn",
    [
        vae.kl_standard_normal,
        lambda m, ls: kl_divergence(Normal(m, ls.exp()), Normal(0.0, 1.0)).sum(-1),
        lambda m, ls: 0.5 * torch.sum(m.pow(2) + ls.exp().pow(2) - 1, dim=-1) - ls.sum(-1),
    ],
)
def test_kl_accepts(fn, capsys):
    accepts(check_kl_standard_normal, fn, capsys)


def test_kl_names_mistakes(capsys):
    def kl(m, ls):
        return 0.5 * (m**2 + (2 * ls).exp() - 1 - 2 * ls)

    rejects(check_kl_standard_normal, lambda m, ls: kl(m, ls).sum(-1) * 2, capsys, "factor 1/2")
    rejects(
        check_kl_standard_normal, lambda m, ls: 0.5 * (m**2 + ls.exp() - 1 - 2 * ls).sum(-1), capsys, "exp(2 log_scale)"
    )
    rejects(
        check_kl_standard_normal,
        lambda m, ls: 0.5 * (m**2 + (2 * ls).exp() - 1 - ls).sum(-1),
        capsys,
        "log sigma^2 = 2 log_scale",
    )
    rejects(check_kl_standard_normal, lambda m, ls: kl(m, ls), capsys, "sum over the latent dimensions")
    rejects(check_kl_standard_normal, lambda m, ls: -kl(m, ls).sum(-1), capsys, "never negative")
    rejects(check_kl_standard_normal, lambda m, ls: kl(m, ls).mean(-1), capsys, "averaged over the latent")
    rejects(
        check_kl_standard_normal,
        lambda m, ls: kl_divergence(Normal(0.0, 1.0), Normal(m, ls.exp())).sum(-1),
        capsys,
        "the other direction",
    )


def kl_numpy(m, ls):  # the right numbers outside torch: training would get no gradient
    import numpy as np

    m, ls = m.detach().numpy(), ls.detach().numpy()
    return torch.from_numpy(0.5 * (m**2 + np.exp(2 * ls) - 1 - 2 * ls).sum(-1))


def kl_in_place(m, ls):
    s2 = (2 * ls).exp()  # exp's backward needs its output ...
    out = 0.5 * (m**2 + s2 - 1 - 2 * ls).sum(-1)
    s2.mul_(1.0)  # ... which is then modified in place
    return out


@pytest.mark.parametrize(
    "fn, words",
    [
        (kl_numpy, "no gradient reaches mean and log_scale"),
        (lambda m, ls: torch.tensor(vae.kl_standard_normal(m, ls).tolist(), dtype=m.dtype), "no gradient reaches"),
        (lambda m, ls: vae.kl_standard_normal(m.detach(), ls), "no gradient reaches mean"),
        (kl_in_place, "changes a tensor in place"),
    ],
)
def test_kl_needs_a_gradient(fn, words, capsys):
    rejects(check_kl_standard_normal, fn, capsys, words)


# ------------------------------------------------------------ 5.3


def elbo_ref(x, model, eps):
    mean, log_scale = model.encoder(x)
    z = vae.reparameterize(mean, log_scale, eps)
    return model.log_likelihood(x, z).mean(0) - vae.kl_standard_normal(mean, log_scale)


def elbo_monte_carlo_kl(x, model, eps):
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    log_w = model.log_joint(x, z) - Normal(mean, log_scale.exp()).log_prob(z).sum(-1)
    return log_w.mean(0)


def elbo_entropy_form(x, model, eps):
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    return model.log_joint(x, z).mean(0) + Normal(mean, log_scale.exp()).entropy().sum(-1)


def elbo_sticking_the_landing(x, model, eps):
    # the Monte Carlo KL with log q's parameters held fixed (Roeder et al. 2017): same value, unbiased gradient
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    log_q = Normal(mean.detach(), log_scale.exp().detach()).log_prob(z).sum(-1)
    return (model.log_joint(x, z) - log_q).mean(0)


@pytest.mark.parametrize("fn", [elbo_ref, elbo_monte_carlo_kl, elbo_entropy_form, elbo_sticking_the_landing])
def test_vae_elbo_accepts(fn, capsys):
    accepts(check_vae_elbo, fn, capsys)


def test_vae_elbo_names_mistakes(capsys):
    def rec(x, model, eps):
        mean, log_scale = model.encoder(x)
        return model.log_likelihood(x, vae.reparameterize(mean, log_scale, eps)).mean(0), mean, log_scale

    rejects(check_vae_elbo, lambda x, model, eps: rec(x, model, eps)[0], capsys, "missing the KL term")
    rejects(
        check_vae_elbo,
        lambda x, model, eps: rec(x, model, eps)[0] + vae.kl_standard_normal(*rec(x, model, eps)[1:]),
        capsys,
        "subtracted, not added",
    )
    rejects(check_vae_elbo, lambda x, model, eps: -elbo_ref(x, model, eps), capsys, "sign error")
    rejects(check_vae_elbo, lambda x, model, eps: elbo_ref(x, model, eps).mean(), capsys, "one ELBO per data point")
    rejects(check_vae_elbo, lambda x, model, eps: elbo_ref(x, model, eps).detach(), capsys, "no gradient")

    def detached_z(x, model, eps):
        mean, log_scale = model.encoder(x)
        z = vae.reparameterize(mean, log_scale, eps).detach()
        return model.log_likelihood(x, z).mean(0) - vae.kl_standard_normal(mean, log_scale)

    rejects(check_vae_elbo, detached_z, capsys, "not its gradients")
    rejects(
        check_vae_elbo, lambda x, model, eps: elbo_ref(x, model, torch.randn_like(eps)), capsys, "the noise eps you are"
    )


@pytest.mark.parametrize(
    "wrong_kl",
    [
        lambda m, ls: 2 * vae.kl_standard_normal(m, ls),  # 5.2 without its 1/2
        lambda m, ls: 0.5 * (m**2 + ls.exp() - 1 - 2 * ls).sum(-1),  # 5.2 with sigma^2 = exp(log_scale)
        lambda m, ls: vae.kl_standard_normal(m, ls) / m.shape[-1],  # 5.2 averaged over the latent axis
    ],
)
def test_vae_elbo_names_a_wrong_kl_from_exercise_5_2(wrong_kl, capsys):
    def elbo_with_their_kl(x, model, eps):  # a correct 5.3 built on a wrong 5.2
        mean, log_scale = model.encoder(x)
        z = vae.reparameterize(mean, log_scale, eps)
        return model.log_likelihood(x, z).mean(0) - wrong_kl(mean, log_scale)

    rejects(check_vae_elbo, elbo_with_their_kl, capsys, "the reconstruction term is right", "exercise 5.2")


def _elbo_parts(x, model, eps):
    mean, log_scale = model.encoder(x)
    return model.log_likelihood(x, vae.reparameterize(mean, log_scale, eps)), vae.kl_standard_normal(mean, log_scale)


def _at_the_mean(x, model, eps):  # the noise ignored: the decoder sees the encoder's mean
    mean, log_scale = model.encoder(x)
    return model.log_likelihood(x, mean[None]).mean(0) - vae.kl_standard_normal(mean, log_scale)


def _kl_of_the_scale(x, model, eps):  # a right 5.2, given sigma where it takes log sigma
    mean, log_scale = model.encoder(x)
    z = vae.reparameterize(mean, log_scale, eps)
    return model.log_likelihood(x, z).mean(0) - vae.kl_standard_normal(mean, log_scale.exp())


def _kl_still_a_stub(mean, log_scale):
    raise NotImplementedError("Exercise 5.2: KL to the standard normal in closed form")


def _on_a_stub(x, model, eps):
    mean, log_scale = model.encoder(x)
    z = vae.reparameterize(mean, log_scale, eps)
    return model.log_likelihood(x, z).mean(0) - _kl_still_a_stub(mean, log_scale)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        # log_likelihood is already summed over the pixels: a further sum or mean runs over the images
        (lambda x, m, e: _elbo_parts(x, m, e)[0].sum(-1).mean(0) - _elbo_parts(x, m, e)[1], ("summed over the B",)),
        (lambda x, m, e: _elbo_parts(x, m, e)[0].mean() - _elbo_parts(x, m, e)[1], ("averaged over the B images",)),
        (lambda x, m, e: _elbo_parts(x, m, e)[0].sum() - _elbo_parts(x, m, e)[1], ("summed over the draws and",)),
        # (S,) against (B,): a broadcasting error between the draws and the images, named as such
        (
            lambda x, m, e: _elbo_parts(x, m, e)[0].mean(1) - _elbo_parts(x, m, e)[1],
            ("4 (S, the draws) and 3 (B, the images)", "over the S draws (dim 0) only"),
        ),
        (_at_the_mean, ("the same whatever the noise eps", "not log p(x | z) at the encoder's mean")),
        (_kl_of_the_scale, ("given the scale exp(log_scale)", "exercise 5.2")),
        (_on_a_stub, ("exercise 5.2's function, which is still a stub",)),
    ],
)
def test_vae_elbo_names_axes_noise_and_the_earlier_exercise(fn, words, capsys):
    rejects(check_vae_elbo, fn, capsys, *words)


# ------------------------------------------------------------ 5.5


@pytest.mark.parametrize(
    "fn",
    [
        vae.log_mean_exp,
        lambda lw: torch.logsumexp(lw - math.log(lw.shape[0]), dim=0),
        lambda lw: lw.max(0).values + (lw - lw.max(0).values).exp().mean(0).log(),
        lambda lw: torch.logsumexp(lw, 0) - torch.log(torch.tensor(float(lw.shape[0]), dtype=lw.dtype)),
        lambda lw: torch.logsumexp(lw, 0, keepdim=True).squeeze(0) - math.log(len(lw)),
    ],
)
def test_log_mean_exp_accepts(fn, capsys):
    accepts(check_log_mean_exp, fn, capsys)


def test_log_mean_exp_names_mistakes(capsys):
    rejects(check_log_mean_exp, lambda lw: torch.logsumexp(lw, 0), capsys, "missing -log K")
    rejects(check_log_mean_exp, lambda lw: lw.mean(0), capsys, "the ELBO estimate")
    rejects(check_log_mean_exp, lambda lw: lw.exp().mean(0).log(), capsys, "underflows")
    rejects(check_log_mean_exp, lambda lw: torch.logsumexp(lw, 1) - math.log(lw.shape[1]), capsys, "wrong axis")
    rejects(check_log_mean_exp, lambda lw: lw.max(0).values, capsys, "largest weight")
    rejects(check_log_mean_exp, lambda lw: torch.logsumexp(lw, 0) - math.log(len(lw) - 1), capsys, "log(K - 1)")
    rejects(check_log_mean_exp, lambda lw: torch.logsumexp(lw, 0) - math.log(len(lw) + 1), capsys, "log(K + 1)")
    rejects(check_log_mean_exp, lambda lw: torch.logsumexp(lw / len(lw), 0), capsys, "not logsumexp(log_w / K, 0)")
    # shifting by the global maximum is exact in float64 but underflows in the lesson's float32
    rejects(
        check_log_mean_exp,
        lambda lw: lw.max() + (lw - lw.max()).exp().mean(0).log(),
        capsys,
        "float32",
        "not by one global maximum",
    )
    rejects(check_log_mean_exp, lambda lw: vae.log_mean_exp(lw.double()), capsys, "keep the input's dtype")


# ------------------------------------------------------------ 5.6


def log_weights_reference(model, x, eps):
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    return model.log_joint(x, z) - Normal(mean, log_scale.exp()).log_prob(z).sum(-1)


def log_weights_by_parts(model, x, eps):
    # likelihood, prior and proposal written out, the proposal in terms of eps
    mean, log_scale = model.encoder(x)
    z = mean + torch.exp(log_scale) * eps
    prior = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
    log_q = (Normal(0.0, 1.0).log_prob(eps) - log_scale).sum(-1)
    return model.log_likelihood(x, z) + prior - log_q


def log_weights_independent(model, x, eps):
    mean, log_scale = model.encoder(x)
    q = torch.distributions.Independent(Normal(mean, log_scale.exp()), 1)
    z = mean + log_scale.exp() * eps
    return model.log_joint(x, z) - q.log_prob(z)


@pytest.mark.parametrize("fn", [log_weights_reference, log_weights_by_parts, log_weights_independent])
def test_log_weights_accepts_correct_answers(fn, capsys):
    accepts(check_log_weights, fn, capsys)


def _lw(model, x, eps, prior=True, proposal=True, sign=1, variance=False, mean_over_l=False):
    mean, log_scale = model.encoder(x)
    scale = log_scale.exp() ** 2 if variance else log_scale.exp()
    z = mean + scale * eps
    log_p = model.log_joint(x, z) if prior else model.log_likelihood(x, z)
    per_dim = Normal(mean, scale).log_prob(z)
    log_q = (per_dim.mean(-1) if mean_over_l else per_dim.sum(-1)) if proposal else 0.0
    return sign * (log_p - log_q)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda m, x, e: _lw(m, x, e, prior=False), "missing the prior"),
        (lambda m, x, e: _lw(m, x, e, proposal=False), "missing the proposal"),
        (lambda m, x, e: _lw(m, x, e, sign=-1), "upside down"),
        (lambda m, x, e: _lw(m, x, e, variance=True), "not the variance"),
        (lambda m, x, e: _lw(m, x, e, mean_over_l=True), "summed over the L latent dimensions"),
        (lambda m, x, e: _lw(m, x, torch.randn_like(e)), "use the draws eps you are given"),
        (lambda m, x, e: _lw(m, x, e).T, "one row per draw"),
        (lambda m, x, e: _lw(m, x, e).mean(0), "wrong shape"),
    ],
)
def test_log_weights_names_mistakes(fn, words, capsys):
    rejects(check_log_weights, fn, capsys, words)


def log_weights_without_constants(model, x, eps):  # -1/2 log(2 pi) left out of both densities: it cancels
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    return model.log_likelihood(x, z) - 0.5 * (z**2).sum(-1) + (0.5 * eps**2 + log_scale).sum(-1)


def test_log_weights_accepts_constants_that_cancel(capsys):
    accepts(check_log_weights, log_weights_without_constants, capsys)


def _parts(model, x, eps):
    mean, log_scale = model.encoder(x)
    return mean, log_scale, mean + log_scale.exp() * eps


def _lw_q(model, x, eps, log_q):  # log p(x, z) - log_q(mean, log_scale, z, eps), z the right draws
    mean, log_scale, z = _parts(model, x, eps)
    return model.log_joint(x, z) - log_q(mean, log_scale, z, eps)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (
            lambda m, x, e: _lw_q(m, x, e, lambda mu, ls, z, e: (-0.5 * e**2 - ls).sum(-1)),
            "log q(z | x) is missing its",
        ),
        (
            lambda m, x, e: (
                m.log_likelihood(x, _parts(m, x, e)[2])
                - 0.5 * (_parts(m, x, e)[2] ** 2).sum(-1)
                - Normal(_parts(m, x, e)[0], _parts(m, x, e)[1].exp()).log_prob(_parts(m, x, e)[2]).sum(-1)
            ),
            "log p(z) is missing its constant",
        ),
        (lambda m, x, e: _lw_q(m, x, e, lambda mu, ls, z, e: Normal(0.0, 1.0).log_prob(z).sum(-1)), "the prior's log"),
        (lambda m, x, e: _lw_q(m, x, e, lambda mu, ls, z, e: Normal(mu, ls).log_prob(z).sum(-1)), "scale must be"),
        (
            lambda m, x, e: _lw_q(m, x, e, lambda mu, ls, z, e: Normal(mu, ls.abs() + 1e-6).log_prob(z).sum(-1)),
            "log_scale is the log of the scale",
        ),
        (
            lambda m, x, e: _lw_q(
                m, x, e, lambda mu, ls, z, e: (-0.5 * ((z - mu) / ls) ** 2 - ls - _HALF_LOG_2PI).sum(-1)
            ),
            "log_scale is the log of the scale",
        ),
        (
            lambda m, x, e: _lw_q(
                m, x, e, lambda mu, ls, z, e: (-0.5 * ((z - mu) / ls) ** 2 - ls.log() - _HALF_LOG_2PI).sum(-1)
            ),
            "is log_scale used as a scale",
        ),
        (lambda m, x, e: _lw(m, x, torch.zeros_like(e)), "the noise is ignored"),
        (lambda m, x, e: _lw_q(m, x, e, lambda mu, ls, z, e: Normal(mu, ls.exp()).log_prob(z)), "(L, the latent"),
    ],
)
def test_log_weights_names_constants_scales_and_noise(fn, words, capsys):
    rejects(check_log_weights, fn, capsys, words)


# ------------------------------------------------------------ 5.4


def step_zero_grad_last(elbo, model, optimizer, x, eps):
    values = elbo(x, model, eps)
    (-values.mean()).backward()
    optimizer.step()
    optimizer.zero_grad()  # after the step instead of before: the same, since the next step starts clean
    return values.detach()


def step_model_zero_grad(elbo, model, optimizer, x, eps):
    model.zero_grad()
    values = elbo(x, model, eps)
    loss = -values.sum() / len(x)  # the mean, written out
    loss.backward()
    optimizer.step()
    return values.detach().clone()


def step_float_loss(elbo, model, optimizer, x, eps):
    optimizer.zero_grad(set_to_none=False)
    values = elbo(x, model, eps)
    torch.mean(-values).backward()
    optimizer.step()
    return torch.tensor(values.tolist(), dtype=values.dtype)


@pytest.mark.parametrize("fn", [vae.training_step, step_zero_grad_last, step_model_zero_grad, step_float_loss])
def test_training_step_accepts(fn, capsys):
    accepts(check_training_step, fn, capsys)


def _step(sign=-1.0, reduce="mean", zero_grad=True, step=True, detach=True, noise=None, returns="values"):
    def training_step(elbo, model, optimizer, x, eps):
        values = elbo(x, model, eps if noise is None else noise(eps))
        loss = sign * (values.mean() if reduce == "mean" else values.sum())
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        if step:
            optimizer.step()
        if returns == "loss":
            return loss.detach()
        if returns == "none":
            return None
        return values.detach() if detach else values

    return training_step


def step_own_optimizer(elbo, model, optimizer, x, eps):  # ignores the optimizer it is given
    own = torch.optim.Adam(model.parameters(), lr=1e-3)
    values = elbo(x, model, eps)
    own.zero_grad()
    (-values.mean()).backward()
    own.step()
    return values.detach()


@pytest.mark.parametrize(
    "fn, words",
    [
        (_step(sign=1.0), "moved away from higher ELBO"),
        (_step(reduce="sum"), "sums the batch's ELBOs"),
        (_step(zero_grad=False), "optimizer.zero_grad() every step"),
        (_step(step=False), "optimizer.step() was called 0 times"),
        (_step(detach=False), "detached"),
        (_step(noise=torch.randn_like), "use the draws eps you are given"),
        (_step(returns="loss"), "one per image"),
        (_step(returns="none"), "returned None"),
        (step_own_optimizer, "call the optimizer you are given"),
    ],
)
def test_training_step_names_mistakes(fn, words, capsys):
    rejects(check_training_step, fn, capsys, words)


# ------------------------------------------------------------ 5.8


def _mixture_log_ratio(z, mean, log_scale):
    from torch.distributions import Categorical, Independent, MixtureSameFamily

    mixture = MixtureSameFamily(
        Categorical(logits=torch.zeros(mean.shape[0], dtype=mean.dtype)), Independent(Normal(mean, log_scale.exp()), 1)
    )
    return mixture.log_prob(z) - Independent(Normal(torch.zeros_like(z), 1.0), 1).log_prob(z)


def _by_hand(z, mean, log_scale):
    d = (z[:, None, :] - mean) / log_scale.exp()
    log_comp = (-0.5 * d**2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)  # (M, N)
    top = log_comp.max(1, keepdim=True).values
    log_q = top[:, 0] + torch.log(torch.exp(log_comp - top).sum(1)) - math.log(mean.shape[0])
    return log_q - (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize(
    "fn",
    [
        lambda z, m, ls: vae.aggregate_log_density(z, m, ls) - Normal(0.0, 1.0).log_prob(z).sum(-1),
        _mixture_log_ratio,
        _by_hand,
        lambda z, m, ls: (
            torch.logsumexp(Normal(m, ls.exp()).log_prob(z.unsqueeze(1)).sum(2), 1)
            - math.log(len(m))
            - Normal(0.0, 1.0).log_prob(z).sum(1)
        ),
    ],
)
def test_aggregate_log_ratio_accepts(fn, capsys):
    accepts(check_aggregate_log_ratio, fn, capsys)


def _log_components(z, m, ls):
    return Normal(m, ls.exp()).log_prob(z[:, None, :]).sum(-1)


def _log_prior(z):
    return Normal(0.0, 1.0).log_prob(z).sum(-1)


def test_aggregate_log_ratio_names_mistakes(capsys):
    check = check_aggregate_log_ratio
    rejects(check, lambda z, m, ls: torch.logsumexp(_log_components(z, m, ls), 1) - _log_prior(z), capsys, "-log N")
    rejects(check, lambda z, m, ls: _log_components(z, m, ls).mean(1) - _log_prior(z), capsys, "averages the N log")
    rejects(
        check,
        lambda z, m, ls: torch.logsumexp(_log_components(z, m, ls), 1) - math.log(len(m)),
        capsys,
        "missing the prior",
    )
    rejects(
        check,
        lambda z, m, ls: _log_prior(z) - torch.logsumexp(_log_components(z, m, ls), 1) + math.log(len(m)),
        capsys,
        "upside down",
    )
    rejects(
        check,
        lambda z, m, ls: _log_components(z, m, ls).max(1).values - math.log(len(m)) - _log_prior(z),
        capsys,
        "nearest component",
    )
    rejects(
        check,
        lambda z, m, ls: torch.log(_log_components(z, m, ls).exp().mean(1)) - _log_prior(z),
        capsys,
        "at draws of the prior",
        "logsumexp",
    )
    rejects(
        check,
        lambda z, m, ls: (torch.logsumexp(_log_components(z, m, ls), 1) - math.log(len(m)) - _log_prior(z)).mean(),
        capsys,
        "returned one number",
    )
    rejects(check, lambda z, m, ls: _log_components(z, m, ls) - _log_prior(z)[:, None], capsys, "one value per draw")
    rejects(
        check,
        lambda z, m, ls: (
            torch.logsumexp(Normal(m, (2 * ls).exp()).log_prob(z[:, None, :]).sum(-1), 1)
            - math.log(len(m))
            - _log_prior(z)
        ),
        capsys,
        "not exp(2 log_scale)",
    )
    lse = lambda z, m, ls: torch.logsumexp(_log_components(z, m, ls), 1) - math.log(len(m))  # noqa: E731
    rejects(
        check, lambda z, m, ls: lse(z, m, ls) - Normal(0.0, 1.0).log_prob(z).mean(-1), capsys, "prior's log density"
    )
    rejects(
        check,
        lambda z, m, ls: (
            torch.logsumexp(Normal(m, ls.exp()).log_prob(z[:, None, :]).mean(-1), 1) - math.log(len(m)) - _log_prior(z)
        ),
        capsys,
        "each component's log density must be summed",
    )
    # the log-sum-exp over the points (dim 0): a broadcasting error at M != N, named from a call at M = N
    rejects(
        check,
        lambda z, m, ls: torch.logsumexp(_log_components(z, m, ls), 0) - math.log(len(z)) - _log_prior(z),
        capsys,
        "combined over the wrong axis",
        "along the N components (dim 1)",
    )
    rejects(
        check,
        lambda z, m, ls: (_log_components(z, m, ls) - _log_prior(z)[:, None]).mean(0),
        capsys,
        "one value per image's Gaussian",
    )


def test_training_step_names_an_ignored_elbo_argument(capsys):
    def ignores_elbo(elbo, model, optimizer, x, eps):
        values = vae.VAE.elbo(model, x)  # a function of the notebook's, not the one it is given
        loss = -values.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return values.detach()

    rejects(check_training_step, ignores_elbo, capsys, "never called the `elbo` it is given")


def test_log_weights_names_a_ratio_of_exponentials_at_the_lessons_scale(capsys):
    def ratio(model, x, eps):
        mean, log_scale = model.encoder(x)
        z = mean + log_scale.exp() * eps
        q = Normal(mean, log_scale.exp()).log_prob(z).sum(-1).exp()
        return torch.log(model.log_joint(x, z).exp() / q)

    rejects(check_log_weights, ratio, capsys, "at the lesson's scale", "difference of logs")


# ------------------------------------------------------------ 5.9


def _draws(m, ls, e):
    return vae.reparameterize(m, ls, e)  # (S, N, L): z[s, i] ~ q(z | x_i)


def _table(m, ls, e):  # (S, N, N): log q(z_si | x_j), draw (s, i) against encoder j
    return Normal(m, ls.exp()).log_prob(_draws(m, ls, e)[..., None, :]).sum(-1)


def _own(m, ls, e):  # (S, N): each draw under the encoder it came from
    return Normal(m, ls.exp()).log_prob(_draws(m, ls, e)).sum(-1)


def information_by_table(m, ls, e):
    return (_own(m, ls, e) - torch.logsumexp(_table(m, ls, e), -1) + math.log(len(m))).mean()


def information_by_mixture(m, ls, e):
    from torch.distributions import Categorical, Independent, MixtureSameFamily

    S, N, L = e.shape
    mixture = MixtureSameFamily(Categorical(logits=torch.zeros(N, dtype=m.dtype)), Independent(Normal(m, ls.exp()), 1))
    log_q = (Normal(0.0, 1.0).log_prob(e) - ls).sum(-1)  # log q(z | x_i) in terms of the noise
    return (log_q - mixture.log_prob(_draws(m, ls, e).reshape(S * N, L)).reshape(S, N)).sum() / (S * N)


def information_through_the_ratio(m, ls, e):  # log q - log p - (log q_bar - log p), with 5.8's ratio right
    S, N, L = e.shape
    z = _draws(m, ls, e)
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    ratio = vae.aggregate_log_density(z.reshape(-1, L), m, ls).reshape(S, N) - log_prior
    return (_own(m, ls, e) - log_prior - ratio).mean()


def information_by_loop(m, ls, e):  # one encoder at a time, accumulated with logaddexp; the mean of densities
    z = _draws(m, ls, e)
    acc = torch.full(z.shape[:-1], -math.inf, dtype=z.dtype)
    for j in range(len(m)):
        acc = torch.logaddexp(acc, Normal(m[j], ls[j].exp()).log_prob(z).sum(-1))
    return torch.mean(_own(m, ls, e) - acc) + math.log(len(m))


def information_in_densities(m, ls, e):  # exp of log densities: fine here, since the draw's own term is never 0
    return (_own(m, ls, e) - _table(m, ls, e).exp().mean(-1).log()).mean()


@pytest.mark.parametrize(
    "fn",
    [
        vae.mutual_information,
        information_by_table,
        information_by_mixture,
        information_through_the_ratio,
        information_by_loop,
        information_in_densities,
    ],
)
def test_mutual_information_accepts(fn, capsys):
    accepts(check_mutual_information, fn, capsys)


def _information(m, ls, e, log_q_bar=None, reduce=torch.mean, sign=1.0):
    """The estimate with one piece swapped: ``log_q_bar(table, m, ls, e)``, the reduction, the sign."""
    table = _table(m, ls, e)
    bar = torch.logsumexp(table, -1) - math.log(len(m)) if log_q_bar is None else log_q_bar(table, m, ls, e)
    return sign * reduce(_own(m, ls, e) - bar)


def _leave_own_out(table, m, ls, e):
    others = table.masked_fill(torch.eye(len(m), dtype=torch.bool), -math.inf)
    return torch.logsumexp(others, -1) - math.log(len(m) - 1)


def _ratio_without_log_n(z, m, ls):  # a 5.8 that forgets -log N
    return torch.logsumexp(_log_components(z, m, ls), 1) - _log_prior(z)


def _ratio_upside_down(z, m, ls):  # a 5.8 with its ratio reversed
    return _log_prior(z) - torch.logsumexp(_log_components(z, m, ls), 1) + math.log(len(m))


def _through(ratio):
    def information(m, ls, e):
        S, N, L = e.shape
        z = _draws(m, ls, e)
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        return (_own(m, ls, e) - log_prior - ratio(z.reshape(-1, L), m, ls).reshape(S, N)).mean()

    return information


def _ratio_still_a_stub(z, m, ls):
    raise NotImplementedError("Exercise 5.8: the log density ratio of the aggregate posterior to the prior")


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda m, ls, e: _information(m, ls, e, lambda t, m, ls, e: _log_prior(_draws(m, ls, e))), ("average KL",)),
        (lambda m, ls, e: _information(m, ls, e, lambda t, *_: t.mean(-1)), ("averages the N log densities",)),
        (lambda m, ls, e: _information(m, ls, e, lambda t, *_: torch.logsumexp(t, -1)), ("missing log N",)),
        (
            lambda m, ls, e: _information(m, ls, e, lambda t, *_: torch.logsumexp(t, 1) - math.log(len(t[0]))),
            ("draws",),
        ),
        (lambda m, ls, e: _information(m, ls, e, reduce=lambda t: t.mean(0).sum()), ("summed over the N images",)),
        (lambda m, ls, e: _information(m, ls, e, reduce=lambda t: t.sum(0).mean()), ("summed over the S draws",)),
        (lambda m, ls, e: _information(m, ls, e, sign=-1.0), ("upside down", "never negative")),
        (lambda m, ls, e: _information(m, ls, e, _leave_own_out), ("own encoder is left out",)),
        (lambda m, ls, e: _information(m, ls, e, lambda t, *_: t.max(-1).values - math.log(len(t[0]))), ("max",)),
        (lambda m, ls, e: _information(m, ls, e, reduce=lambda t: t.mean(0)), ("return one number",)),
        (lambda m, ls, e: _information(m, ls, torch.randn_like(e)), ("use the draws eps you are given",)),
        (_through(_ratio_without_log_n), ("missing log N",)),
        # the numerator from the noise, as hint 2 allows, with a slip the table of log densities does not have
        (
            lambda m, ls, e: (
                (-0.5 * e**2 - ls).sum(-1) - torch.logsumexp(_table(m, ls, e), -1) + math.log(len(m))
            ).mean(),
            ("misses its constant", "the same log density"),
        ),
        (
            lambda m, ls, e: (
                (Normal(0.0, 1.0).log_prob(e) - 2 * ls).sum(-1)
                - torch.logsumexp(_table(m, ls, e), -1)
                + math.log(len(m))
            ).mean(),
            ("log sigma^2 where the log density has log sigma",),
        ),
        (
            lambda m, ls, e: (
                _own(m, ls, e)
                - (
                    torch.logsumexp(Normal(m, ls.exp()).log_prob(_draws(m, ls, e)[..., None, :]), 2) - math.log(len(m))
                ).sum(-1)
            ).mean(),
            ("product of per-coordinate mixtures",),
        ),
        (_through(_ratio_upside_down), ("exercise 5.8", "upside down")),
        (_through(_ratio_still_a_stub), ("exercise 5.8's function, which is still a stub",)),
        # the draws against the encoders without lining the axes up: (S, N, L) against (N, L) pairs each draw with
        # its own encoder only, and the log-sum-exp then runs over the S draws, or meets the N images' axis
        (lambda m, ls, e: (_own(m, ls, e) - torch.logsumexp(_own(m, ls, e), 0)).mean() + math.log(len(m)), ("only",)),
        (
            lambda m, ls, e: (_own(m, ls, e) - torch.logsumexp(_own(m, ls, e), -1) + math.log(len(m))).mean(),
            ("sizes 7 (N, the images) and 3 (S, the draws per image) met", "(S, N, N) table"),
        ),
    ],
)
def test_mutual_information_names_mistakes(fn, words, capsys):
    rejects(check_mutual_information, fn, capsys, *words)


# ------------------------------------------------------------ every checker of the lesson


_CHECKS = [check_vae_elbo, check_log_weights, check_aggregate_log_ratio, check_mutual_information]


@pytest.mark.parametrize("check", _CHECKS)
@pytest.mark.parametrize("bad", BAD_ANSWERS)
def test_a_checker_reports_any_answer_and_never_raises(check, bad, capsys):
    never_raises(check, bad, capsys)


@pytest.mark.parametrize("check", _CHECKS)
def test_a_stub_reads_not_attempted(check, capsys):
    reads_not_attempted(check, capsys)


@pytest.mark.parametrize(
    ("check", "answer"),
    [
        (check_vae_elbo, elbo_ref),
        (check_log_weights, log_weights_reference),
        (check_aggregate_log_ratio, lambda z, m, ls: vae.aggregate_log_density(z, m, ls) - _log_prior(z)),
        (check_mutual_information, information_by_table),
    ],
)
def test_the_graders_replay_confirms_a_right_answer(check, answer, tmp_path):
    replays_to_passed(check, answer, tmp_path)
