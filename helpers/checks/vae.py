r"""Checkers for the variational-autoencoder exercises (lesson 05).

References: :mod:`helpers.vae`. Each is compared on fixed inputs (and fixed
noise), with the values of common mistakes named.
"""

import copy
import math

import torch
from torch.distributions import Normal, kl_divergence

from .. import vae
from ._core import (
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

_F64 = torch.float64


def _gaussian_params():
    mean = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]], dtype=_F64, requires_grad=True)
    log_scale = torch.tensor([[-0.5, 0.2, -1.5], [0.4, -0.1, 0.0]], dtype=_F64, requires_grad=True)
    return mean, log_scale


def _binomial_problem(dtype):
    """Pixel counts 0..16 (every value, at every logit) and logits from -40 to 40, where sigmoid rounds to 0 or 1."""
    counts = torch.arange(17, dtype=dtype).repeat(9)  # (153,)
    logits = torch.linspace(-40.0, 40.0, 153, dtype=dtype)
    return counts, logits


def _binomial_variants(x, logits, n):
    x, l = x.double(), logits.double()
    sp = torch.nn.functional.softplus
    log_choose = torch.lgamma(torch.tensor(n + 1.0, dtype=_F64)) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)
    ref = torch.distributions.Binomial(n, logits=l).log_prob(x)
    return ref, {
        "missing log C(n, x): the Binomial counts the ways to choose which x of the n sub-pixels are on "
        "(torch.lgamma gives log k!)": ref - log_choose,
        "x and n - x are swapped: x counts the 'on' sub-pixels, which have probability sigmoid(logit)": log_choose
        + (n - x) * l
        - n * sp(l),
        "log(1 - sigmoid(l)) = -softplus(l) and log sigmoid(l) = l - softplus(l): the sign inside softplus is off": (
            log_choose + x * l - n * sp(-l)
        ),
        "that is a Bernoulli (n = 1): each of the n trials contributes softplus(l), so the term is n * softplus(l)": (
            log_choose + x * l - sp(l)
        ),
        "the failures' term is missing: (n - x) log(1 - sigmoid(l)) = -(n - x) softplus(l)": log_choose
        + x * (l - sp(l)),
    }


@checker("5.1", "the Binomial log-likelihood in logits")
def check_binomial_log_likelihood(binomial_log_likelihood):
    r"""Compare with ``torch.distributions.Binomial(n, logits=...).log_prob`` in float64, first at moderate logits
    (where a form through ``log(sigmoid)`` is still right), then over logits from -40 to 40 in float32, the lesson's
    dtype, where ``sigmoid`` rounds to 0 or 1; the gradient in the logits too (training differentiates it)."""
    n = 16
    x, logits = _binomial_problem(_F64)
    mild = (logits / 8).requires_grad_(True)
    out = as_tensor_result(call_learner(binomial_log_likelihood, x, mild, n))
    if out.dim() == 0:
        fail("returned one number: return one log-probability per count, elementwise (the model sums them itself)")
    expect_shape(out, x.shape, " (one log-probability per pixel count, elementwise)")
    expect_finite(out, " at logits between -5 and 5")
    ref, mistakes = _binomial_variants(x, mild.detach(), n)
    diagnose(out.detach().double(), ref, mistakes, context=" (counts 0 to 16, n = 16)")
    expect_gradient(
        out,
        (mild,),
        torch.distributions.Binomial(n, logits=mild).log_prob(x),
        ("logits",),
        " (training differentiates the likelihood in the decoder's logits)",
    )
    x32, logits32 = _binomial_problem(torch.float32)
    wide = as_tensor_result(call_learner(binomial_log_likelihood, x32, logits32, n))
    expect_finite(
        wide,
        " in float32 at logits beyond about +-17, where sigmoid(l) rounds to exactly 1 or 0 and its log is -inf: "
        "write log sigmoid(l) and log(1 - sigmoid(l)) with softplus, which never forms the probability",
    )
    ref32, _ = _binomial_variants(x32, logits32, n)
    diagnose(wide.double(), ref32, {}, context=" at logits from -40 to 40 in float32", rtol=1e-5, atol=1e-3)
    return "matches Binomial(16, logits=l).log_prob(x) for every count, stable at logits from -40 to 40 in float32."


