r"""Checkers for the variational-autoencoder exercises (lesson 05).

References: :mod:`helpers.vae`. Each is compared on fixed inputs (and fixed
noise), with the values of common mistakes named.
"""

import copy
import math
import re

import torch
from torch.distributions import Normal, kl_divergence

from .. import vae
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

_F64 = torch.float64
_BROADCAST = re.compile(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)")


def _call(fn, *args, axes=None, advice=""):
    """``call_learner(fn, *args)``, with two of the learner's errors named.

    A broadcasting error between two of the problem's sizes, ``axes`` (size -> what it counts), says which two
    axes met: a reduction over the wrong axis; ``advice`` says what to do. (A stub of *another* exercise that the
    answer calls, as 5.3 calls 5.2's ``kl_standard_normal``, is named by :func:`checker` itself.)
    """
    try:
        return call_learner(fn, *args)
    except Mistake as exc:
        text = str(exc).rstrip(":")
        found = _BROADCAST.search(text)
        if axes and found:
            a, b = int(found[1]), int(found[2])
            if a != b and a in axes and b in axes:
                fail(f"{text}: the sizes {a} ({axes[a]}) and {b} ({axes[b]}) met, an axis mixed up. {advice}")
        if "parameter scale" in text and "GreaterThan" in text:
            fail(
                f"{text}: a Normal's scale must be positive, and log_scale is negative here. The scale is "
                "exp(log_scale); log_scale is its log"
            )
        raise


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


_ELBO_AXES = "model.log_likelihood(x, z) is (S, B), one value per draw and image, already summed over the D pixels"


@checker("5.3", "the batch ELBO of the VAE")
def check_vae_elbo(vae_elbo):
    model, x, eps = _vae_problem()
    S, B, _ = eps.shape
    axes = {S: "S, the draws", B: "B, the images"}
    advice = f"{_ELBO_AXES}: average it over the S draws (dim 0) only, to one term per image like the KL's (B,)"
    out = as_tensor_result(_call(vae_elbo, x, model, eps, axes=axes, advice=advice))
    if out.dim() == 0:
        fail(f"returned one number; return one ELBO per data point, shape ({B},) (training takes the mean)")
    expect_shape(out, (B,), " (one ELBO per data point)")
    expect_finite(out)
    if not out.requires_grad:
        fail("no gradient reaches the encoder and decoder: keep every step in torch, without .detach()")
    again = as_tensor_result(_call(vae_elbo, x, model, eps))
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
    other = torch.randn(eps.shape, dtype=eps.dtype, generator=torch.Generator().manual_seed(53))
    moved = as_tensor_result(_call(vae_elbo, x, model, other)).detach()
    if torch.equal(moved, out.detach()):
        fail(
            "your ELBO is the same whatever the noise eps: the reconstruction term is an average over the S draws "
            "z_s = mean + exp(log_scale) * eps_s (reparameterize(mean, log_scale, eps)), not log p(x | z) at the "
            "encoder's mean"
        )
    ref = _elbo_variant(model, x, eps)
    rec = _elbo_variant(model, x, eps, kl="none")
    kl_value = (rec - ref).detach()
    named_kl_slips = {
        "missing the KL term: ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))": rec.detach(),
        "the KL is subtracted, not added: ELBO = E_q[log p(x | z)] - KL": (rec + kl_value).detach(),
    }
    if not any(torch.allclose(out.detach(), v, rtol=1e-6, atol=1e-9) for v in named_kl_slips.values()):
        _name_a_wrong_kl(model, x, eps, other, out.detach() - ref.detach(), moved)
    with torch.no_grad():
        mean, log_scale = model.encoder(x)
        per_draw = model.log_likelihood(x, vae.reparameterize(mean, log_scale, eps))  # (S, B)
        kl_closed = vae.kl_standard_normal(mean, log_scale)

    def over_images(how):
        return (
            f"the reconstruction term was {how} the B images too: {_ELBO_AXES}; average it over the S draws "
            "(dim 0) only, so that each image keeps its own term"
        )

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
            over_images("averaged over"): per_draw.mean() - kl_closed,
            over_images("summed over"): per_draw.sum(1).mean(0) - kl_closed,
            over_images("summed over the draws and"): per_draw.sum() - kl_closed,
        },
        context=" (3 digits-like images, 4 fixed draws each)",
    )
    fail("does not match")  # unreachable: diagnose fails on any mismatch


