r"""Checkers for the ELBO exercises on the Normal-Normal model (lesson 01).

Each checker takes the learner's function, tries it on fixed inputs, and
compares it with the reference in :class:`helpers.conjugate.NormalNormal`
and :mod:`helpers.gaussian`. Wrong answers are matched against the values
that common mistakes produce, so the message can name the mistake.
"""

import math

import torch
from torch.distributions import Normal, kl_divergence

from ..conjugate import NormalNormal
from ..estimators import standard_error
from ..gaussian import normal_entropy
from ._core import (
    as_tensor_result,
    call_learner,
    checker,
    close,
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


@checker("1.2", "KL divergence between two Gaussians")
def check_kl_normal(kl_normal):
    t = lambda *v: torch.tensor(v, dtype=_F64)  # noqa: E731
    cases = [
        (
            "on a batch of pairs",
            t(0.0, 1.0, -2.0, 0.5),
            t(1.0, 0.5, 2.0, 0.1),
            t(0.0, 0.0, 1.0, 0.3),
            t(1.5, 1.0, 0.7, 3.0),
        ),
        (
            "with a scalar p broadcast against a batch of q",
            t(0.5, -1.0, 2.0),
            t(0.3, 1.5, 1.0),
            torch.tensor(0.2, dtype=_F64),
            torch.tensor(1.3, dtype=_F64),
        ),
    ]
    for context, mq, sq, mp, sp in cases:
        out = as_tensor_result(call_learner(kl_normal, mq, sq, mp, sp))
        shape = torch.broadcast_shapes(mq.shape, sp.shape)
        expect_shape(out, shape, f" ({context})")
        expect_finite(out, f" ({context})")
        ref = kl_divergence(Normal(mq, sq), Normal(mp, sp))
        mean_term = (mq - mp) ** 2 / (2 * sp**2)
        diagnose(
            out,
            ref,
            {
                "computes KL(p || q): the arguments are swapped; KL(q || p) is an expectation under q": kl_divergence(
                    Normal(mp.expand(shape), sp.expand(shape)), Normal(mq, sq)
                ),
                "the log term needs a factor 1/2 when written with variances: "
                "log(sigma_p / sigma_q) = 1/2 log(sigma_p^2 / sigma_q^2)": ref + torch.log(sp / sq),
                "missing the constant -1/2": ref + 0.5,
                "missing the mean term (mu_q - mu_p)^2 / (2 sigma_p^2)": ref - mean_term,
                "sign error: KL(q || p) >= 0": -ref,
                "the sigmas are used as variances; the arguments are standard deviations": kl_divergence(
                    Normal(mq, sq.sqrt()), Normal(mp, sp.sqrt())
                ),
                "your quadratic terms divide by 2 sigma_p; they must divide by 2 sigma_p^2": -torch.log(sq / sp)
                + (sq**2 + (mq - mp) ** 2) / (2 * sp)
                - 0.5,
                "the log term has the wrong sign: it is log(sigma_p / sigma_q)": ref - 2 * torch.log(sp / sq),
                "the quadratic terms divide by 2 sigma_p^2, including the 2": ref
                + (sq**2 + (mq - mp) ** 2) / (2 * sp**2),
                "sigma_q must be squared in the quadratic term: (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2)": ref
                - (sq**2 - sq) / (2 * sp**2),
            },
            context=f" ({context})",
        )
    # edge case: identical distributions give exactly zero, not NaN
    m, s = torch.tensor([0.0, 3.0], dtype=_F64), torch.tensor([1.0, 1e-4], dtype=_F64)
    out = as_tensor_result(call_learner(kl_normal, m, s, m.clone(), s.clone()))
    expect_finite(out, " when q = p (the KL must be 0 there)")
    if not torch.allclose(out.double(), torch.zeros(2, dtype=_F64), atol=1e-10):
        fail(f"KL(q || q) should be 0, got {fmt(out.abs().max())}")
    return "matches torch.distributions.kl_divergence, broadcasts, and KL(q || q) = 0."


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


def _mixture_log_density(weights, locs, scales):
    def log_density(z):  # (G,) -> (G,)
        return torch.logsumexp(torch.log(weights) + Normal(locs, scales).log_prob(z.unsqueeze(-1)), -1)

    return log_density


@checker("1.4", "the reverse KL by quadrature")
def check_reverse_kl(reverse_kl):
    r"""Compare with :math:`\int q\,(\log q - \log p)\,dz` on two targets, and its gradient with the closed form's.

    On a Gaussian target the quadrature must equal :func:`torch.distributions.kl_divergence` (the trapezoid
    rule on a fine grid is exact to rounding for a Gaussian integrand), and so must its gradient with
    respect to ``m`` and ``s``, which lesson 01 descends. On the lesson's bimodal target it is compared
    with the reference quadrature. Everything is float64, as in the lesson.
    """
    z_grid = torch.linspace(-12.0, 12.0, 6001, dtype=_F64)
    dz = float(z_grid[1] - z_grid[0])
    gauss_m, gauss_s = torch.tensor(0.5, dtype=_F64), torch.tensor(1.3, dtype=_F64)
    cases = [
        ("on a Gaussian target N(0.5, 1.3^2), with q = N(-0.4, 0.7^2)", (-0.4, 0.7), Normal(gauss_m, gauss_s).log_prob),
        (
            "on the lesson's bimodal target, with q = N(1.0, 0.9^2)",
            (1.0, 0.9),
            _mixture_log_density(
                torch.tensor([0.3, 0.7], dtype=_F64),
                torch.tensor([-2.0, 1.5], dtype=_F64),
                torch.tensor([0.5, 0.8], dtype=_F64),
            ),
        ),
    ]
    for index, (context, (m0, s0), log_target) in enumerate(cases):
        m = torch.tensor(m0, dtype=_F64, requires_grad=True)
        s = torch.tensor(s0, dtype=_F64, requires_grad=True)
        out = as_tensor_result(call_learner(reverse_kl, m, s, log_target, z_grid))
        expect_shape(out, (), f" ({context}; return one number, the integral)")
        expect_finite(out, f" ({context})")
        with torch.no_grad():
            log_q, log_p = Normal(m, s).log_prob(z_grid), log_target(z_grid)
            q, p = log_q.exp(), log_p.exp()
            ref = torch.trapezoid(q * (log_q - log_p), z_grid)
            entropy = normal_entropy(s)
            mistakes = {
                "computes the forward KL(p || q) = E_p[log p - log q]; variational inference uses the reverse "
                "KL(q || p), an expectation under q": torch.trapezoid(p * (log_p - log_q), z_grid),
                "the integrand must be weighted by q's density: KL(q || p) = integral of q(z) (log q(z) - log p(z)) "
                "dz": torch.trapezoid(log_q - log_p, z_grid),
                "the weights are p's density; the reverse KL weights by q(z), the distribution it is an "
                "expectation under": torch.trapezoid(p * (log_q - log_p), z_grid),
                "missing the grid spacing: a sum of q (log q - log p) over the grid points is not an integral; "
                "multiply by dz (or use the trapezoid rule)": ref / dz,
                "a mean over the grid points is not an integral: it misses the grid's length (mean times "
                "(z_max - z_min))": (q * (log_q - log_p)).mean(),
                "missing the entropy part: KL(q || p) = E_q[log q] - E_q[log p], and E_q[log q] = -H[q]": ref + entropy,
                "s is used as a variance; s is the standard deviation of q": torch.trapezoid(
                    Normal(m, s.sqrt()).log_prob(z_grid).exp() * (Normal(m, s.sqrt()).log_prob(z_grid) - log_p),
                    z_grid,
                ),
            }
            if index == 0:  # on the Gaussian target, an answer that uses the lesson's bimodal target is off
                bimodal = cases[1][2]
                mistakes[
                    "your function ignores its log_target argument (it used the lesson's bimodal target): "
                    "evaluate log p with the log_target it is given"
                ] = torch.trapezoid(q * (log_q - bimodal(z_grid)), z_grid)
        if close(out, -ref, rtol=1e-6, atol=1e-7):
            _sign_or_swapped(reverse_kl, m, s, log_target, context)
        diagnose(out, ref, mistakes, context=f" ({context})", rtol=1e-6, atol=1e-7)
        if index == 0:  # the gradient lesson 01's descent uses, against the closed form
            if not out.requires_grad:
                fail(
                    "no gradient reaches m and s: build q's density from them with torch operations "
                    "(Normal(m, s).log_prob), without .item(), float() or NumPy"
                )
            grads = learner_grad(out, (m, s))
            exact = torch.autograd.grad(kl_divergence(Normal(m, s), Normal(gauss_m, gauss_s)), (m, s))
            for name, g, g_exact in zip(("m", "s"), grads, exact, strict=True):
                if g is None or abs(float(g) - float(g_exact)) > 1e-6 * abs(float(g_exact)) + 1e-7:
                    fail(
                        f"the gradient with respect to {name} is {fmt(0.0 if g is None else g)}, the closed form's "
                        f"is {fmt(g_exact)} ({context}): keep q's density a torch function of m and s"
                    )
    _check_lesson_scale(reverse_kl)
    return "matches the closed-form KL and its gradient on a Gaussian target, and the quadrature on two modes."


def _sign_or_swapped(reverse_kl, m, s, log_target, context):
    """The answer is minus the KL on a grid where the integrand vanishes at both ends: a sign error, or
    ``torch.trapezoid(z_grid, values)`` (arguments swapped), which there is minus the integral too (by parts).
    On a grid that cuts q off, the two differ; say which it is."""
    cut = torch.linspace(-12.0, float(m.detach()), 3001, dtype=_F64)  # ends at q's mean, where q is far from 0
    out = as_tensor_result(call_learner(reverse_kl, m, s, log_target, cut)).detach()
    with torch.no_grad():
        log_q = Normal(m, s).log_prob(cut)
        values = log_q.exp() * (log_q - log_target(cut))
        swapped = torch.trapezoid(cut, values)
    if out.shape == () and close(out, swapped, rtol=1e-6, atol=1e-7):
        fail(
            "the arguments of torch.trapezoid are swapped: it takes the values first and the grid second, "
            "torch.trapezoid(values, z_grid); torch.trapezoid(z_grid, values) integrates z d(values), which on this "
            f"grid is minus the integral ({context})"
        )
    fail(f"sign error: KL(q || p) = E_q[log q - log p] >= 0 ({context})")


def _check_lesson_scale(reverse_kl):
    """The lesson runs 1.4 in float32 on the grid [-12, 12] with q as narrow as s = 0.54 (the reverse-KL fit
    on the left mode) and as wide as the moment match (s = 1.76): there q's density underflows to 0 far out
    in the grid, so an integrand written as a log of a ratio of densities, log(q / p) or log(exp(log q)),
    is 0 * log 0 = nan or inf. Compared with the float64 quadrature, value and gradient."""
    z32 = torch.linspace(-12.0, 12.0, 6001)
    log_target32 = _mixture_log_density(torch.tensor([0.3, 0.7]), torch.tensor([-2.0, 1.5]), torch.tensor([0.5, 0.8]))
    log_target64 = _mixture_log_density(
        torch.tensor([0.3, 0.7], dtype=_F64),
        torch.tensor([-2.0, 1.5], dtype=_F64),
        torch.tensor([0.5, 0.8], dtype=_F64),
    )
    for m0, s0 in ((-1.968, 0.539), (0.45, 1.759)):
        context = f"in float32 at the lesson's scale, q = N({m0:g}, {s0:g}^2) on the grid [-12, 12] of 6001 points"
        m, s = torch.tensor(m0, requires_grad=True), torch.tensor(s0, requires_grad=True)
        out = as_tensor_result(call_learner(reverse_kl, m, s, log_target32, z32))
        expect_shape(out, (), f" ({context})")
        if not torch.isfinite(out).all():
            fail(
                f"the result is {fmt(out.detach())} ({context}): q's density underflows to 0 far from m, and "
                "log(q / p), log(q) of an exp, or log(p) of an exp is then log 0; keep the logs: "
                "q * (log_q - log_p) with log_q = Normal(m, s).log_prob(z_grid) and log_p = log_target(z_grid)"
            )
        with torch.no_grad():
            z64 = z32.double()
            log_q = Normal(m.double(), s.double()).log_prob(z64)
            ref = torch.trapezoid(log_q.exp() * (log_q - log_target64(z64)), z64)
        diagnose(out.detach(), ref, {}, context=f" ({context})", rtol=1e-4, atol=1e-5)
        if not out.requires_grad:
            fail(
                f"no gradient reaches m and s ({context}): build q's density from them with torch operations "
                "(Normal(m, s).log_prob), without .item(), float() or NumPy"
            )
        grads = learner_grad(out, (m, s))
        for name, g in zip(("m", "s"), grads, strict=True):
            if g is not None and not torch.isfinite(g).all():
                fail(
                    f"the value is right but the gradient with respect to {name} is {fmt(g.detach())} ({context}): a "
                    "torch.where or mask that skips log 0 still sends its nan gradient back; keep the logs instead, "
                    "q * (log_q - log_p) with log_q = Normal(m, s).log_prob(z_grid)"
                )