@checker("5.2", "KL to the standard normal in closed form")
def check_kl_standard_normal(kl_standard_normal):
    mean_grad, log_scale_grad = _gaussian_params()
    mean, log_scale = mean_grad.detach(), log_scale_grad.detach()
    out = as_tensor_result(call_learner(kl_standard_normal, mean_grad, log_scale_grad))
    if out.shape == mean.shape:
        fail(f"returned shape {tuple(out.shape)}, one KL per coordinate; sum over the latent dimensions (last axis)")
    expect_shape(out, (mean.shape[0],), " (one KL per data point)")
    expect_finite(out)
    s2 = (2 * log_scale).exp()
    ref = kl_divergence(Normal(mean, log_scale.exp()), Normal(0.0, 1.0)).sum(-1)
    diagnose(
        out.detach(),
        ref,
        {
            "missing the factor 1/2: KL = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)": 2 * ref,
            "sigma^2 = exp(2 log_scale), not exp(log_scale)": 0.5
            * (mean**2 + log_scale.exp() - 1 - 2 * log_scale).sum(-1),
            "log sigma^2 = 2 log_scale, not log_scale": 0.5 * (mean**2 + s2 - 1 - log_scale).sum(-1),
            "missing the -1 per dimension: KL = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)": 0.5
            * (mean**2 + s2 - 2 * log_scale).sum(-1),
            "missing mu^2: the KL grows as the mean moves away from 0": 0.5 * (s2 - 1 - 2 * log_scale).sum(-1),
            "sign error: a KL is never negative": -ref,
            "averaged over the latent dimensions; sum them": ref / mean.shape[1],
            "log_scale is log sigma, not log sigma^2: sigma^2 = exp(2 log_scale) and log sigma^2 = 2 log_scale": 0.5
            * (mean**2 + log_scale.exp() - 1 - log_scale).sum(-1),
            "that is KL(prior || q), the other direction; the ELBO needs KL(q || prior)": kl_divergence(
                Normal(0.0, 1.0), Normal(mean, log_scale.exp())
            ).sum(-1),
        },
    )
    expect_gradient(
        out,
        (mean_grad, log_scale_grad),
        kl_divergence(Normal(mean_grad, log_scale_grad.exp()), Normal(0.0, 1.0)).sum(-1),
        ("mean", "log_scale"),
        " (training differentiates the KL)",
    )
    zero = as_tensor_result(
        call_learner(kl_standard_normal, torch.zeros(1, 3, dtype=_F64), torch.zeros(1, 3, dtype=_F64))
    )
    if not torch.allclose(zero, torch.zeros(1, dtype=_F64), atol=1e-12):
        fail("KL(N(0, I) || N(0, I)) must be 0")
    return "matches torch.distributions.kl_divergence, and is 0 at the prior."


def _vae_problem():
    torch.manual_seed(0)
    model = vae.VAE(D=6, L=2, hidden=(5,), n_trials=16).to(_F64)
    torch.nn.init.normal_(model.encoder.net[-1].weight, std=0.3)  # away from the zero start
    x = torch.tensor([[0, 3, 16, 8, 1, 12], [5, 0, 2, 16, 9, 7], [16, 16, 0, 0, 4, 2]], dtype=_F64)
    eps = torch.randn(4, 3, 2, dtype=_F64)  # S = 4 draws, B = 3 images: the two axes cannot be confused
    return model, x, eps


def _elbo_variant(model, x, eps, kl="closed", reduce_draws=lambda t: t.mean(0)):
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    rec = reduce_draws(model.log_likelihood(x, z))
    if kl == "closed":
        return rec - vae.kl_standard_normal(mean, log_scale)
    if kl == "entropy":  # E_q[log p(x, z)] + H[q]: the prior's expectation by Monte Carlo, the entropy exact
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        return reduce_draws(model.log_likelihood(x, z) + log_prior) + Normal(mean, log_scale.exp()).entropy().sum(-1)
    if kl == "monte carlo":
        log_q = Normal(mean, log_scale.exp()).log_prob(z).sum(-1)
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        return rec - (log_q - log_prior).mean(0)
    return rec


def _elbo_log_variance(model, x, eps):
    mean, log_scale = model.encoder(x)
    z = mean + (0.5 * log_scale).exp() * eps
    kl = 0.5 * (mean**2 + log_scale.exp() - 1 - log_scale).sum(-1)
    return (model.log_likelihood(x, z).mean(0) - kl).detach()


