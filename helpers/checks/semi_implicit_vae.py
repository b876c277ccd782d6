r"""Checkers whose reference is in :mod:`helpers.semi_implicit_vae` (lesson 07).

7.1, the amortized SIVI surrogate, and 7.3, the importance log-weights of a semi-implicit encoder, are
deterministic given the draws they are handed: they are compared with
:func:`helpers.semi_implicit_vae.semi_implicit_elbo_terms` and
:func:`helpers.semi_implicit_vae.semi_implicit_log_weights` on sizes whose axes cannot be confused
(``K + 1 != B != L``; ``M != K_psi + 1 != B``), each slip named by the value it gives (``psi_0`` missing,
``log K`` for ``log(K + 1)``, a mean of log densities, the variance for the standard deviation, for 7.3 the extra
draws paired one by one with the draws, and a log-sum-exp over the images or the draws of ``z``, by their value or
the shape or broadcasting error they give), then
checked where ``exp`` would overflow: a very narrow conditional, and for 7.3 the lesson's float32.
"""

import math

import torch

from ..gaussian import log_normal_diag
from ..semi_implicit_vae import semi_implicit_elbo_terms as reference_elbo_terms
from ..semi_implicit_vae import semi_implicit_log_weights as reference_log_weights
from ._core import (
    Mistake,
    as_tensor_result,
    call_learner,
    checker,
    close,
    diagnose,
    expect_finite,
    expect_shape,
    fail,
    learner_grad,
)

_F64 = torch.float64


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
    x, z, psi, log_scale, log_joint = _amortized_problem()
    out = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi, log_scale, log_joint))
    if out.dim() == 0:
        fail("returned one number; return one surrogate per data point, shape (B,) (no mean over the batch)")
    expect_shape(out, (3,), " (one value per data point)")
    expect_finite(out)
    log_q = log_normal_diag(z, psi, log_scale)  # (K + 1, B)
    K1, L = psi.shape[0], z.shape[-1]
    lj = log_joint(x, z)

    def surrogate(log_terms, n):  # a mistake's surrogate: log p(x, z) - log (1/n) sum of the terms' densities
        return lj - (torch.logsumexp(log_terms, 0) - math.log(n))

    diagnose(
        out,
        reference_elbo_terms(x, z, psi, log_scale, log_joint),
        {
            "psi[0], the draw that generated z, is missing from the average (that gives an upper bound on the ELBO); "
            "average over all K + 1 rows of psi": surrogate(log_q[1:], K1 - 1),
            "there are K + 1 terms (psi.shape[0]), so subtract log(K + 1), not log K": surrogate(log_q, K1 - 1),
            "the average needs its 1/(K + 1): subtract log(psi.shape[0]) after the logsumexp": lj
            - torch.logsumexp(log_q, 0),
            "that averages the log densities; average the densities, in log space (logsumexp over the draws)": lj
            - log_q.mean(0),
            "only psi[0] is used: the K extra draws must enter the average": lj - log_q[0],
            "log_joint(x, z) is missing: the surrogate is log p(x, z) - log q~(z | x)": -(
                torch.logsumexp(log_q, 0) - math.log(K1)
            ),
            "sign error: the surrogate is log p(x, z) - log q~(z | x)": -surrogate(log_q, K1),
            "exp(log_scale) is the standard deviation, not the variance": surrogate(
                log_normal_diag(z, psi, 0.5 * log_scale), K1
            ),
            (
                "the Gaussian's log density is summed over the L coordinates before averaging over draws, not averaged"
            ): surrogate(log_q / L, K1),
            "exp(log_scale) is the standard deviation itself, not exp(2 log_scale)": surrogate(
                log_normal_diag(z, psi, 2 * log_scale), K1
            ),
            "psi[0], the draw that generated z, is missing from the sum (you still divide by K + 1): "
            "sum over all K + 1 rows of psi": surrogate(log_q[1:], K1),
        },
    )
    psi_g, log_scale_g = psi.clone().requires_grad_(True), log_scale.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi_g, log_scale_g, log_joint))
    if not out.requires_grad:
        fail(
            "no gradient flows back to psi and log_scale: keep the computation in torch, without .detach() "
            "or torch.no_grad(), or training cannot follow it"
        )
    g_psi, g_ls = learner_grad(out.sum(), (psi_g, log_scale_g))
    psi_r, ls_r = psi.clone().requires_grad_(True), log_scale.clone().requires_grad_(True)
    r_psi, r_ls = torch.autograd.grad(reference_elbo_terms(x, z, psi_r, ls_r, log_joint).sum(), (psi_r, ls_r))
    if g_psi is None or g_ls is None or not (close(g_psi, r_psi, 1e-5, 1e-7) and close(g_ls, r_ls, 1e-5, 1e-7)):
        fail(
            "the value is right but its gradient with respect to psi or log_scale is not: part of the computation "
            "is detached from the graph"
        )
    big = as_tensor_result(call_learner(semi_implicit_elbo_terms, x, z, psi, log_scale - 40.0, log_joint))
    if not torch.isfinite(big).all():
        fail(
            "not finite when the conditional is very narrow (log_scale - 40): exp under- or overflows; "
            "average in log space with torch.logsumexp"
        )
    return "log p(x, z) - log of the (K + 1)-draw average of q(z | psi_k), per data point, in log space."


