r"""Checkers whose reference is in :mod:`helpers.uivi`: lesson 08's UIVI exercises.

8.2 (UIVI's reverse conditional, up to a constant) accepts any answer that differs from
:func:`helpers.uivi.reverse_conditional_log_prob` by one constant, since HMC needs the log density only up to
one, and checks its gradient in :math:`\varepsilon`, which HMC follows. 8.3 (the marginal score estimate)
compares with :func:`helpers.uivi.marginal_score_estimate`. 8.4 (UIVI's surrogate objective) compares the *gradient*
of the answer with that of :func:`helpers.uivi.uivi_objective` on a Gaussian family whose exact score is passed with
its graph attached, so that a score not held fixed shows; its value is free (a surrogate is not a bound).
"""

import torch

from ..gaussian import log_normal_diag
from ..semi_implicit import SemiImplicitGaussian
from ..uivi import marginal_score_estimate as reference_score
from ..uivi import reverse_conditional_log_prob as reference_reverse
from ..uivi import uivi_objective as reference_objective
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


def _family(dtype=_F64, seed=11, noise_dim=3):
    torch.manual_seed(seed)
    q = SemiImplicitGaussian.mlp(L=2, noise_dim=noise_dim, hidden=(50, 50), sigma=0.5, learn_sigma=True)
    with torch.no_grad():
        q.log_sigma.copy_(torch.tensor([-0.9, 0.2]))  # two different scales: sigma and sigma^2 are told apart
    return q.to(dtype)


# ---------------------------------------------------------------- 8.2


def _constant(difference, atol=1e-9):
    """True when a difference of log densities is one constant over all rows (HMC cannot tell them apart)."""
    d = difference.detach().double()
    return bool((d - d.mean()).abs().max() <= atol * max(1.0, float(d.abs().max())))


@checker("8.2", "UIVI's reverse conditional, up to a constant")
def check_reverse_conditional_log_prob(reverse_conditional_log_prob):
    q = _family()
    z, eps = torch.randn(6, 2, dtype=_F64) * 2, torch.randn(6, 3, dtype=_F64)
    out = as_tensor_result(call_learner(reverse_conditional_log_prob, q, z, eps))
    if out.dim() == 0:
        fail("returned one number; return one log density per row, shape (S,) = (6,): do not sum over the rows")
    if out.shape == (6, 2) or out.shape == (6, 3):
        fail("returned one value per coordinate; the densities are over whole vectors: sum over the last axis")
    expect_shape(out, (6,), " (one value per pair (z_s, eps_s))")
    expect_finite(out)
    reference = reference_reverse(q, z, eps)
    psi = q.mixing(eps)
    log_prior = log_normal_diag(eps, 0.0, torch.zeros_like(eps))
    log_cond = q.log_conditional(z, psi)
    variance_typo = (-0.5 * (z - psi) ** 2 / q.sigma - q.log_sigma).sum(-1)  # up to a constant
    mistakes = {
        "the prior factor q(eps) = N(eps; 0, I) is missing: q(eps | z) is proportional to q(z | eps) q(eps)": log_cond,
        "the conditional q(z | g(eps)) is missing: q(eps | z) is proportional to q(z | eps) q(eps), and without it "
        "the chain would ignore z": log_prior,
        "a sign is off: the prior enters as + log N(eps; 0, I), like the conditional": log_cond - log_prior,
        "a sign is off: the conditional enters as + log q(z | g(eps)), like the prior": -log_cond + log_prior,
        "that is a density, not its log: return log q(z | g(eps)) + log N(eps; 0, I)": reference.exp(),
        "the Gaussian's exponent divides by the variance sigma^2, not by sigma": variance_typo + log_prior,
        "a density over vectors is a product over coordinates: sum the log densities over the last axis, not "
        "their mean": log_cond / z.shape[-1] + log_prior / eps.shape[-1],
    }
    if not _constant(out - reference):
        for message, wrong in mistakes.items():
            if _constant(out - wrong):
                fail(message)
        again = as_tensor_result(call_learner(reverse_conditional_log_prob, q, z, eps))
        if not close(again, out, 1e-12, 1e-12):
            fail(
                "two calls with the same z and eps gave different values: use psi = q.mixing(eps), the given eps, "
                "not fresh draws (q.sample_psi or torch.randn)"
            )
        offset = (out - reference).double()
        i = int((offset - offset.mean()).abs().argmax())
        fail(
            f"does not match log q(z | g(eps)) + log N(eps; 0, I) up to a constant: for row {i} expected "
            f"{fmt((reference[i] + offset.mean()).detach())}, got {fmt(out[i].detach())}"
        )
    # HMC follows the gradient in eps; the lesson runs it in float32 on its own family
    eps_g = eps.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(reverse_conditional_log_prob, q, z, eps_g))
    expect_gradient(out, [eps_g], reference_reverse(q, z, eps_g), ["eps"], rtol=1e-6, atol=1e-9)
    q32 = _family(torch.float32, seed=12)
    z32, eps32 = torch.randn(400, 2) * 3, torch.randn(400, 3)
    out32 = as_tensor_result(call_learner(reverse_conditional_log_prob, q32, z32, eps32))
    expect_shape(out32, (400,), " for 400 draws in float32")
    if not _constant(out32 - reference_reverse(q32, z32, eps32), 1e-3):
        fail("right in float64 but not for the lesson's float32 family and 400 draws")
    return "log q(z | g(eps)) + log N(eps; 0, I), up to a constant, with the right gradient in eps."