def _grads(out, model, learner=False):
    take = learner_grad if learner else torch.autograd.grad
    grads = take(out.sum(), list(model.parameters()), allow_unused=True, retain_graph=True)
    if any(g is None for g in grads):
        fail(
            "some weights of the encoder or decoder get no gradient: use model.encoder(x), "
            "z = mean + exp(log_scale) * eps, and model.log_likelihood(x, z)"
        )
    return flat(*grads)


def _elbo_sticking_the_landing(model, x, eps):
    """The Monte Carlo KL with log q's parameters held fixed (Roeder et al. 2017): same value, a valid gradient."""
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    log_q = Normal(mean.detach(), log_scale.exp().detach()).log_prob(z).sum(-1)
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    return (model.log_likelihood(x, z) + log_prior - log_q).mean(0)


@checker("5.3", "the batch ELBO of the VAE")
def check_vae_elbo(vae_elbo):
    model, x, eps = _vae_problem()
    out = as_tensor_result(call_learner(vae_elbo, x, model, eps))
    B = x.shape[0]
    if out.dim() == 0:
        fail(f"returned one number; return one ELBO per data point, shape ({B},) (training takes the mean)")
    expect_shape(out, (B,), " (one ELBO per data point)")
    expect_finite(out)
    if not out.requires_grad:
        fail("no gradient reaches the encoder and decoder: keep every step in torch, without .detach()")
    again = as_tensor_result(call_learner(vae_elbo, x, model, eps))
    if not torch.equal(out.detach(), again.detach()):
        fail("two calls with the same eps gave different ELBOs: use the noise eps you are given, do not draw new noise")
    for kl in ("closed", "monte carlo", "entropy"):
        ref = _elbo_variant(model, x, eps, kl)
        if torch.allclose(out.detach(), ref.detach(), rtol=1e-6, atol=1e-9):
            grads = _grads(out, model, learner=True)
            accepted = [_grads(ref, model)]
            if kl == "monte carlo":  # sticking the landing: the same value, another unbiased gradient
                accepted.append(_grads(_elbo_sticking_the_landing(model, x, eps), model))
            if not any(torch.allclose(grads, a, rtol=1e-6, atol=1e-9) for a in accepted):
                fail("the value is right, but not its gradients: let z depend on mean and log_scale (no .detach())")
            return "matches the ELBO per data point, E_q[log p(x | z)] - KL(q || prior), and its gradients."
    ref = _elbo_variant(model, x, eps)
    rec = _elbo_variant(model, x, eps, kl="none")
    kl_value = (rec - ref).detach()
    named_kl_slips = {
        "missing the KL term: ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))": rec.detach(),
        "the KL is subtracted, not added: ELBO = E_q[log p(x | z)] - KL": (rec + kl_value).detach(),
    }
    if not any(torch.allclose(out.detach(), v, rtol=1e-6, atol=1e-9) for v in named_kl_slips.values()):
        _name_a_wrong_kl(vae_elbo, model, x, eps, out.detach() - ref.detach())
    diagnose(
        out.detach(),
        ref.detach(),
        {
            **named_kl_slips,
            "summed the reconstruction term over the S draws; average it": _elbo_variant(
                model, x, eps, reduce_draws=lambda t: t.sum(0)
            ).detach(),
            "sign error: return the ELBO itself (training minimises loss = -elbo.mean())": -ref.detach(),
            "log_scale is log sigma, not log sigma^2: z = mean + exp(log_scale) * eps": (
                _elbo_log_variance(model, x, eps)
            ),
        },
        context=" (3 digits-like images, 4 fixed draws each)",
    )
    fail("does not match")  # unreachable: diagnose fails on any mismatch