# ---------------------------------------------------------------- 7.3


def _iw_problem(dtype=_F64, M=5, K_psi=3, B=2, L=2, scale=1.0):
    torch.manual_seed(8)
    x = torch.randn(B, 3, dtype=dtype)
    log_scale = torch.tensor([-0.5, 0.1, 0.0, -0.3], dtype=dtype).repeat(B * L)[: B * L].reshape(B, L)
    log_scale = log_scale + math.log(scale)
    psi_own = torch.randn(M, B, L, dtype=dtype)
    z = psi_own + log_scale.exp() * torch.randn(M, B, L, dtype=dtype)  # each z_k next to its own psi_k0
    psi_extra = torch.randn(K_psi, B, L, dtype=dtype)  # M != K_psi + 1 != B: the axes cannot be confused

    def log_joint(x, z):
        return -0.5 * ((x.sum(-1, keepdim=True) - z) ** 2).sum(-1) - 0.5 * (z**2).sum(-1)  # (M, B)

    return x, z, psi_own, psi_extra, log_scale, log_joint


_PAIRED = (
    "each draw z_k must be compared with all K_psi extra mixing draws, not with one: you paired z_k with "
    "psi_extra[k] alone. The extra draws are shared by the M draws, so z_k's average runs over its own psi_k0 and "
    "every psi_j of psi_extra, K_psi + 1 terms: an (M, K_psi, B) table of log q(z_k | psi_j), from z of shape "
    "(M, 1, B, L) against psi_extra of shape (1, K_psi, B, L)"
)


def _name_a_broadcast(text, sizes):
    """Name a broadcasting error of 7.3's answer by the two axes it mixed (sizes: axis name -> length, all distinct)."""
    if "must match the size of tensor" not in text:
        return
    met = {name for name, n in sizes.items() if f"({n})" in text}
    if {"M", "K_psi"} <= met:
        fail(f"{text}. " + _PAIRED[0].upper() + _PAIRED[1:])
    if met & {"B", "M"} and "K_psi + 1" in met:
        fail(
            f"{text}. The log-sum-exp must run over the K_psi + 1 mixing draws (psi_k0 and the K_psi extra ones), "
            "for each draw z_k and image: it leaves an (M, B) table, as log p(x, z_k) is. Over the images (B) or "
            "the draws z_k (M) it leaves a table of another shape, which cannot meet log p(x, z_k)"
        )