# ---------------------------------------------------------------- 8.3


@checker("8.3", "UIVI's estimate of the marginal score")
def check_marginal_score_estimate(marginal_score_estimate):
    q = _family()
    z = torch.randn(5, 2, dtype=_F64) * 2
    draws = torch.randn(7, 5, 3, dtype=_F64)  # M = 7 draws for each of S = 5 points
    out = as_tensor_result(call_learner(marginal_score_estimate, q, z, draws))
    if out.shape == (7, 5, 2):
        fail("returned one score per draw; average the M conditional scores of each z over the draws (axis 0)")
    if out.shape == (7, 2):
        fail("averaged over the wrong axis: draws[m, s] belongs to z[s], so average over m (axis 0), keeping S")
    expect_shape(out, (5, 2), " (one score per z: (S, L))")
    expect_finite(out)
    psi = q.mixing(draws)  # (M, S, L)
    var = q.sigma**2
    reference = reference_score(q, z, draws)
    diagnose(
        out,
        reference,
        {
            "the sign is off: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2, pointing from z towards psi": (
                -reference
            ),
            "divide by the variance sigma^2, not by sigma: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2": (
                -(z - psi) / q.sigma
            ).mean(0),
            "the draws are summed; UIVI's estimate is their average (1/M) sum_m": (-(z - psi) / var).sum(0),
            "the draws are noise eps, not means: push them through the mixing network, psi = q.mixing(eps)": (
                -(z - draws[..., :2]) / var
            ).mean(0),
            "the scale sigma^2 is missing: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2": (-(z - psi)).mean(0),
            "multiplied by sigma^2 instead of dividing: grad_z log N(z; psi, sigma^2) = -(z - psi) / sigma^2": (
                -(z - psi) * var
            ).mean(0),
            "only the last of the M draws is used (a loop that overwrites instead of adding up?): average the "
            "conditional scores over all M draws, axis 0": -(z - psi[-1]) / var,
            "only the first of the M draws is used: average the conditional scores over all M draws, axis 0": -(
                z - psi[0]
            )
            / var,
            "the average over the M draws is divided by M once more: (1/M) sum_m, not (1/M^2) sum_m": (
                -(z - psi) / var
            ).mean(0)
            / draws.shape[0],
        },
        rtol=1e-6,
        atol=1e-9,
    )
    q32 = _family(torch.float32, seed=13)
    z32, d32 = torch.randn(300, 2) * 3, torch.randn(5, 300, 3)
    out32 = as_tensor_result(call_learner(marginal_score_estimate, q32, z32, d32))
    expect_shape(out32, (300, 2), " for 300 points and 5 draws each in float32")
    if not close(out32, reference_score(q32, z32, d32), 1e-4, 1e-4):
        fail("right in float64 but not for the lesson's float32 family")
    return "the average of -(z - g(eps_m)) / sigma^2 over the reverse conditional's draws."


# ---------------------------------------------------------------- 8.4


def _objective_problem(dtype=_F64, S=7):
    """Reparameterized draws z = m + e^{log s} eps of a Gaussian in L = 3 dimensions, a Gaussian target, and q's
    exact score at z, computed from z *with* its graph (an answer that does not hold it fixed differentiates
    through it). L = 3 and S = 7 keep apart the scalings of the score term a slip gives: 1/2, 1/L, S, S/L."""
    generator = torch.Generator().manual_seed(17)
    m = torch.tensor([0.3, -0.4, 0.8], dtype=dtype, requires_grad=True)
    log_s = torch.tensor([-0.3, 0.4, 0.1], dtype=dtype, requires_grad=True)
    eps = torch.randn(S, 3, generator=generator, dtype=dtype)
    z = m + log_s.exp() * eps
    target_mean = torch.tensor([1.0, -2.0, 0.5], dtype=dtype)
    target_scale = torch.tensor([1.5, 0.7, 1.1], dtype=dtype)

    def log_target(z):
        return log_normal_diag(z, target_mean, target_scale.log())

    score = -(z - m) / (2 * log_s).exp()  # q's exact score, grad_z log N(z; m, s^2), still attached to the graph
    return (m, log_s), z, score, log_target