def _name_a_wrong_kl(vae_elbo, model, x, eps, gap):
    """The learner's 5.3 usually takes its KL from their 5.2. A KL term that is wrong leaves the reconstruction
    term right, so the ELBO is off by the same amount whatever the draws eps: check that on fresh draws, and say
    which exercise to fix. (Only the learner's ``vae_elbo`` is called, so the grader's replay sees the same.)"""
    if torch.allclose(gap, torch.zeros_like(gap), rtol=0, atol=1e-9):
        return
    other = torch.randn(eps.shape, dtype=eps.dtype, generator=torch.Generator().manual_seed(53))
    again = as_tensor_result(call_learner(vae_elbo, x, model, other)).detach()
    if again.shape != gap.shape or not torch.allclose(again - _elbo_variant(model, x, other).detach(), gap, 1e-6, 1e-9):
        return  # the gap moves with the draws: not the KL alone
    true_kl = (_elbo_variant(model, x, eps, kl="none") - _elbo_variant(model, x, eps)).detach()

    def listed(values):
        return ", ".join(f"{v:.4g}" for v in values.tolist())

    fail(
        f"the reconstruction term is right, but the KL term is not: your ELBO is off by the same amount for any "
        f"draws eps ({listed(gap)} nats for the 3 images), so the KL it subtracts is {listed(true_kl - gap)} where "
        f"KL(q(z | x) || N(0, I)) is {listed(true_kl)}. If your ELBO uses kl_standard_normal from exercise 5.2, fix "
        "that first: its check names the mistake"
    )


