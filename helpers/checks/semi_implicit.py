r"""Checkers for the semi-implicit exercises (lesson 06).

6.1, the marginal of the linear semi-implicit family, is compared with
``torch.distributions`` on fixed inputs. 6.2, the SIVI bound, is random by
nature and can be written in several correct ways (the ``K`` extra draws
shared by all ``z`` or drawn for each; :math:`\psi_0` drawn with them or
apart), so the checker compares *expectations*: the average of many calls
on a family whose marginal is known must match the reference bound of
:mod:`helpers.semi_implicit` within Monte Carlo error, at ``K = 1`` and
``K = 8``. The averages of the plausible mistakes (no :math:`\psi_0`, a
division by ``K``, an average of log densities, ...) are computed the same
way and named when the answer matches one of them.
"""

import math

import torch
from torch.distributions import MultivariateNormal, Normal

from ..semi_implicit import SemiImplicitGaussian
from ._core import as_tensor_result, call_learner, checker, diagnose, expect_finite, expect_shape, fail, fmt

__all__ = ["check_linear_marginal", "check_sivi_bound"]

_F64 = torch.float64


# ---------------------------------------------------------------- 6.1


@checker("6.1", "the marginal of the linear semi-implicit family")
def check_linear_marginal(log_marginal):
    mean = torch.tensor([0.3, -1.0, 2.0], dtype=_F64)
    tau, sigma = 0.7, 0.4
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 2.5], [0.3, -1.0, 2.0], [-1.5, 0.5, 1.0], [2.0, 1.0, -1.0]],
                     dtype=_F64)
    out = as_tensor_result(call_learner(log_marginal, z, mean, tau, sigma))
    if out.shape == z.shape:
        fail(f"returned shape {tuple(out.shape)}, one value per coordinate; the density of z is the product over "
             "coordinates, so sum the log densities over the last axis")
    expect_shape(out, (z.shape[0],), " (one log density per row of z)")
    expect_finite(out)

    def log_normal(var, normaliser_dims=3):
        quad = ((z - mean) ** 2).sum(-1) / var
        return -0.5 * quad - 0.5 * normaliser_dims * math.log(2 * math.pi * var)

    v = tau**2 + sigma**2
    reference = Normal(mean, math.sqrt(v)).log_prob(z).sum(-1)
    diagnose(out, reference, {
        "the standard deviations do not add, the variances do: z = m + tau eps + sigma xi has variance tau^2 + sigma^2":
            log_normal((tau + sigma) ** 2),
        "the spread of the mixing variable is missing: psi varies with variance tau^2, so Var z = tau^2 + sigma^2":
            log_normal(sigma**2),
        "the conditional's own noise is missing: given psi, z still varies with variance sigma^2, so "
        "Var z = tau^2 + sigma^2": log_normal(tau**2),
        "tau^2 + sigma^2 is the variance, not the standard deviation": log_normal(v**2),
        "the variances add, they do not multiply: Var z = tau^2 + sigma^2": log_normal(tau**2 * sigma**2),
        "the normalising constant -1/2 log(2 pi v) appears once per coordinate (L times)": log_normal(v, 1),
        "missing the normalising constant -L/2 log(2 pi (tau^2 + sigma^2))": -0.5 * ((z - mean) ** 2).sum(-1) / v,
        "the density's exponent is -|z - m|^2 / (2 v): a factor 1/2 is missing or doubled":
            -((z - mean) ** 2).sum(-1) / v - 1.5 * math.log(2 * math.pi * v),
    })
    batch = torch.randn(2, 4, 3, dtype=_F64)
    out = as_tensor_result(call_learner(log_marginal, batch, mean, tau, sigma))
    expect_shape(out, (2, 4), " for z of shape (2, 4, 3): keep the leading axes, sum over the last")
    if not torch.allclose(out, Normal(mean, math.sqrt(v)).log_prob(batch).sum(-1)):
        fail("right for a batch of rows but not for z with two leading axes; sum over the last axis only (dim=-1)")
    return "log N(z; m, (tau^2 + sigma^2) I), for any leading batch shape."


# ---------------------------------------------------------------- 6.2

_MEAN = torch.tensor([0.3, -0.5], dtype=_F64)
_TARGET = MultivariateNormal(torch.zeros(2, dtype=_F64), torch.tensor([[1.5, 0.4], [0.4, 1.0]], dtype=_F64))
_S, _REPS = 2000, 40


def _log_target(z):
    return _TARGET.log_prob(z)


def _family():
    return SemiImplicitGaussian.linear(_MEAN, tau=1.0, sigma=0.5)


