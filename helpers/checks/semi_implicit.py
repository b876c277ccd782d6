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

__all__ = [
    "check_linear_marginal", "check_sivi_bound", "check_semi_implicit_elbo_terms", "check_ksd_u_statistic",
]

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


# ---------------------------------------------------------------- 7.1


def _amortized_problem():
    torch.manual_seed(0)
    x = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [3.0, 1.0, -2.0]], dtype=_F64)
    z = torch.tensor([[0.3, -0.2], [1.0, 0.4], [-0.6, 0.9]], dtype=_F64)  # B = 3, L = 2
    psi = torch.randn(5, 3, 2, dtype=_F64)  # K + 1 = 5 draws per data point: the axes cannot be confused
    psi[0] = z + 0.1 * torch.randn(3, 2, dtype=_F64)  # psi_0 generated z, so it sits next to it
    log_scale = torch.tensor([[-0.5, 0.1], [0.0, -0.3], [0.2, 0.4]], dtype=_F64)

    def log_joint(x, z):
        return -0.5 * ((x[..., :2] - z) ** 2).sum(-1) - 0.5 * (z**2).sum(-1)

    return x, z, psi, log_scale, log_joint


@checker("7.1", "the amortized SIVI surrogate")
def check_semi_implicit_elbo_terms(semi_implicit_elbo_terms):
    from ..semi_implicit_vae import log_normal_diag

    x, z, psi, log_scale, log_joint = _amortized_problem()
    out = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi, log_scale, log_joint))
    if out.dim() == 0:
        fail("returned one number; return one surrogate per data point, shape (B,) (no mean over the batch)")
    expect_shape(out, (3,), " (one value per data point)")
    expect_finite(out)
    log_q = log_normal_diag(z, psi, log_scale)  # (K + 1, B)
    K1 = psi.shape[0]
    lj = log_joint(x, z)

    def surrogate(log_terms, n):
        return lj - (torch.logsumexp(log_terms, 0) - math.log(n))

    per_coordinate = -0.5 * ((z - psi) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
    diagnose(out, surrogate(log_q, K1), {
        "psi[0], the draw that generated z, is missing from the average (that gives an upper bound on the ELBO); "
        "average over all K + 1 rows of psi": surrogate(log_q[1:], K1 - 1),
        "there are K + 1 terms (psi.shape[0]), so subtract log(K + 1), not log K": surrogate(log_q, K1 - 1),
        "the average needs its 1/(K + 1): subtract log(psi.shape[0]) after the logsumexp":
            lj - torch.logsumexp(log_q, 0),
        "that averages the log densities; average the densities, in log space (logsumexp over the draws)":
            lj - log_q.mean(0),
        "only psi[0] is used: the K extra draws must enter the average": lj - log_q[0],
        "log_joint(x, z) is missing: the surrogate is log p(x, z) - log q~(z | x)": -(torch.logsumexp(log_q, 0)
                                                                                       - math.log(K1)),
        "sign error: the surrogate is log p(x, z) - log q~(z | x)": -surrogate(log_q, K1),
        "exp(log_scale) is the standard deviation, not the variance": surrogate(
            log_normal_diag(z, psi, 0.5 * log_scale), K1),
        "the Gaussian's log density is summed over the L coordinates before averaging over draws, not averaged":
            surrogate(per_coordinate.mean(-1), K1),
    })
    big = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi, log_scale - 40.0, log_joint))
    if not torch.isfinite(big).all():
        fail("not finite when the conditional is very narrow (log_scale - 40): exp under- or overflows; "
             "average in log space with torch.logsumexp")
    return "log p(x, z) - log of the (K + 1)-draw average of q(z | psi_k), per data point, in log space."


# ---------------------------------------------------------------- 7.3


@checker("7.3", "the kernel Stein discrepancy as a U-statistic")
def check_ksd_u_statistic(ksd_u_statistic):
    from ..kernel_stein import rbf_kernel

    torch.manual_seed(0)
    S = 6
    z, diff, h = torch.randn(S, 2, dtype=_F64), torch.randn(S, 2, dtype=_F64), 0.7
    out = as_tensor_result(call_learner(ksd_u_statistic, z, diff, h))
    if out.shape == (S, S):
        fail("returned the (S, S) matrix of terms; return their average over the pairs i != j, a 0-d tensor")
    expect_shape(out, (), " (one number: a 0-d tensor)")
    expect_finite(out)
    gram = rbf_kernel(z, h) * (diff @ diff.T)
    off = gram.sum() - gram.diagonal().sum()
    sq = torch.cdist(z, z) ** 2
    diagnose(out, off / (S * (S - 1)), {
        "the diagonal i = j is included: there the conditional score's noise is squared instead of averaged "
        "away, which biases the estimate upwards; sum over i != j only": gram.mean(),
        "the diagonal is included (divide by S(S - 1) the sum over i != j only): its terms are biased":
            gram.sum() / (S * (S - 1)),
        "there are S(S - 1) pairs i != j: divide by S(S - 1), not S^2": off / S**2,
        "the kernel is exp(-|z_i - z_j|^2 / (2 h^2)): the factor 2 is missing":
            ((torch.exp(-sq / h**2) * (diff @ diff.T)).sum() - (diff**2).sum()) / (S * (S - 1)),
        "the kernel divides the squared distance by 2 h^2 (h is a length); you divided by 2 h": (
            (torch.exp(-sq / (2 * h)) * (diff @ diff.T)).sum() - (diff**2).sum()) / (S * (S - 1)),
        "the kernel uses the squared distance |z_i - z_j|^2, not the distance itself": (
            (torch.exp(-sq.sqrt() / (2 * h**2)) * (diff @ diff.T)).sum() - (diff**2).sum()) / (S * (S - 1)),
        "the kernel weights are missing: the terms are k(z_i, z_j) d_i . d_j": ((diff @ diff.T).sum()
                                                                                 - (diff**2).sum()) / (S * (S - 1)),
        "sign error: KSD^2 is a sum of k(z_i, z_j) d_i . d_j": -off / (S * (S - 1)),
    })
    z_grad = z.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(ksd_u_statistic, z_grad, diff, h))
    if not out.requires_grad:
        fail("no gradient flows to z: build the kernel with torch operations (no .detach(), .item() or numpy)")
    (g,) = torch.autograd.grad(out, z_grad)
    if not torch.isfinite(g).all():
        fail("the gradient with respect to z is not finite; compute the squared distances with torch operations, "
             "e.g. ((z[:, None] - z[None]) ** 2).sum(-1)")
    return "an unbiased U-statistic over the pairs i != j, differentiable in z."
