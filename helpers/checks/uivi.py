r"""Checkers whose reference is in :mod:`helpers.uivi`: lesson 08's UIVI exercises.

8.2 (UIVI's reverse conditional, up to a constant) accepts any answer that differs from
:func:`helpers.uivi.reverse_conditional_log_prob` by one constant, since HMC needs the log density only up to
one, and checks its gradient in :math:`\varepsilon`, which HMC follows. 8.3 (the marginal score estimate)
compares with :func:`helpers.uivi.marginal_score_estimate`.
"""

import torch

from ..gaussian import log_normal_diag
from ..semi_implicit import SemiImplicitGaussian
from ..uivi import marginal_score_estimate as reference_score
from ..uivi import reverse_conditional_log_prob as reference_reverse
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
    fmt,
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