def _name_a_wrong_kl(model, x, eps, other, gap, again):
    """The learner's 5.3 usually takes its KL from their 5.2. A KL term that is wrong leaves the reconstruction
    term right, so the ELBO is off by the same amount whatever the draws eps: check that on the fresh draws
    ``other`` (the answer's ELBO there: ``again``), and say which exercise to fix. (Only the learner's ``vae_elbo``
    is called, by the checker, so the grader's replay sees the same.)"""
    if torch.allclose(gap, torch.zeros_like(gap), rtol=0, atol=1e-9):
        return
    if again.shape != gap.shape or not torch.allclose(again - _elbo_variant(model, x, other).detach(), gap, 1e-6, 1e-9):
        return  # the gap moves with the draws: not the KL alone
    true_kl = (_elbo_variant(model, x, eps, kl="none") - _elbo_variant(model, x, eps)).detach()
    with torch.no_grad():
        mean, log_scale = model.encoder(x)
        of_the_scale = vae.kl_standard_normal(mean, log_scale.exp())
    if torch.allclose(true_kl - gap, of_the_scale, rtol=1e-6, atol=1e-9):
        fail(
            "the reconstruction term is right, but the KL term was given the scale exp(log_scale) where "
            "kl_standard_normal (exercise 5.2) takes log_scale, as model.encoder returns it"
        )

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
    r"""Compare with :meth:`helpers.vae.VAE.log_weights` on a small float64 VAE (K = 4 draws, B = 3 images, L = 2,
    so the axes cannot be confused), and name the slips: a missing prior or proposal term, the ratio upside
    down, a variance for a scale, ``log_scale`` for a scale, a density without its constant, the prior in place of
    the proposal, ``log q`` not summed over the latent dimensions, fresh noise, no noise; then at the lesson's scale
    in float32."""
    model, x, eps = _vae_problem()
    K, B, L = eps.shape
    axes = {K: "K, the draws", B: "B, the images", L: "L, the latent dimensions"}
    advice = (
        "model.log_joint(x, z) is (K, B) for z of shape (K, B, L), and so is log q(z | x) once summed over the "
        "L latent dimensions (dim -1)"
    )
    with torch.no_grad():
        out = as_tensor_result(_call(log_weights, model, x, eps.clone(), axes=axes, advice=advice))
        if out.shape == (B, K):
            fail(f"returned shape {(B, K)}: one row per draw, (K, B) = ({K}, {B}), as eps is (K, B, L)")
        expect_shape(out, (K, B), " (one log-weight per draw and image)")
        expect_finite(
            out,
            " (K = 4 draws, B = 3 images): is log_scale used as a scale somewhere? The scale of q(z | x) is "
            "exp(log_scale), always positive; log_scale itself is negative for some coordinates here",
        )
        again = as_tensor_result(_call(log_weights, model, x, eps.clone()))
        if not torch.equal(out, again):
            fail("two calls with the same eps gave different log-weights: use the draws eps you are given")
        ref = model.log_weights(x, eps)
        if torch.equal(out, out[:1].expand_as(out)):
            fail(
                "every draw k gives the same log-weight: the noise is ignored. Each row of eps is one draw, "
                "z_k = mean + exp(log_scale) * eps_k, and the weight is evaluated at it"
            )
        mean, log_scale = model.encoder(x)
        z = mean + log_scale.exp() * eps
        log_lik = model.log_likelihood(x, z)
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q = Normal(mean, log_scale.exp()).log_prob(z).sum(-1)
        z_var = mean + log_scale.exp() ** 2 * eps
        z_raw = mean + log_scale * eps  # log_scale taken for the scale (with its sign, or its size)
        constant = 0.5 * L * math.log(2 * math.pi)  # the -1/2 log(2 pi) per coordinate, summed over L
        log_scale_as_scale = (
            "log_scale is the log of the scale, not the scale: q(z | x) = N(mean, diag exp(log_scale)^2), "
            "z = mean + exp(log_scale) * eps"
        )
        context = " (K = 4 draws, B = 3 images)"
        if not close(out, ref):  # log_scale for the scale, made positive (|log_scale|, maybe plus a small floor)
            for wrong in (
                model.log_joint(x, z) - Normal(mean, log_scale.abs()).log_prob(z).sum(-1),
                model.log_joint(x, z_raw) - Normal(mean, log_scale.abs()).log_prob(z_raw).sum(-1),
                model.log_joint(x, z)  # in the square only, next to a right -log sigma = -log_scale
                - (-0.5 * ((z - mean) / log_scale) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1),
            ):
                if close(out, wrong, rtol=1e-3, atol=1e-3):
                    fail(log_scale_as_scale + context)
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
                "that subtracts the prior's log density, log p(z), where the proposal's belongs: log q(z | x) = "
                "sum_l log N(z_l; mean_l, exp(log_scale_l)^2), the encoder's Gaussian at the same z (what is left "
                "is log p(x | z) alone)": log_lik,
                "log q(z | x) is missing its constant: a Normal log density has -1/2 log(2 pi) per coordinate, L of "
                "them (it cancels only if log p(z) leaves it out too)": ref - constant,
                "log p(z) is missing its constant: the standard normal log density has -1/2 log(2 pi) per "
                "coordinate, L of them (model.log_joint includes it)": ref + constant,
            },
            context=context,
        )
        # the lesson's scale: 64 pixel counts and L = 8 in float32, where a log-weight is about -300 nats, so
        # exp of any term underflows to 0 and a ratio of exponentials is nan
        g = torch.Generator().manual_seed(7)
        torch.manual_seed(7)
        big = vae.VAE(D=64, L=8, hidden=(32,))
        x64 = torch.randint(0, 17, (5, 64), generator=g).float()
        eps64 = torch.randn(3, 5, 8, generator=g)
        out64 = as_tensor_result(_call(log_weights, big, x64, eps64))
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
        "the prior's log density must be summed over the L latent dimensions, not averaged: log p(z) = "
        "sum_l log N(z_l; 0, 1)": log_q - log_prior / z.shape[1],
        "each component's log density must be summed over the L latent dimensions, not averaged: log q(z | x_i) = "
        "sum_l log N(z_l; mu_il, sigma_il^2), a diagonal Gaussian being a product": torch.logsumexp(per.mean(-1), 1)
        - math.log(N)
        - log_prior,
        "that is the nearest component's log density alone (a max over the N Gaussians); the mixture sums them all: "
        "logsumexp, not max": log_components.max(1).values - math.log(N) - log_prior,
        "the scale of each Gaussian is exp(log_scale), not exp(2 log_scale)": torch.logsumexp(
            Normal(mean, (2 * log_scale).exp()).log_prob(z[:, None, :]).sum(-1), 1
        )
        - math.log(N)
        - log_prior,
    }
    return ref, mistakes