def _flat(params, grads):
    """Gradients (None where none reached a parameter: zeros) flattened into one vector."""
    return flat(*(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)))


def _gradient_of(value, params):
    return _flat(params, torch.autograd.grad(value, params, allow_unused=True, retain_graph=True))


_OBJECTIVE_NAMES = tuple(f"the {name} [{i}]" for name in ("mean m", "log-scale") for i in range(3))


@checker("8.4", "UIVI's surrogate objective")
def check_uivi_objective(uivi_objective):
    params, z, score, log_target = _objective_problem()
    out = as_tensor_result(call_learner(uivi_objective, log_target, z, score))
    if out.dim() == 1 and out.shape[0] == z.shape[0]:
        fail("returned one value per draw, shape (S,); return their average over the S draws, a 0-d tensor")
    if out.shape == z.shape:
        fail(
            "returned one value per draw and coordinate, shape (S, L): the score term is a dot product, summed "
            "over the latent axis, and the surrogate is averaged over the S draws (0-d)"
        )
    expect_shape(out, (), " (the surrogate is one number: a 0-d tensor)")
    expect_finite(out)
    if not out.requires_grad:
        fail(
            "no gradient reaches the family's parameters: the draws z carry them (z = h_phi(eps, xi)); keep z as "
            "it is and hold only the score fixed"
        )
    got = _flat(params, learner_grad(out, params, allow_unused=True, retain_graph=True))
    fixed = score.detach()
    S = z.shape[0]
    ref = _gradient_of(reference_objective(log_target, z, score), params)
    diagnose(
        got,
        ref,
        {
            "the score must be held fixed: its gradient is stopped (detach it), so that only z carries the "
            "gradient in the score term; differentiating through the score estimate adds a term that Question 8.1 "
            "does not have": _gradient_of((log_target(z) - (score * z).sum(-1)).mean(), params),
            "sign error in the score term: the surrogate is log p(z) - sg(s_q(z))^T z, whose gradient is "
            "(grad log p - s_q)^T dz/dphi": _gradient_of((log_target(z) + (fixed * z).sum(-1)).mean(), params),
            "log p(z) is missing, or no gradient reaches it: the gradient needs grad_z log p(z) dz/dphi, which "
            "log_target(z) of the differentiable z gives": _gradient_of(-(fixed * z).sum(-1).mean(), params),
            "the score term is missing, or z is detached in it: its gradient -sg(s_q)^T dz/dphi stands in for the "
            "density's part of the ELBO's gradient (Question 8.1, part 1)": _gradient_of(log_target(z).mean(), params),
            "the S draws are summed; the Monte Carlo estimate is their average, (1/S) sum_s": S * ref,
            "the score term is averaged over the L coordinates too: it is a dot product, summed over the latent "
            "axis, then averaged over the draws": _gradient_of((log_target(z) - (fixed * z).mean(-1)).mean(), params),
            "the score term is halved: the surrogate is log p(z) - sg(s_q(z))^T z, with no factor 1/2 (its gradient "
            "-sg(s_q)^T dz/dphi stands in for the whole density part of the ELBO's gradient, Question 8.1)": (
                _gradient_of((log_target(z) - 0.5 * (fixed * z).sum(-1)).mean(), params)
            ),
            "the score term is summed over the draws (axis 0) and averaged over the L coordinates: take the dot "
            "product sg(s_q(z_s))^T z_s of each draw, over the latent axis (-1), then average over the S draws": (
                _gradient_of(log_target(z).mean() - (fixed * z).sum(0).mean(), params)
            ),
            "the whole surrogate is negated: return log p(z) - sg(s_q)^T z, which training maximises (the loss is "
            "its negative)": -ref,
        },
        rtol=1e-6,
        atol=1e-9,
        labels=_OBJECTIVE_NAMES,
    )
    # the lesson's float32 and many draws
    params32, z32, score32, log_target32 = _objective_problem(torch.float32, S=500)
    out32 = as_tensor_result(call_learner(uivi_objective, log_target32, z32, score32))
    expect_shape(out32, (), " in float32 with 500 draws")
    got32 = _flat(params32, learner_grad(out32, params32, allow_unused=True, retain_graph=True))
    if not close(got32, _gradient_of(reference_objective(log_target32, z32, score32), params32), 1e-4, 1e-5):
        fail("right in float64 with 7 draws, but not in the lesson's float32 with 500 draws")
    return "log p(z) - sg(s_q)^T z averaged over the draws: its gradient is the ELBO's, with the score held fixed."
