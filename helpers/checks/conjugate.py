r"""Checkers whose reference is in :mod:`helpers.conjugate`: lesson 01's ELBO of the Normal-Normal model.

1.1 (the closed-form ELBO of a Gaussian q) and 1.3 (the Monte Carlo ELBO's terms) are compared with
:class:`helpers.conjugate.NormalNormal`; wrong answers are matched against the values that common mistakes
produce, so the message can name the mistake.
"""

import math

import torch

from ..conjugate import NormalNormal
from ..estimators import standard_error
from ..gaussian import normal_entropy
from ._core import (
    as_tensor_result,
    call_learner,
    checker,
    diagnose,
    diagnose_mean,
    expect_finite,
    expect_shape,
    fail,
    fmt,
    learner_grad,
)

_F64 = torch.float64


def _problem():
    """A fixed small problem: model, data ``x`` of shape (6,)."""
    model = NormalNormal(prior_mean=1.0, prior_std=2.0, noise_std=0.7)
    x = torch.tensor([2.1, 1.4, 2.9, 1.8, 2.6, 0.9], dtype=_F64)
    return model, x


def _elbo_pieces(model, m, s, x):
    """The three terms of the closed-form ELBO, for naming mistakes."""
    return model.expected_log_likelihood(m, s, x), model.expected_log_prior(m, s), normal_entropy(s)


@checker("1.1", "closed-form ELBO of a Gaussian q")
def check_gaussian_elbo(gaussian_elbo):
    model, x = _problem()
    grid_m, grid_s = torch.meshgrid(
        torch.tensor([-0.5, 1.0, 2.5], dtype=_F64), torch.tensor([0.1, 0.4], dtype=_F64), indexing="xy"
    )
    cases = [
        ("for scalar m, s", torch.tensor(0.3, dtype=_F64), torch.tensor(0.4, dtype=_F64), x),
        (f"for m, s of shape {tuple(grid_m.shape)} (a grid)", grid_m, grid_s, x),
        (
            "with a single data point and a narrow q (s = 1e-3)",
            torch.tensor(1.7, dtype=_F64),
            torch.tensor(1e-3, dtype=_F64),
            x[:1],
        ),
    ]
    for context, m, s, data in cases:
        out = as_tensor_result(call_learner(gaussian_elbo, m, s, data, model))
        hint = "; hint: m.unsqueeze(-1) broadcasts m against x" if m.dim() else ""
        expect_shape(out, m.shape, f" ({context}{hint})")
        expect_finite(out, f" ({context})")
        ref = model.gaussian_elbo(m, s, data)
        ell, elp, H = _elbo_pieces(model, m, s, data)
        N = data.numel()
        var_lik = N * s**2 / (2 * model.noise_std**2)
        var_prior = s**2 / (2 * model.prior_std**2)
        diagnose(
            out,
            ref,
            {
                "missing the entropy term H[q] = 1/2 log(2 pi e) + log s": ref - H,
                "the entropy has the wrong sign: ELBO = E_q[log p(x, z)] + H[q]": ref - 2 * H,
                "returns the negative ELBO; return the bound itself (training code takes loss = -elbo)": -ref,
                "the expectations miss the spread of q: E_q[(x_i - z)^2] = (x_i - m)^2 + s^2, "
                "and likewise for (z - m0)^2": ref + var_lik + var_prior,
                "the likelihood term misses the spread of q: E_q[(x_i - z)^2] = (x_i - m)^2 + s^2": ref + var_lik,
                "the prior term misses the spread of q: E_q[(z - m0)^2] = (m - m0)^2 + s^2": ref + var_prior,
                "missing the prior term E_q[log p(z)]": ref - elp,
                "the s^2 term of the likelihood must be summed over the N data points (N s^2 / (2 sigma^2))": ref
                + (N - 1) * s**2 / (2 * model.noise_std**2),
                "the constant -1/2 log(2 pi sigma^2) must be summed over the N data points": ref
                + 0.5 * (N - 1) * math.log(2 * math.pi * model.noise_std**2),
                "the entropy is 1/2 log(2 pi e s^2) = 1/2 log(2 pi e) + log s, with s squared": ref
                - 0.5 * torch.log(s),
                "the log-likelihood should be a sum over the N data points, not a mean": ell / N + elp + H,
                "s is used as a variance; s is the standard deviation of q": model.gaussian_elbo(m, s.sqrt(), data),
                "returns log p(x), which does not depend on q; the ELBO does": model.log_evidence(data).expand(m.shape),
            },
            context=f" ({context})",
        )
    return "matches the closed form on scalars, on a grid and with N = 1."


