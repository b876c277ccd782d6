r"""Checkers whose reference is a quadrature on a grid (:mod:`helpers.quadrature`): lessons 01 and 08.

1.4 is compared with :math:`\int q\,(\log q - \log p)\,dz` by the trapezoid rule, on a Gaussian target (where
it must equal the closed form, gradients included) and on the lesson's bimodal one, in float64 and at the
lesson's scale in float32. 8.10 (KL on a grid) compares with :func:`helpers.quadrature.kl_on_grid`, in float32
with unnormalised, widely spread log densities, as a trained family gives them.
"""

import torch
from torch.distributions import Normal, kl_divergence

from ..gaussian import normal_entropy
from ..quadrature import kl_on_grid as reference_kl
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
    fmt,
    learner_grad,
)

_F64 = torch.float64


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


# ---------------------------------------------------------------- 8.10


def _grid_problem(dtype=_F64):
    torch.manual_seed(31)
    log_q = torch.randn(50, dtype=dtype) * 3 + 40.0  # unnormalised, as log densities on a grid come
    log_p = torch.randn(50, dtype=dtype) * 4 - 7.0
    return log_q, log_p


@checker("8.10", "the KL divergence on a grid")
def check_kl_on_grid(kl_on_grid):
    log_q, log_p = _grid_problem()
    out = as_tensor_result(call_learner(kl_on_grid, log_q, log_p))
    expect_shape(out, (), " (one number: a 0-d tensor)")
    expect_finite(out)
    reference = reference_kl(log_q, log_p)
    lq_n, lp_n = log_q - torch.logsumexp(log_q, 0), log_p - torch.logsumexp(log_p, 0)
    w = lq_n.exp()
    lq_max, lp_max = log_q - log_q.max(), log_p - log_p.max()
    max_shift = (
        "subtracting the maximum keeps exp in range but does not normalise (the weights exp(log q_i - max) do not "
        "sum to one): subtract logsumexp(log q) and logsumexp(log p), which include the max shift"
    )
    diagnose(
        out,
        reference,
        {
            "that is KL(p || q), the other direction: weight by q, sum_i q_i (log q_i - log p_i)": reference_kl(
                log_p, log_q
            ),
            "the weights are normalised but the logs are not: use log q_i - logsumexp(log q) and the same for p, so "
            "that both are distributions over the grid": (w * (log_q - log_p)).sum(),
            "p is not normalised over the grid: subtract logsumexp(log_p) from log_p too": (w * (lq_n - log_p)).sum(),
            "q is not normalised over the grid: subtract logsumexp(log_q) from log_q too": (w * (log_q - lp_n)).sum(),
            "a sum over the grid points, not a mean (the normalised weights already sum to one; kl_div's "
            "reduction 'mean' or 'batchmean' divides by the G points here)": (w * (lq_n - lp_n)).mean(),
            "q's weights are missing: KL(q || p) is an expectation under q, sum_i q_i (log q_i - log p_i) with the "
            "normalised q_i = exp(log q_i - logsumexp(log q)) as weights, not a plain average of the log ratios": (
                lq_n - lp_n
            ).mean(),
            "q's weights are missing: KL(q || p) is an expectation under q, sum_i q_i (log q_i - log p_i) with the "
            "normalised q_i = exp(log q_i - logsumexp(log q)) as weights, not a plain sum of the log ratios": (
                lq_n - lp_n
            ).sum(),
            "weight by the normalised q_i = exp(log q_i) / sum_j exp(log q_j), not by exp(log q_i) itself": (
                log_q.exp() * (lq_n - lp_n)
            ).sum(),
            "the sign is off: KL(q || p) = sum_i q_i (log q_i - log p_i), which is non-negative": -reference,
            "neither density is renormalised over the grid: subtract logsumexp(log q) from log q and logsumexp(log p) "
            "from log p first, so that both sum to one over the grid": (log_q.exp() * (log_q - log_p)).sum(),
            max_shift: (lq_max.exp() * (lq_max - lp_max)).sum(),
            max_shift + " (here in the logs)": (w * (lq_max - lp_max)).sum(),
            max_shift + " (here in the weights)": (lq_max.exp() * (lq_n - lp_n)).sum(),
        },
        rtol=1e-6,
        atol=1e-9,
    )
    _check_float32_kl(kl_on_grid)
    return "KL(q || p) = sum_i q_i (log q_i - log p_i) with both normalised over the grid, in log space."


