r"""Checkers whose reference is in :mod:`helpers.gaussian` (lessons 01 and 06).

1.2, the KL divergence between two Gaussians, is compared with :func:`torch.distributions.kl_divergence` and
:func:`helpers.gaussian.kl_normal` on batches and broadcast shapes, each slip named by the value it gives.

6.5, the full-covariance Gaussian conditional, is deterministic: it is compared with
:func:`helpers.gaussian.log_normal_tril`, each slip (the Cholesky factor used as the covariance, the solve with
``C^T``, the log-determinant missing or doubled, the constant, ...) named by the value it gives, with gradients
with respect to ``z``, ``psi`` and ``C``, since the lesson trains through them. It is also checked in float32 at
31 dimensions, the lesson's case, and timed against the reference at the lesson's shapes, where a triangular solve
broadcast over the ``S x K`` pairs is forty times slower.
"""

import torch
from torch.distributions import Normal, kl_divergence

from ..gaussian import LOG_2PI
from ..gaussian import log_normal_tril as reference_log_normal_tril
from ._core import (
    as_tensor_result,
    call_learner,
    checker,
    close,
    diagnose,
    expect_fast,
    expect_finite,
    expect_gradient,
    expect_shape,
    fail,
    fmt,
)

_F64 = torch.float64


def _tril_problem(dtype=_F64):
    torch.manual_seed(6)
    z = torch.randn(4, 1, 3, dtype=dtype)  # S = 4 draws of z against K = 5 of psi, broadcast as in the bounds
    psi = torch.randn(1, 5, 3, dtype=dtype)
    C = torch.tensor([[0.7, 0.0, 0.0], [0.4, 1.3, 0.0], [-0.5, 0.2, 0.9]], dtype=dtype)
    return z, psi, C


def _quadratic(z, psi, M):
    d = z - psi
    return (d @ torch.linalg.inv(M).T * d).sum(-1)  # d^T M^{-1} d, row by row