def _aggregate_call(aggregate_log_ratio, z, mean, log_scale):
    """Call the learner's 5.8 at ``M`` points and ``N`` components (``M != N``). A broadcasting error between the
    two sizes is a reduction over the wrong axis of the ``(M, N)`` table; it is named from a call with ``M = N``
    points, where the same slip returns numbers: a log-sum-exp over the points instead of over the components."""
    M, N = z.shape[0], mean.shape[0]
    try:
        return as_tensor_result(_call(aggregate_log_ratio, z, mean, log_scale))
    except Mistake as exc:
        found = _BROADCAST.search(str(exc))
        if not found or {int(found[1]), int(found[2])} != {M, N}:
            raise
    table = "the (M, N) table of log q(z_m | x_i), one row per point z_m and one column per image's Gaussian"
    square = z[:N]
    try:
        out = as_tensor_result(_call(aggregate_log_ratio, square, mean, log_scale)).double()
    except Mistake:
        out = None
    if out is not None and out.shape == (N,):
        per = Normal(mean.double(), log_scale.double().exp()).log_prob(square.double()[:, None, :]).sum(-1)
        log_prior = Normal(0.0, 1.0).log_prob(square.double()).sum(-1)
        over_points = (
            torch.logsumexp(per, 0) - math.log(N) - log_prior,
            torch.logsumexp(per, 0) - log_prior,
            per.mean(0) - log_prior,
        )
        if any(close(out, wrong, rtol=1e-4, atol=1e-3) for wrong in over_points):
            fail(
                f"the N components are combined over the wrong axis: with M = {M} points and N = {N} Gaussians "
                f"your function raised a broadcasting error, and with M = N it combines, for each Gaussian, its "
                f"density at every point. In {table}, take the log-sum-exp along the N components (dim 1), one "
                "value per point"
            )
    fail(
        f"your function raised a broadcasting error between the sizes M = {M} (the points z) and N = {N} (the "
        f"images' Gaussians): in {table}, combine the N components of each point (log-sum-exp over dim 1, minus "
        "log N), then subtract the prior's log density at that point"
    )