@checker("7.3", "the importance log-weights of a semi-implicit encoder")
def check_semi_implicit_log_weights(semi_implicit_log_weights):
    x, z, psi_own, psi_extra, log_scale, log_joint = _iw_problem()
    M, K, B = z.shape[0], psi_extra.shape[0], x.shape[0]
    sizes = {"M": M, "K_psi + 1": K + 1, "B": B, "K_psi": K}
    try:
        raw = call_learner(semi_implicit_log_weights, x, z, psi_own, psi_extra, log_scale, log_joint)
    except Mistake as exc:
        _name_a_broadcast(str(exc), sizes)
        raise
    out = as_tensor_result(raw)
    if out.shape == (B,):
        fail(
            "returned one value per image; return one log-weight per draw and image, shape (M, B): the bound's "
            "average over the draws is taken later, by log_mean_exp"
        )
    if out.shape in ((M, K + 1), (K + 1, B)):
        reduced = "the images (B)" if out.shape == (M, K + 1) else "the draws z_k (M)"
        fail(
            f"returned shape {tuple(out.shape)}: the log-sum-exp ran over {reduced} instead of the K_psi + 1 mixing "
            f"draws; for each draw z_k and image, average q(z_k | psi) over its own psi_k0 and the K_psi extra draws, "
            "which leaves one log-weight per draw and image, (M, B)"
        )
    expect_shape(out, (M, B), " (one log-weight per draw z_k and image: (M, B))")
    expect_finite(out)
    lj = log_joint(x, z)
    own = log_normal_diag(z, psi_own, log_scale)  # (M, B)
    others = log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), log_scale)  # (M, K, B)
    every_own = log_normal_diag(z.unsqueeze(1), psi_own.unsqueeze(0), log_scale)  # (M, M, B): z_k against all psi_j0
    paired = log_normal_diag(z, psi_extra[torch.arange(M) % K], log_scale)  # (M, B): z_k against psi_extra[k] only

    def weights(log_terms, n):
        return lj - (torch.logsumexp(log_terms, 1) - math.log(n))

    with_own = torch.cat([own.unsqueeze(1), others], 1)
    log_q = lj - out.double()  # the answer's log q~(z_k | x), if its log p(x, z_k) is right
    if not close(out, reference_log_weights(x, z, psi_own, psi_extra, log_scale, log_joint), 1e-6, 1e-9) and close(
        log_q, log_q[:, :1].expand_as(log_q), 1e-6, 1e-9
    ):
        fail(
            "your log q~(z_k | x) is the same for every image: the log-sum-exp (or an average) ran over the images "
            "(the axis of length B), mixing the images' densities. Each image has its own average: for each draw z_k "
            "and image, average q(z_k | psi) over its own psi_k0 and the K_psi extra draws of that image, a "
            "log-sum-exp over the axis of the K_psi + 1 mixing draws"
        )
    diagnose(
        out,
        reference_log_weights(x, z, psi_own, psi_extra, log_scale, log_joint),
        {
            "z_k's own generating draw psi_k0 is missing from its average: without it the weight is not unbiased for "
            "p(x) and the result is no bound; average q(z_k | psi_k0) with the K_psi extra draws": weights(others, K),
            "there are K_psi + 1 terms in each average (the own draw and the K_psi extra ones): subtract "
            "log(K_psi + 1), not log K_psi": weights(with_own, K),
            "the average needs its 1 / (K_psi + 1)": lj - torch.logsumexp(with_own, 1),
            "psi_k0 generated z_k only: the other draws' own psi are not among z_k's mixing draws; average q(z_k | "
            "psi_k0) with the K_psi shared extra draws": weights(torch.cat([every_own, others], 1), M + K),
            "that averages the log densities; average the densities, in log space (log-sum-exp over the psi draws)": (
                lj - with_own.mean(1)
            ),
            "log p(x, z_k) is missing: the weight is p(x, z_k) / q~(z_k | x)": -(
                torch.logsumexp(with_own, 1) - math.log(K + 1)
            ),
            "a sign is off: log w_k = log p(x, z_k) - log q~(z_k | x)": -weights(with_own, K + 1),
            _PAIRED: weights(torch.cat([own.unsqueeze(1), paired.unsqueeze(1)], 1), 2),
            _PAIRED + " (and divided by K_psi + 1 where there were 2 terms)": weights(
                torch.cat([own.unsqueeze(1), paired.unsqueeze(1)], 1), K + 1
            ),
            _PAIRED + " (and without z_k's own psi_k0)": lj - paired,
            "exp(log_scale) is the standard deviation, not the variance": weights(
                torch.cat(
                    [
                        log_normal_diag(z, psi_own, 0.5 * log_scale).unsqueeze(1),
                        log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), 0.5 * log_scale),
                    ],
                    1,
                ),
                K + 1,
            ),
        },
        rtol=1e-6,
        atol=1e-9,
    )
    # the lesson's case: float32, 8 latent dimensions, a narrow conditional whose densities overflow exp
    x32, z32, own32, extra32, ls32, lj32 = _iw_problem(torch.float32, M=5, K_psi=50, B=2, L=8, scale=1e-6)
    out32 = as_tensor_result(call_learner(semi_implicit_log_weights, x32, z32, own32, extra32, ls32, lj32))
    expect_shape(out32, (5, 2), " for M = 5 draws, K_psi = 50 and L = 8 in float32")
    if not torch.isfinite(out32).all():
        fail(
            "not finite for a narrow conditional in float32 (the densities exceed exp's range): average in log "
            "space, with a log-sum-exp over the draws of psi"
        )
    ref32 = reference_log_weights(x32.double(), z32.double(), own32.double(), extra32.double(), ls32.double(), lj32)
    if not close(out32, ref32, 1e-4, 1e-2):
        fail("right in float64, but not for a narrow conditional in float32: average in log space")
    return "log p(x, z_k) - log of the (K_psi + 1)-draw average with z_k's own psi_k0, in log space."