class _CountingSGD(torch.optim.SGD):
    """Plain SGD (a step proportional to the gradient, so a summed loss shows) that counts its calls."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def _closed_form_elbo(x, model, eps):
    return _elbo_variant(model, x, eps)


def _step_variant(model, optimizer, x, eps, sign=-1.0, reduce="mean", zero_grad=True, step=True):
    """One training step as the reference takes it, or with one piece changed (a plausible mistake)."""
    values = _closed_form_elbo(x, model, eps)
    loss = sign * (values.mean() if reduce == "mean" else values.sum())
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if step:
        optimizer.step()
    return values.detach()


def _two_steps(step_fn, model, x, draws, lr=0.05, learner=False):
    """Copy ``model``, take one step per element of ``draws`` with a fresh counting SGD; return (copy, outputs, opt)."""
    copy_ = copy.deepcopy(model)
    optimizer = _CountingSGD(copy_.parameters(), lr=lr)
    outs, calls = [], []

    def elbo(x_, model_, eps_):  # the reference ELBO, counting the calls: the step must use the one it is given
        calls.append(1)
        return _closed_form_elbo(x_, model_, eps_)

    for eps in draws:
        outs.append(call_learner(step_fn, *(((elbo,) if learner else ()) + (copy_, optimizer, x, eps))))
    if learner and not calls:
        fail(
            "your training_step never called the `elbo` it is given (its first argument): compute the batch's "
            "ELBOs with values = elbo(x, model, eps), not with a function from the notebook, so that the loop "
            "can pass in whichever ELBO it trains"
        )
    return copy_, outs, optimizer


def _weights(model):
    return flat(*(p.detach() for p in model.parameters()))


@checker("5.4", "one training step of the VAE")
def check_training_step(training_step):
    r"""Take two steps with the learner's function and with the reference (:func:`helpers.vae.training_step`)
    from the same float64 VAE, with plain SGD (so a summed loss moves the weights ``B`` times as far) and the
    closed-form ELBO; compare the weights after both steps (a missing ``zero_grad`` shows in the second) and the
    returned ELBOs, and name the slips: a sign, a sum, no ``zero_grad``, no step, fresh noise."""
    model, x, eps = _vae_problem()
    draws = (eps, torch.randn_like(eps))
    learner_model, outs, optimizer = _two_steps(training_step, model, x, draws, learner=True)
    for k, out in enumerate(outs):
        if out is None:
            fail("returned None; return the batch's ELBOs (values.detach()), which the training loop records")
        out = as_tensor_result(out)
        if out.dim() == 0:
            fail(f"returned one number; return the batch's ELBOs, one per image, shape ({x.shape[0]},)")
        expect_shape(out, (x.shape[0],), " (the batch's ELBOs, one per image)")
        if out.requires_grad:
            fail(
                "return the ELBOs detached (values.detach()): the loop only records them, and an attached graph "
                "keeps every step's activations in memory"
            )
        outs[k] = out
    if optimizer.steps != len(draws):
        fail(
            f"optimizer.step() was called {optimizer.steps} times in {len(draws)} calls: call the optimizer you are "
            "given exactly once per training step, after loss.backward()"
        )
    again_model, _, _ = _two_steps(training_step, model, x, draws, learner=True)
    if not torch.equal(_weights(again_model), _weights(learner_model)):
        fail("two runs with the same eps moved the weights differently: use the draws eps you are given")
    ref_model, ref_outs, _ = _two_steps(lambda m, o, x_, e: _step_variant(m, o, x_, e), model, x, draws)
    got, start = _weights(learner_model), _weights(model)
    variants = {
        "the weights moved away from higher ELBO: the loss is -elbo.mean() (optimisers minimise), not +elbo": {
            "sign": 1.0
        },
        "the loss sums the batch's ELBOs; take the mean (-elbo.mean()), so that the step's size does not grow "
        "with the batch size": {"reduce": "sum"},
        "the second step moved too far: call optimizer.zero_grad() every step, before loss.backward(), or the "
        "gradients of earlier steps accumulate": {"zero_grad": False},
    }
    if torch.equal(got, start):
        fail("the weights did not move: call loss.backward() and then optimizer.step()")
    if not close(got, _weights(ref_model), rtol=1e-7, atol=1e-10):
        for message, kwargs in variants.items():
            wrong, _, _ = _two_steps(lambda m, o, x_, e, kw=kwargs: _step_variant(m, o, x_, e, **kw), model, x, draws)
            if close(got, _weights(wrong), rtol=1e-7, atol=1e-10):
                fail(message)
        fail(
            "after two steps the weights differ from the reference's: compute values = vae_elbo(x, model, eps), "
            "loss = -values.mean(), then optimizer.zero_grad(), loss.backward(), optimizer.step()"
        )
    for k, (out, ref) in enumerate(zip(outs, ref_outs, strict=True)):
        if not close(out, ref, rtol=1e-7, atol=1e-10):
            fail(
                f"the weights are right, but step {k + 1} returned {fmt(out[0])} for the first image instead of its "
                f"ELBO {fmt(ref[0])}: return the values the step was computed from, before optimizer.step()"
            )
    return "two steps move the weights exactly as -elbo.mean() with zero_grad, backward and step do."


@checker("5.5", "log-mean-exp for the IWAE bound")
def check_log_mean_exp(log_mean_exp):
    log_w = torch.tensor([[-3.0, -120.0], [-1.0, -121.5], [-2.5, -119.0], [-4.0, -125.0]], dtype=_F64)
    out = as_tensor_result(call_learner(log_mean_exp, log_w))
    K = log_w.shape[0]
    if out.shape == (K,):
        fail("averaged over the wrong axis: the K weights are along dim 0; return one value per data point")
    expect_shape(out, (log_w.shape[1],), " (one value per data point: average over dim 0)")
    ref = torch.logsumexp(log_w, 0) - math.log(K)
    diagnose(
        out,
        ref,
        {
            "missing -log K: the bound averages the K weights, log (1/K) sum_k w_k": torch.logsumexp(log_w, 0),
            "that is the mean of the log-weights, the ELBO estimate; IWAE averages the weights themselves, "
            "in log space: logsumexp(log_w, 0) - log K": log_w.mean(0),
            "that is log of the largest weight; average all K weights: logsumexp(log_w, 0) - log K": log_w.max(
                0
            ).values,
            "subtracts log(K - 1); the mean of K weights divides by K: logsumexp(log_w, 0) - log K": torch.logsumexp(
                log_w, 0
            )
            - math.log(K - 1),
            "subtracts log(K + 1); the mean of K weights divides by K: logsumexp(log_w, 0) - log K": torch.logsumexp(
                log_w, 0
            )
            - math.log(K + 1),
            "divides by K inside the log of the sum's exponent: log((1/K) sum_k w_k) = logsumexp(log_w, 0) - log K, "
            "not logsumexp(log_w / K, 0)": torch.logsumexp(log_w / K, 0),
        },
    )
    far = as_tensor_result(call_learner(log_mean_exp, log_w - 2000.0))
    expect_finite(far, " for log-weights near -2000: exp underflows to 0; use torch.logsumexp")
    diagnose(far, ref - 2000.0, {}, context=" for log-weights near -2000")
    high = as_tensor_result(call_learner(log_mean_exp, log_w + 2000.0))
    expect_finite(high, " for log-weights near +2000: exp overflows; use torch.logsumexp")
    # the lesson's dtype: float32, with data points whose log-weights differ by hundreds of nats
    wide = torch.tensor([[-3.0, -250.0], [-1.0, -251.5], [-2.5, -249.0], [-4.0, -255.0]], dtype=torch.float32)
    out32 = as_tensor_result(call_learner(log_mean_exp, wide))
    expect_finite(
        out32,
        " in float32, the lesson's dtype, for two data points whose log-weights differ by 250 nats: shift each "
        "column by its own maximum (keepdim along dim 0), not by one global maximum, or use torch.logsumexp",
    )
    if out32.dtype != torch.float32:
        fail(f"returned {out32.dtype} for float32 log-weights: keep the input's dtype (the lesson runs in float32)")
    diagnose(out32, torch.logsumexp(wide.double(), 0) - math.log(K), {}, " in float32", rtol=1e-6, atol=1e-4)
    return "averages the weights in log space, stable for log-weights of any size."


@checker("5.6", "the importance log-weights of the encoder")
def check_log_weights(log_weights):
    r"""Compare with :meth:`helpers.vae.VAE.log_weights` on a small float64 VAE (K = 4 draws, B = 3 images, so
    the axes cannot be confused), and name the slips: a missing prior or proposal term, the ratio upside
    down, a variance for a scale, ``log q`` not summed over the latent dimensions, fresh noise."""
    model, x, eps = _vae_problem()
    with torch.no_grad():
        out = as_tensor_result(call_learner(log_weights, model, x, eps.clone()))
        K, B, L = eps.shape
        if out.shape == (B, K):
            fail(f"returned shape {(B, K)}: one row per draw, (K, B) = ({K}, {B}), as eps is (K, B, L)")
        expect_shape(out, (K, B), " (one log-weight per draw and image)")
        expect_finite(out)
        again = as_tensor_result(call_learner(log_weights, model, x, eps.clone()))
        if not torch.equal(out, again):
            fail("two calls with the same eps gave different log-weights: use the draws eps you are given")
        ref = model.log_weights(x, eps)
        mean, log_scale = model.encoder(x)
        z = mean + log_scale.exp() * eps
        log_lik = model.log_likelihood(x, z)
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q = Normal(mean, log_scale.exp()).log_prob(z).sum(-1)
        z_var = mean + log_scale.exp() ** 2 * eps
        diagnose(
            out,
            ref,
            {
                "missing the prior: the weight is p(x, z) / q(z | x), and log p(x, z) = log p(x | z) + log p(z) "
                "(model.log_joint)": log_lik - log_q,
                "missing the proposal: subtract log q(z | x), the encoder's density at the same z": log_lik + log_prior,
                "the ratio is upside down: log w = log p(x, z) - log q(z | x)": log_q - log_lik - log_prior,
                "exp(log_scale) is the standard deviation, not the variance: z = mean + exp(log_scale) * eps": (
                    model.log_joint(x, z_var) - Normal(mean, log_scale.exp() ** 2).log_prob(z_var).sum(-1)
                ),
                "log q(z | x) must be summed over the L latent dimensions (a diagonal Gaussian is a product)": (
                    log_lik + log_prior - Normal(mean, log_scale.exp()).log_prob(z).mean(-1)
                ),
            },
            context=" (K = 4 draws, B = 3 images)",
        )
        # the lesson's scale: 64 pixel counts and L = 8 in float32, where a log-weight is about -300 nats, so
        # exp of any term underflows to 0 and a ratio of exponentials is nan
        g = torch.Generator().manual_seed(7)
        torch.manual_seed(7)
        big = vae.VAE(D=64, L=8, hidden=(32,))
        x64 = torch.randint(0, 17, (5, 64), generator=g).float()
        eps64 = torch.randn(3, 5, 8, generator=g)
        out64 = as_tensor_result(call_learner(log_weights, big, x64, eps64))
        expect_shape(out64, (3, 5), " (K = 3 draws, B = 5 digits)")
        expect_finite(
            out64,
            " at the lesson's scale (64 pixels, float32, log-weights near -300 nats): exp of such a number is 0, "
            "so compute log p(x, z) - log q(z | x) as a difference of logs, never as the log of a ratio of exp's",
        )
        diagnose(out64.double(), big.log_weights(x64, eps64).double(), {}, " at the lesson's scale", 1e-4, 1e-2)
    return "matches log p(x, z_k) - log q(z_k | x) for the draws given, one per draw and image."


def _aggregate_problem(dtype=torch.float32):
    """An encoder's output for N = 50 images (narrow Gaussians, as a trained encoder's: sd about 0.1 to 0.3, L = 8)
    and draws of its aggregate posterior, at the lesson's dtype."""
    g = torch.Generator().manual_seed(5)
    N, L, M = 50, 8, 300
    mean = torch.randn(N, L, generator=g, dtype=_F64)
    log_scale = -1.2 - 0.8 * torch.rand(N, L, generator=g, dtype=_F64)
    pick = torch.randint(N, (M,), generator=g)
    z = mean[pick] + log_scale[pick].exp() * torch.randn(M, L, generator=g, dtype=_F64)
    return z.to(dtype), mean.to(dtype), log_scale.to(dtype)