@checker("6.5", "the full-covariance Gaussian conditional")
def check_log_normal_tril(log_normal_tril):
    z, psi, C = _tril_problem()
    out = as_tensor_result(call_learner(log_normal_tril, z, psi, C))
    if out.shape == (4, 5, 3):
        fail("returned one value per coordinate; the density is over the whole vector z: sum over the last axis")
    expect_shape(out, (4, 5), " (z of shape (4, 1, 3) against psi of shape (1, 5, 3) broadcast to (4, 5))")
    expect_finite(out)
    L = z.shape[-1]
    Sigma = C @ C.T
    reference = reference_log_normal_tril(z, psi, C)
    log_det_half = C.diagonal().log().sum()
    const = 0.5 * L * LOG_2PI

    def form(quad, log_det_half=log_det_half, const=const, half=0.5):
        return -half * quad - log_det_half - const

    d = z - psi
    diagnose(
        out,
        reference,
        {
            "C is the Cholesky factor of the covariance, Sigma = C C^T; you used C itself as the covariance": form(
                _quadratic(z, psi, C + C.T - torch.diag(C.diagonal())), log_det_half=0.5 * log_det_half
            ),
            "Sigma = C C^T, so solve with C (lower-triangular): u = C^{-1}(z - psi); solving with C^T gives "
            "(C^T C)^{-1}, the wrong matrix": form(_quadratic(z, psi, C.T @ C)),
            "the quadratic form needs C^{-1}(z - psi) (a triangular solve), not C (z - psi)": form(
                ((d @ C.T) ** 2).sum(-1)
            ),
            "log |Sigma|^{1/2} = sum_l log C_ll: the log-determinant term is missing": form(
                _quadratic(z, psi, Sigma), log_det_half=0.0
            ),
            "log |Sigma|^{1/2} = sum_l log C_ll, once: you subtracted log |Sigma| = 2 sum_l log C_ll": form(
                _quadratic(z, psi, Sigma), log_det_half=2 * log_det_half
            ),
            "the exponent is -|C^{-1}(z - psi)|^2 / 2: the factor 1/2 is missing": form(
                _quadratic(z, psi, Sigma), half=1.0
            ),
            "the normalising constant -L/2 log(2 pi) is missing": form(_quadratic(z, psi, Sigma), const=0.0),
            "the normalising constant is -L/2 log(2 pi), L times -1/2 log(2 pi): you wrote it once": form(
                _quadratic(z, psi, Sigma), const=0.5 * LOG_2PI
            ),
            "the off-diagonal entries of C are ignored: the conditional has a full covariance C C^T": Normal(
                psi, C.diagonal()
            )
            .log_prob(z)
            .sum(-1),
        },
        rtol=1e-6,
        atol=1e-8,
    )
    # gradients: the lesson trains the mixing network (through psi), the draws z and C itself through this function
    # (C is lower-triangular: its entries above the diagonal are not variables, so the gradient is taken with
    # respect to a matrix whose upper triangle is masked out, and an answer may or may not read those zeros)
    z_g, psi_g, C_raw = (t.clone().requires_grad_(True) for t in (z, psi, C))
    out = as_tensor_result(call_learner(log_normal_tril, z_g, psi_g, C_raw.tril()))
    reference = reference_log_normal_tril(z_g, psi_g, C_raw.tril())
    expect_gradient(out, [z_g, psi_g, C_raw], reference, ["z", "psi", "scale_tril"], rtol=1e-5, atol=1e-8)
    # the lesson's dtype and scale: float32, 31 dimensions, a narrow conditional
    torch.manual_seed(7)
    C32 = torch.tril(torch.randn(31, 31) * 0.01, -1) + torch.diag(torch.rand(31) * 0.05 + 0.01)
    psi32 = torch.randn(1, 20, 31)
    z32 = psi32[:, :4].transpose(0, 1) + torch.randn(4, 1, 31) @ C32.T  # near some of the psi
    out32 = as_tensor_result(call_learner(log_normal_tril, z32, psi32, C32))
    expect_shape(out32, (4, 20), " for z (4, 1, 31) against psi (1, 20, 31)")
    ref32 = reference_log_normal_tril(z32.double(), psi32.double(), C32.double())
    if not torch.isfinite(out32).all():
        fail(
            "not finite for a narrow 31-dimensional conditional in float32 (the lesson's case): take logs before "
            "exponentials, e.g. sum the log of C's diagonal instead of the log of a determinant"
        )
    if not close(out32, ref32, 1e-4, 0.5):
        fail(
            "right in float64 for 3 dimensions, but off for a narrow 31-dimensional conditional in float32: "
            "avoid inverting Sigma = C C^T (its condition number is C's squared); solve with C "
            "(torch.linalg.solve_triangular) and use sum(log diag C) for the log-determinant"
        )
    # the lesson's shapes: the bound's table, z (50, 1, 31) against psi (1, 101, 31), forward and backward, 1500 times
    # in the fit. A triangular solve broadcast over the S x K pairs solves 5050 systems one by one: 40 times the
    # reference's time here, and the lesson's fit eight times slower. Timed against the reference in the same call.
    torch.manual_seed(8)
    C_fit = (torch.tril(torch.randn(31, 31) * 0.01, -1) + torch.diag(torch.rand(31) * 0.05 + 0.05)).requires_grad_()
    z_fit, psi_fit = torch.randn(50, 1, 31, requires_grad=True), torch.randn(1, 101, 31, requires_grad=True)
    expect_fast(
        log_normal_tril,
        reference_log_normal_tril,
        (z_fit, psi_fit, C_fit),
        "The lesson calls it on all S x K = 50 x 101 pairs of the bound at once, 1500 times: a triangular solve "
        "broadcast over the pairs (solve_triangular(C, (z - psi).unsqueeze(-1))) solves 5050 small systems one by "
        "one. Solve once for all of them: put the pairs' differences as the columns of one right-hand side "
        "(shape (L, S K)), or compute C^{-1} once and apply it to z and psi before subtracting",
        slower=12,
        grace=0.003,
        grad=(z_fit, psi_fit, C_fit),
    )
    return "log N(z; psi, C C^T) by a triangular solve, with log|Sigma|^{1/2} = sum log C_ll; right gradients."


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