@checker("1.3", "Monte Carlo ELBO estimator")
def check_elbo_samples(elbo_samples):
    model, x = _problem()
    m_post, s_post = model.posterior(x)
    # a point away from the optimum, where the ELBO's gradient is large
    m = (m_post + 1.0).clone().requires_grad_(True)
    s = torch.tensor(0.6, dtype=_F64, requires_grad=True)
    S = 5000

    out = as_tensor_result(call_learner(elbo_samples, m, s, x, model, S))
    if out.dim() == 0:
        fail(
            "returned a single number; return the S terms log p(x, z_s) - log q(z_s), shape (S,), "
            "and let the caller average them"
        )
    expect_shape(out, (S,))
    expect_finite(out)
    _check_at_posterior(elbo_samples)
    terms = out.detach().double()
    se = standard_error(terms)
    if se < 1e-12:
        fail("all S terms are equal: draw a fresh z_s ~ q for each term (m + s * eps), do not plug in z = m")
    diagnose_mean(
        (terms.mean(), se),
        model.gaussian_elbo(m, s, x).detach(),
        _mistaken_means(model, m.detach(), s.detach(), x),
        unmatched="the average of the terms, {got:.4f}, is {sigmas:.0f} standard errors away from the exact ELBO "
        "{expected:.4f}",
    )

    # the reparameterisation: the gradient of the average must match the exact one
    if not out.requires_grad:
        fail(
            "no gradient reaches m and s: build z from them with torch operations "
            "(z = m + s * eps or q.rsample()), without .detach() or NumPy"
        )
    grads = learner_grad(out.mean(), (m, s))
    exact = torch.autograd.grad(model.gaussian_elbo(m, s, x), (m, s))
    inv_s = 1 / float(s.detach())
    for name, g, g_exact in zip(("m", "s"), grads, exact, strict=True):
        if g is None or abs(float(g) - float(g_exact)) > 0.1 * abs(float(g_exact)) + 0.05:
            if name == "s" and g is not None and abs(float(g) - float(g_exact) + inv_s) < 0.1 * inv_s:
                fail(
                    f"the gradient with respect to s misses the entropy's 1/s ({fmt(g)} instead of about "
                    f"{fmt(g_exact)}): -log q(z_s) must stay a torch function of s, evaluated at the "
                    "reparameterised z_s (use torch.log(s), not math.log(s); log q = log N(eps; 0, 1) - log s)"
                )
            fail(
                f"the gradient with respect to {name} is wrong ({fmt(0.0 if g is None else g)} instead of about "
                f"{fmt(g_exact)}): the gradient does not flow through the sample; draw z with q.rsample() "
                "or m + s * torch.randn(S), not q.sample()"
            )

    one = as_tensor_result(call_learner(elbo_samples, m, s, x, model, 1))
    expect_shape(one, (1,), " with S = 1 (avoid .squeeze())")
    return "unbiased within Monte Carlo error, and gradients flow through the reparameterised sample."


def _check_at_posterior(elbo_samples):
    """At q = the exact posterior, under a strong prior, the terms average to log p(x).

    There ``log p(x, z) - log q(z) = log p(x)`` for every ``z``, so the reference
    terms are all equal, while evaluating a density at the mean instead of the
    sample, or dropping the ``-log s`` of ``log q``, shifts the average by far
    more than the Monte Carlo error. (Estimators that use the exact entropy are
    correct and have a small spread here; they pass.)
    """
    model = NormalNormal(prior_mean=1.0, prior_std=0.5, noise_std=3.0)
    x = torch.tensor([2.0, -0.5], dtype=_F64)
    m, s = model.posterior(x)
    log_px = float(model.log_evidence(x))
    S = 5000
    out = as_tensor_result(call_learner(elbo_samples, m.clone(), s.clone(), x, model, S)).detach().double()
    expect_shape(out, (S,), " (at q = the exact posterior)")
    expect_finite(out, " (at q = the exact posterior)")
    diagnose_mean(
        (out.mean(), standard_error(out)),
        log_px,
        _mistaken_means(model, m, s, x),
        atol=1e-8,
        unmatched="at q = the exact posterior every term log p(x, z_s) - log q(z_s) equals log p(x) = "
        "{expected:.4f}, but yours average {got:.4f}: evaluate both densities at the same sample z_s",
    )


def _mistaken_means(model, m, s, x):
    """What the average of the terms would be under each plausible mistake (message -> value)."""
    ref = float(model.gaussian_elbo(m, s, x))
    ell, elp, H = (float(t) for t in _elbo_pieces(model, m, s, x))
    s2 = float(s) ** 2
    return {
        "missing the -log q(z_s) term: each term is log p(x, z_s) - log q(z_s)": ref - H,
        "log q(z_s) has the wrong sign: each term is log p(x, z_s) - log q(z_s)": ref - 2 * H,
        "returns the negative ELBO; return the bound itself (training code takes loss = -elbo)": -ref,
        "torch.distributions.Normal takes the standard deviation s, not the variance s**2": float(
            model.gaussian_elbo(m, s**2, x)
        ),
        "log q(z_s) is missing the -log s term: with z = m + s * eps, log q(z) = log N(eps; 0, 1) - log s": ref
        - math.log(float(s)),
        "the log-likelihood should be a sum over the N data points, not a mean": ell / x.numel() + elp + H,
        "missing the prior term log p(z_s)": ref - elp,
        "the prior must be evaluated at the sample z_s, not at the mean m": ref + s2 / (2 * model.prior_std**2),
        "the likelihood must be evaluated at the sample z_s, not at the mean m": ref
        + x.numel() * s2 / (2 * model.noise_std**2),
    }