def _log_ratio_variants(z, mean, log_scale):
    z, mean, log_scale = z.double(), mean.double(), log_scale.double()
    N = mean.shape[0]
    per = Normal(mean, log_scale.exp()).log_prob(z[:, None, :])  # (M, N, L)
    log_components = per.sum(-1)  # (M, N)
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_q = torch.logsumexp(log_components, 1) - math.log(N)
    ref = log_q - log_prior
    mistakes = {
        "missing -log N: the aggregate posterior is the *average* of the N Gaussians, (1/N) sum_i q(z | x_i)": ref
        + math.log(N),
        "that averages the N log densities, mean_i log q(z | x_i); the aggregate posterior averages the densities "
        "themselves, in log space: logsumexp over the N components minus log N": log_components.mean(1) - log_prior,
        "missing the prior: the ratio is log q(z) - log p(z), with p(z) = N(0, I)": log_q,
        "the ratio is upside down: log q(z) - log p(z), not log p(z) - log q(z)": -ref,
        "each component's log density must be summed over the L latent dimensions (a diagonal Gaussian is a "
        "product), and so must the prior's": torch.logsumexp(per.mean(-1), 1) - math.log(N) - log_prior / z.shape[1],
        "that is the nearest component's log density alone (a max over the N Gaussians); the mixture sums them all: "
        "logsumexp, not max": log_components.max(1).values - math.log(N) - log_prior,
        "the scale of each Gaussian is exp(log_scale), not exp(2 log_scale)": torch.logsumexp(
            Normal(mean, (2 * log_scale).exp()).log_prob(z[:, None, :]).sum(-1), 1
        )
        - math.log(N)
        - log_prior,
    }
    return ref, mistakes