def _categorical_kl_with_clamped_probs(log_q, log_p):
    """What ``kl_divergence(Categorical(probs=softmax(log_q)), Categorical(probs=softmax(log_p)))`` computes:
    torch takes the logs of probabilities clamped to at least the dtype's eps (1.2e-7 in float32)."""
    eps = torch.finfo(log_q.dtype).eps
    q, p = torch.softmax(log_q, 0), torch.softmax(log_p, 0)
    return (q * (q.clamp(eps, 1 - eps).log() - p.clamp(eps, 1 - eps).log())).sum()


def _check_float32_kl(kl_on_grid):
    """The lesson's float32, at two scales. First log densities up to 100 nats, where exp(log q_i) overflows
    (above 88.7) but no normalised probability is below e^-62: only a normalisation outside log space fails.
    Then log densities from -1280 to 60, the spread of the lesson's own fits over their boxes (a short SIVI fit
    with sigma = 0.1 gives log q down to -16 000 on the banana's box): there the normalised p_i underflows to 0
    (below e^-103.3, float32's smallest number; e^-745 in float64) where q_i does not, though its log is finite
    and so is the KL. torch.distributions.kl_divergence of two Categoricals sets each such term to inf (its
    _kl_categorical_categorical reads a probability that is 0 as a point outside p's support), so it returns inf
    there, in float32 and in float64 alike, as it does for the lesson's short fits, whose KL is a few nats: the
    learner is told why, and to keep the logs."""
    lq32 = torch.linspace(40.0, 100.0, 400)
    lp32 = -2.5 * torch.linspace(-3.0, 3.0, 400) ** 2
    context = "in float32 with log densities up to 100"
    try:
        out32 = as_tensor_result(call_learner(kl_on_grid, lq32, lp32))
    except Mistake as exc:
        fail(
            f"{exc} ({context}, where exp(log q_i) overflows to inf beyond 88.7: normalise in log space, "
            "log q_i - logsumexp(log q), before any exp)"
        )
    expect_shape(out32, (), f" ({context})")
    reference = reference_kl(lq32.double(), lp32.double())
    if not torch.isfinite(out32):
        fail(
            f"the result is {fmt(out32.detach())} {context} (the KL is {fmt(reference)}): exp(log q_i) overflows "
            "to inf beyond 88.7 in float32; normalise in log space, log q_i - logsumexp(log q), and "
            "exponentiate only the normalised log q_i"
        )
    if not close(out32, reference, 1e-4, 1e-3):
        if close(out32, _categorical_kl_with_clamped_probs(lq32, lp32), 1e-4, 1e-3):
            fail(
                f"got {fmt(out32.detach())} instead of {fmt(reference)} {context}: a normalised probability here is "
                "as small as e^-27, and its log was taken after clamping it to float32's eps, 1.2e-7 (e^-16), as "
                "torch.distributions.Categorical(probs=...) does: keep the normalised log densities as logs, "
                "log q_i - logsumexp(log q), and never take the log of a probability"
            )
        fail(
            f"right in float64 but not {context}: expected {fmt(reference)}, got {fmt(out32.detach())}; normalise in "
            "log space, log q_i - logsumexp(log q), and never take the log of a probability"
        )
    lq32 = torch.linspace(-900.0, 60.0, 400)
    lp32 = -20.0 * torch.linspace(-8.0, 8.0, 400) ** 2
    context = "in float32 for log densities from -1280 to 60"
    out32 = as_tensor_result(call_learner(kl_on_grid, lq32, lp32))
    expect_shape(out32, (), f" ({context})")
    reference = reference_kl(lq32.double(), lp32.double())
    if torch.isnan(out32):
        fail(
            f"the result is nan {context}: a normalised probability below e^-103 underflows to 0 in float32, and "
            "the log of it is -inf (0 * -inf = nan, inf - inf = nan); keep the normalised log densities as logs, "
            "log q_i - logsumexp(log q), and never take the log of a probability"
        )
    if torch.isinf(out32):
        fail(
            f"the result is {fmt(out32.detach())} {context}, but the KL there is finite ({fmt(reference)}): p, "
            "normalised, falls below e^-103 at points where q does not, and its exp underflows to 0 there (e^-745 "
            "in float64) though its log is finite; a log of that 0, or torch.distributions.kl_divergence of two "
            "Categoricals (it sets each term whose probability under p is 0 to inf), makes the sum infinite. Never "
            "exponentiate p: sum_i q_i (log q_i - log p_i), both logs normalised by logsumexp, only q's weights "
            "exponentiated"
        )
    if not close(out32, reference, 1e-4, 1e-3):
        fail(
            f"right in float64 but not {context}: expected {fmt(reference)}, got {fmt(out32.detach())}; normalise "
            "in log space, log q_i - logsumexp(log q), and never take the log of a probability"
        )