def _variant(kind, q, S, K):
    """One estimate of the correct bound (``kind="correct"``) or of a plausible mistake."""
    z, psi0 = q.rsample(S)
    psi = q.sample_psi(K)
    own = q.log_conditional(z, psi0).unsqueeze(1)  # (S, 1)
    others = q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0))  # (S, K)
    both = torch.cat([own, others], 1)
    log_p = _log_target(z)
    if kind == "correct":
        return (log_p - (torch.logsumexp(both, 1) - math.log(K + 1))).mean()
    if kind == "no psi0":
        return (log_p - (torch.logsumexp(others, 1) - math.log(K))).mean()
    if kind == "fresh psi0":  # the 'own' term from a new draw, not the psi that generated z
        extra = q.log_conditional(z, q.sample_psi(S)).unsqueeze(1)
        return (log_p - (torch.logsumexp(torch.cat([extra, others], 1), 1) - math.log(K + 1))).mean()
    if kind == "divide by K":
        return (log_p - (torch.logsumexp(both, 1) - math.log(K))).mean()
    if kind == "no division":
        return (log_p - torch.logsumexp(both, 1)).mean()
    if kind == "mean of logs":
        return (log_p - both.mean(1)).mean()
    if kind == "own only":
        return (log_p - own.squeeze(1)).mean()
    if kind == "no target":
        return -(torch.logsumexp(both, 1) - math.log(K + 1)).mean()
    if kind == "sign":
        return -(log_p - (torch.logsumexp(both, 1) - math.log(K + 1))).mean()
    raise ValueError(kind)


_MISTAKES = {
    "no psi0": "psi_0, the draw that generated z, is missing from the average: without it "
               "E[log (1/K) sum_k q(z | psi_k)] <= log q(z), and the result is an upper bound on the ELBO. "
               "Average over K + 1 draws, psi_0 included",
    "fresh psi0": "the first term must use psi_0, the draw that generated z (from q.rsample), not a new draw of psi; "
                  "with a new draw the result is an upper bound on the ELBO",
    "divide by K": "there are K + 1 terms in the average (psi_0 and the K extra draws): subtract log(K + 1), not log K",
    "no division": "the average needs its 1/(K + 1): logsumexp gives the log of the sum; subtract log(K + 1)",
    "mean of logs": "that averages the log densities; SIVI averages the densities themselves, in log space: "
                    "logsumexp(log q(z | psi_k)) - log(K + 1)",
    "own only": "the K extra draws are missing: with psi_0 alone the bound does not improve as K grows; "
                "average q(z | psi_k) over psi_0 and the K extra draws",
    "no target": "log_target(z) is missing: the bound is E[log p(z) - log q_K(z)]",
    "sign": "sign error: the bound is E[log p(z) - log q_K(z)], which training maximises",
}


def _expectation(estimate, reps=_REPS):
    values = torch.stack([torch.as_tensor(estimate(), dtype=_F64) for _ in range(reps)])
    return float(values.mean()), float(values.std()) / math.sqrt(reps)


@checker("6.2", "the SIVI bound in log space")
def check_sivi_bound(sivi_bound):
    q = _family()
    out = as_tensor_result(call_learner(sivi_bound, _log_target, q, 16, 3))
    if out.dim() == 1 and out.shape[0] == 16:
        fail("returned one value per draw of z, shape (S,); return their average over the S draws, a 0-d tensor")
    expect_shape(out, (), " (the bound is one number: a 0-d tensor)")
    expect_finite(out)
    if not out.requires_grad:
        fail("no gradient reaches the family's parameters: build the bound from q.rsample and q.sample_psi "
             "without .detach() or torch.no_grad(), so that training can follow it")
    out.backward()
    if q.mixing.weight.grad is None or q.mixing.weight.grad.abs().sum() == 0:
        fail("the gradient does not reach the mixing network: z must come from q.rsample(S), not from fixed noise")

    with torch.no_grad():
        for K in (8, 1):  # K = 8 first: at K = 1, dividing by K and not dividing at all coincide
            mean, se = _expectation(lambda K=K: call_learner(sivi_bound, _log_target, q, _S, K))
            ref, ref_se = _expectation(lambda K=K: _variant("correct", q, _S, K))
            tol = 4 * math.hypot(se, ref_se) + 1e-3
            if abs(mean - ref) <= tol:
                continue
            for kind, message in _MISTAKES.items():
                wrong, wrong_se = _expectation(lambda K=K, kind=kind: _variant(kind, q, _S, K))
                if abs(mean - wrong) <= 4 * math.hypot(se, wrong_se) + 1e-3:
                    fail(message)
            fail(f"at K = {K}, the average of {_REPS} calls with S = {_S} is {fmt(mean)} (s.e. {se:.2g}); "
                 f"the bound's expectation is {fmt(ref)} (s.e. {ref_se:.2g})")

        # log space: 60 coordinates and sigma = 0.01 put log q(z | psi_0) near +190, beyond exp's float32 range
        q_sharp = SemiImplicitGaussian.linear(torch.zeros(60), tau=1.0, sigma=0.01)
        out = as_tensor_result(call_learner(sivi_bound, lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1), q_sharp,
                                            8, 5))
        if not torch.isfinite(out).all():
            fail(f"the result is {fmt(out)} for a sharp 60-dimensional conditional in float32: exp(log q) overflows. "
                 "Average in log space: torch.logsumexp(log_q, dim) - math.log(K + 1)")
    return ("an unbiased estimate of the (K + 1)-draw bound at K = 1 and K = 8, "
            "finite where exp would overflow, with gradients to the family.")