@checker("5.8", "the log density ratio of the aggregate posterior to the prior")
def check_aggregate_log_ratio(aggregate_log_ratio):
    r"""Compare with the mixture's log density (:func:`helpers.vae.aggregate_log_density`) on draws of an encoder's
    aggregate posterior (``N = 50`` narrow Gaussians in ``L = 8``, float32 as in the lesson), then at prior draws,
    where most of the mixture's components underflow: the average must be taken in log space."""
    z, mean, log_scale = _aggregate_problem()
    with torch.no_grad():
        out = as_tensor_result(call_learner(aggregate_log_ratio, z, mean, log_scale))
        M, N = z.shape[0], mean.shape[0]
        if out.dim() == 0:
            fail(f"returned one number; return one log ratio per draw, shape ({M},): the lesson averages them itself")
        if out.shape == (M, N):
            fail(
                f"returned shape {(M, N)}, one value per draw and component: combine the N components of the "
                "mixture (logsumexp over them, minus log N)"
            )
        expect_shape(out, (M,), " (one log ratio per draw of z)")
        expect_finite(
            out,
            " for draws of the aggregate posterior in float32: average the N densities in log space "
            "(torch.logsumexp over the components), never as exp(...)",
        )
        ref, mistakes = _log_ratio_variants(z, mean, log_scale)
        diagnose(out.double(), ref, mistakes, context=" (N = 50 Gaussians, L = 8, float32)", rtol=1e-4, atol=1e-3)
        prior_draws = torch.randn(M, z.shape[1], generator=torch.Generator().manual_seed(6)).to(z.dtype)
        far = as_tensor_result(call_learner(aggregate_log_ratio, prior_draws, mean, log_scale))
        expect_finite(
            far,
            " at draws of the prior, which land between the narrow Gaussians: there every density exp(log q(z | x_i)) "
            "rounds to 0 in float32, so log of their mean is -inf. Average them in log space: torch.logsumexp over "
            "the N components, minus log N",
        )
        far_ref, _ = _log_ratio_variants(prior_draws, mean, log_scale)
        diagnose(far.double(), far_ref, {}, context=" at draws of the prior (float32)", rtol=1e-4, atol=1e-2)
    return "log q_bar(z) - log p(z) for the mixture of the N encoder Gaussians, in log space, finite anywhere."