@checker("5.8", "the log density ratio of the aggregate posterior to the prior")
def check_aggregate_log_ratio(aggregate_log_ratio):
    r"""Compare with the mixture's log density (:func:`helpers.vae.aggregate_log_density`) on draws of an encoder's
    aggregate posterior (``N = 50`` narrow Gaussians in ``L = 8``, float32 as in the lesson), then at prior draws,
    where most of the mixture's components underflow: the average must be taken in log space."""
    z, mean, log_scale = _aggregate_problem()
    with torch.no_grad():
        M, N = z.shape[0], mean.shape[0]
        out = _aggregate_call(aggregate_log_ratio, z, mean, log_scale)
        if out.dim() == 0:
            fail(f"returned one number; return one log ratio per draw, shape ({M},): the lesson averages them itself")
        if out.shape == (M, N):
            fail(
                f"returned shape {(M, N)}, one value per draw and component: combine the N components of the "
                "mixture (logsumexp over them, minus log N)"
            )
        if out.shape == (N,):
            fail(
                f"returned shape {(N,)}, one value per image's Gaussian: the N components are combined for each "
                f"point z (dim 1 of the (M, N) table of log q(z_m | x_i)), giving one value per point, shape ({M},)"
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
        far = _aggregate_call(aggregate_log_ratio, prior_draws, mean, log_scale)
        expect_finite(
            far,
            " at draws of the prior, which land between the narrow Gaussians: there every density exp(log q(z | x_i)) "
            "rounds to 0 in float32, so log of their mean is -inf. Average them in log space: torch.logsumexp over "
            "the N components, minus log N",
        )
        far_ref, _ = _log_ratio_variants(prior_draws, mean, log_scale)
        diagnose(far.double(), far_ref, {}, context=" at draws of the prior (float32)", rtol=1e-4, atol=1e-2)
    return "log q_bar(z) - log p(z) for the mixture of the N encoder Gaussians, in log space, finite anywhere."


def _information_problem():
    """``N = 7`` encoders' Gaussians in ``L = 4`` that overlap in part (so ``I_q`` lies well between 0 and
    ``log N``, and leaving a draw's own encoder out of the mixture shows) and ``S = 3`` draws per image: no two of
    ``S``, ``N``, ``L`` and ``S * N`` coincide, so no axis can stand in for another."""
    g = torch.Generator().manual_seed(9)
    N, L, S = 7, 4, 3
    mean = 0.8 * torch.randn(N, L, generator=g, dtype=_F64)
    log_scale = -1.1 + 0.5 * torch.rand(N, L, generator=g, dtype=_F64)  # standard deviations 0.33 to 0.55
    eps = torch.randn(S, N, L, generator=g, dtype=_F64)
    return mean, log_scale, eps


def _information_variants(mean, log_scale, eps):
    """The reference's value of I_q and the values of plausible mistakes, in float64."""
    mean, log_scale, eps = mean.double(), log_scale.double(), eps.double()
    S, N, L = eps.shape
    ref = vae.mutual_information(mean, log_scale, eps)
    z = vae.reparameterize(mean, log_scale, eps)  # (S, N, L): z[s, i] ~ q(z | x_i)
    per = Normal(mean, log_scale.exp()).log_prob(z[:, :, None, :])  # (S, N, N, L): draw (s, i), encoder j
    table = per.sum(-1)  # (S, N, N)
    own = table.diagonal(dim1=1, dim2=2)  # (S, N): log q(z_si | x_i)
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    others = table.masked_fill(torch.eye(N, dtype=torch.bool), -math.inf)  # the draw's own encoder left out
    # the log-sum-exp over the draws' images (the axis of z), for each encoder j, set against the draw of image j
    over_draws = torch.logsumexp(table, 1) - math.log(N)  # (S, N), indexed by the encoder
    wide = Normal(mean, (2 * log_scale).exp()).log_prob(z[:, :, None, :]).sum(-1)  # exp(2 log_scale) for the scale
    log_n = math.log(N)
    alone = (
        "each draw met only its own encoder: log q_bar(z) needs the densities of all N encoders at each draw, an "
        "(S, N, N) table (line the draws' axes up against the encoders' axis)"
    )
    lse_axis = (
        "the log-sum-exp ran over the draws (the axis of z) instead of over the N encoders: log q_bar(z) combines "
        "the densities of all N encoders q(z | x_j) at one and the same draw z"
    )
    mistakes = {
        "that is the average KL(q(z | x_i) || p(z)), the ELBO's KL term, with the prior in place of q_bar: I_q "
        "compares each image's Gaussian with the aggregate posterior q_bar(z) = (1/N) sum_j q(z | x_j), not with "
        "p(z)": (own - log_prior).mean(),
        "that averages the N log densities, mean_j log q(z | x_j); log q_bar(z) is the log of the average of the "
        "densities themselves, taken in log space: logsumexp over the N encoders, minus log N": (
            own - table.mean(-1)
        ).mean(),
        "missing log N: q_bar(z) is the average of the N densities, log q_bar(z) = logsumexp_j log q(z | x_j) - "
        "log N, not their sum": ref - log_n,
        "log N has the wrong sign: log q_bar(z) = logsumexp_j log q(z | x_j) - log N, so log q(z | x_i) - log "
        "q_bar(z) gains + log N": ref - 2 * log_n,
        lse_axis: (own - over_draws).mean(),
        "summed over the N images: I_q is the average over the data, (1/N) sum_i": N * ref,
        "summed over the S draws: the expectation under q(z | x_i) is their average": S * ref,
        "summed over the S draws and the N images: I_q is their average": S * N * ref,
        "the log ratio is upside down: log q(z | x_i) - log q_bar(z), not log q_bar(z) - log q(z | x_i) (a "
        "mutual information is never negative)": -ref,
        "the draw's own encoder is left out of q_bar: q_bar(z) = (1/N) sum_j q(z | x_j) over all N encoders, "
        "the one z was drawn from included (without it the log ratio has no ceiling, and the estimate can exceed "
        "log N)": (own - torch.logsumexp(others, -1) + math.log(N - 1)).mean(),
        "the draw's own encoder is left out of q_bar, whose sum runs over all N encoders, the one z was drawn "
        "from included (without it the log ratio has no ceiling)": (own - torch.logsumexp(others, -1) + log_n).mean(),
        "that is the nearest encoder's density alone (a max over the N encoders); q_bar sums them all: logsumexp, "
        "not max": (own - table.max(-1).values + log_n).mean(),
        alone: (own - torch.logsumexp(own, 0) + log_n).mean(),
        "each Gaussian's log density must be summed over the L latent dimensions (a diagonal Gaussian is a product)": (
            per.mean(-1).diagonal(dim1=1, dim2=2) - torch.logsumexp(per.mean(-1), -1) + log_n
        ).mean(),
        "the scale of each Gaussian is exp(log_scale), not exp(2 log_scale)": (
            wide.diagonal(dim1=1, dim2=2) - torch.logsumexp(wide, -1) + log_n
        ).mean(),
        "the numerator, log q(z | x_i) written from the noise, misses its constant -(L/2) log 2 pi, which the "
        "table of log densities behind q_bar has: the two must be the same log density": (
            ref + 0.5 * L * math.log(2 * math.pi)
        ),
        "the numerator, log q(z | x_i) written from the noise, subtracts log sigma^2 where the log density has "
        "log sigma, the log of the scale: -(1/2) eps^2 - log sigma - (1/2) log 2 pi per coordinate": (
            ref - log_scale.sum(-1).mean()
        ),
        "the log-sum-exp runs over the encoders one latent coordinate at a time, then sums over L: that makes "
        "q_bar a product of per-coordinate mixtures; it is a mixture of products, so sum each encoder's log "
        "density over L first, then log-sum-exp over the N encoders": (
            own - (torch.logsumexp(per, 2) - log_n).sum(-1)
        ).mean(),
    }
    # an answer built on 5.8's log ratio, log q(z | x_i) - log p(z) - (log q_bar(z) - log p(z)), with 5.8 wrong
    _, ratio_slips = _log_ratio_variants(z.reshape(S * N, L), mean, log_scale)
    for words, ratio in ratio_slips.items():
        value = (own - log_prior - ratio.reshape(S, N)).mean()
        if not any(close(value, v) for v in mistakes.values()):  # 5.9's own name, where it is the same slip
            mistakes[
                f"the log ratio log q_bar(z) - log p(z) it uses is wrong (exercise 5.8's aggregate_log_ratio?): "
                f"{words}. Fix exercise 5.8 first: its check names the mistake"
            ] = value
    return ref, mistakes


@checker("5.9", "the mutual information between an image and its code")
def check_mutual_information(mutual_information):
    r"""Compare with :func:`helpers.vae.mutual_information` for the given draws, on ``N = 7`` partly overlapping
    Gaussians in float64 (``S = 3`` draws per image, ``L = 4``: no axis can stand in for another), naming the
    slips (the prior for ``q_bar``, a mean of log densities, ``log N``, the axis, a sum for a mean, the sign, the
    draw's own encoder left out, 5.8's mistakes carried over), then at the lesson's scale in float32: 50 narrow
    Gaussians in ``L = 8``, where the estimate is near its ceiling ``log N``."""
    mean, log_scale, eps = _information_problem()
    S, N, L = eps.shape
    with torch.no_grad():
        axes = {S: "S, the draws per image", N: "N, the images", L: "L, the latent dimensions", S * N: "S * N"}
        advice = (
            "For each draw z_si (S x N of them) you need the log densities of all N encoders at it, an (S, N, N) "
            "table: line the draws' axes up against the encoders' axis"
        )
        out = as_tensor_result(_call(mutual_information, mean, log_scale, eps.clone(), axes=axes, advice=advice))
        if out.shape in ((N,), (S, N), (S, N, N)):
            fail(
                f"returned shape {tuple(out.shape)}: return one number, the estimate of I_q, the average of "
                "log q(z | x_i) - log q_bar(z) over the S draws and the N images"
            )
        if out.numel() != 1:
            fail(f"returned shape {tuple(out.shape)}: return one number, the estimate of I_q")
        out = out.reshape(())
        expect_finite(out)
        again = as_tensor_result(_call(mutual_information, mean, log_scale, eps.clone()))
        if not torch.equal(out, again.reshape(out.shape)):
            fail("two calls with the same eps gave different estimates: use the draws eps you are given")
        ref, mistakes = _information_variants(mean, log_scale, eps)
        diagnose(out.double(), ref, mistakes, context=f" (N = {N} Gaussians, S = {S} draws each, L = {L})")
        # the lesson's scale: float32, narrow Gaussians in L = 8, I_q near log N
        _, mean32, log_scale32 = _aggregate_problem()
        eps32 = torch.randn(2, *mean32.shape, generator=torch.Generator().manual_seed(11))
        big = as_tensor_result(_call(mutual_information, mean32, log_scale32, eps32))
        if big.numel() != 1:
            fail(f"returned shape {tuple(big.shape)} for N = 50 images: return one number, the estimate of I_q")
        expect_finite(big, " at the lesson's scale (N = 50 narrow Gaussians in L = 8, float32)")
        want = vae.mutual_information(mean32.double(), log_scale32.double(), eps32.double())
        diagnose(big.double().reshape(()), want, {}, " at the lesson's scale (N = 50, L = 8, float32)", 1e-4, 1e-3)
    return (
        "the average of log q(z | x_i) - log q_bar(z) over the draws given, with q_bar the average of all N "
        "encoders' densities, the draw's own included."
    )
