r"""Checkers whose reference is in :mod:`helpers.kernel_stein` (lesson 07).

7.6, the kernel Stein discrepancy as a U-statistic, is compared with :func:`helpers.kernel_stein.ksd_u_statistic`
on fixed inputs, each slip (the diagonal included, ``S^2`` for ``S(S - 1)``, the kernel's factor 2 or square,
each pair once, a dot product that is not one, ...) named by the value it gives, with gradients with respect to
``z`` and ``diff``; then its speed, by the number of torch operations one call runs at three small ``S``,
extrapolated to the lesson's ``S = 128`` (a count, not a clock: no verdict depends on the machine's load). 7.7, the
KSIVI loss, is compared with :func:`helpers.kernel_stein.ksivi_loss`, value and gradient, on a stand-in family
whose draws are fixed functions of its parameters and which has the whole interface of
:class:`helpers.semi_implicit.SemiImplicitGaussian` (``_FixedFamily``, which lesson 08's checkers extend); the
U-statistic is passed in as a spy, so the checker sees the bandwidth the answer hands it.
"""

import functools

import torch
from torch.overrides import TorchFunctionMode

from ..gaussian import log_normal_diag
from ..kernel_stein import ksd_u_statistic as reference_ksd
from ..kernel_stein import ksivi_loss as reference_ksivi_loss
from ..kernel_stein import median_bandwidth, rbf_kernel
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


# ---------------------------------------------------------------- 7.6


class _CountOps(TorchFunctionMode):
    """Counts the torch functions and tensor methods called inside it (indexing and arithmetic included)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops_of(fn, *args):
    """``(fn(*args), the number of torch operations it ran)``: called through :func:`call_learner`, so that the count
    is recorded with the output and the grader's replay reads the same verdict."""
    with _CountOps() as counter:
        out = fn(*args)
    return out, counter.count


# The lesson's KSIVI fits (section 3) call the U-statistic at S = 128, with its gradient, 1200 times per target.
# Its cost there is that of the torch operations it runs: a Python loop runs some for each draw, or each pair,
# where the vectorised statistic runs a fixed dozen or so. Counted at three small S (exact for a count quadratic in
# S, as a loop's is) and extrapolated to S = 128, the count says how the answer scales, whatever the machine's load:
# no clock is read. Above _MAX_OPS operations per call (a few microseconds each, forward and backward) the fits take
# minutes longer; a double loop over the pairs runs over 16,000 iterations there, about an hour for section 3.
_LESSON_S, _COUNT_SIZES, _MAX_OPS = 128, (5, 10, 20), 5000


def _extrapolate(counts, sizes, S):
    """The quadratic through the points ``(sizes[i], counts[i])``, at ``S``."""
    total = 0.0
    for i, (s_i, c_i) in enumerate(zip(sizes, counts, strict=True)):
        weight = 1.0
        for j, s_j in enumerate(sizes):
            if j != i:
                weight *= (S - s_j) / (s_i - s_j)
        total += c_i * weight
    return total


def _expect_vectorised(ksd_u_statistic, h):
    """Name a correct answer that loops in Python over the draws or the pairs: too slow for the lesson's fits."""
    counts = []
    for S in _COUNT_SIZES:
        z, diff = torch.randn(S, 2, dtype=_F64), torch.randn(S, 2, dtype=_F64)
        out, count = call_learner(functools.partial(_ops_of, ksd_u_statistic), z, diff, h)
        if not close(as_tensor_result(out), reference_ksd(z, diff, h), 1e-6, 1e-9):
            fail(f"right for S = 6 draws, but not for S = {S}: nothing in the statistic depends on a particular S")
        counts.append(count)
    at_lesson = _extrapolate(counts, _COUNT_SIZES, _LESSON_S)
    if at_lesson <= _MAX_OPS:
        return
    z, diff = torch.randn(_COUNT_SIZES[-1], 2, dtype=_F64), torch.randn(_COUNT_SIZES[-1], 2, dtype=_F64)
    with _CountOps() as counter:
        reference_ksd(z, diff, h)
    pairs = counts[2] - 2 * counts[1] + counts[0] > 0  # a positive second difference: the count grows like S^2
    fail(
        f"right so far, but too slow: your function runs {counts[0]} torch operations for S = {_COUNT_SIZES[0]} draws, "
        f"{counts[2]} for S = {_COUNT_SIZES[2]}, and so about {at_lesson:,.0f} for the S = {_LESSON_S} draws of the "
        f"lesson's KSIVI fits, which call it with its gradient 2400 times: at some 5 microseconds an operation, "
        f"forward and backward, about {at_lesson * 2400 * 5e-6 / 60:.0f} minutes (the reference runs {counter.count} "
        "operations, whatever S). "
        + (
            "A Python loop runs over the pairs (i, j): "
            if pairs
            else "A Python loop runs over the draws, with many operations in each step: "
        )
        + "build the (S, S) matrices at once instead, the squared distances |z_i - z_j|^2 by broadcasting "
        "z against itself (shapes (S, 1, L) and (1, S, L)), the dot products d_i . d_j as one matrix product "
        "of diff with its transpose, and sum their product off the diagonal"
    )


def _pair_shapes_error(ksd_u_statistic, z, diff, h):
    """The learner's call, with a broadcasting error between an (S, S) and an (L, L) table named."""
    try:
        return call_learner(ksd_u_statistic, z, diff, h)
    except Mistake as exc:
        text = str(exc)
        S, L = diff.shape
        if "must match the size of tensor" in text and f"({S})" in text and f"({L})" in text:
            fail(
                f"{text}. Each term pairs two draws, k(z_i, z_j) d_i . d_j, so the kernel and the dot products are "
                f"both (S, S) matrices (here S = {S} draws of L = {L} dimensions), and the dot product sums over the "
                "L coordinates: something has L where S belongs (diff^T diff is the (L, L) matrix of sums over the "
                "draws; the products d_il d_jl before their sum over l are (S, S, L)). The dot products of the rows "
                "of diff are diff times its transpose"
            )
        raise


@checker("7.6", "the kernel Stein discrepancy as a U-statistic")
def check_ksd_u_statistic(ksd_u_statistic):
    torch.manual_seed(0)
    S = 6
    z, diff, h = torch.randn(S, 2, dtype=_F64), torch.randn(S, 2, dtype=_F64), 0.7
    out = as_tensor_result(_pair_shapes_error(ksd_u_statistic, z, diff, h))
    if out.shape == (S, S):
        fail("returned the (S, S) matrix of terms; return their average over the pairs i != j, a 0-d tensor")
    expect_shape(out, (), " (one number: a 0-d tensor)")
    expect_finite(out)
    kernel = rbf_kernel(z, h)
    gram = kernel * (diff @ diff.T)
    off = gram.sum() - gram.diagonal().sum()
    sq = torch.cdist(z, z) ** 2

    def u_statistic(terms):  # the average over the pairs i != j of an (S, S) table
        return (terms.sum() - terms.diagonal().sum()) / (S * (S - 1))

    dot = "the dot product d_i . d_j = sum_l d_il d_jl pairs the coordinates of the two score differences one by one; "
    diagnose(
        out,
        reference_ksd(z, diff, h),
        {
            "the diagonal i = j is included: there the conditional score's noise is squared instead of averaged "
            "away, which biases the estimate upwards; sum over i != j only": gram.mean(),
            "the diagonal is included (divide by S(S - 1) the sum over i != j only): its terms are biased": gram.sum()
            / (S * (S - 1)),
            "there are S(S - 1) pairs i != j: divide by S(S - 1), not S^2": off / S**2,
            "the kernel is exp(-|z_i - z_j|^2 / (2 h^2)): the factor 2 is missing": (
                (torch.exp(-sq / h**2) * (diff @ diff.T)).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "the kernel divides the squared distance by 2 h^2 (h is a length); you divided by 2 h": (
                (torch.exp(-sq / (2 * h)) * (diff @ diff.T)).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "the kernel uses the squared distance |z_i - z_j|^2, not the distance itself": (
                (torch.exp(-sq.sqrt() / (2 * h**2)) * (diff @ diff.T)).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "the kernel weights are missing: the terms are k(z_i, z_j) d_i . d_j": (
                (diff @ diff.T).sum() - (diff**2).sum()
            )
            / (S * (S - 1)),
            "sign error: KSD^2 is a sum of k(z_i, z_j) d_i . d_j": -off / (S * (S - 1)),
            (
                "that sums each pair once (i < j) but divides by S(S - 1), the number of ordered pairs: "
                "sum over all i != j (both (i, j) and (j, i)), or divide the sum over i < j by S(S - 1) / 2"
            ): off / 2 / (S * (S - 1)),
            dot + "you multiplied the sums of their coordinates, (sum_l d_il)(sum_l d_jl), which adds the cross "
            "terms d_il d_jm of different coordinates. Take the matrix product of diff with its transpose": u_statistic(
                kernel * torch.outer(diff.sum(-1), diff.sum(-1))
            ),
            dot + "your terms hold |d_j|^2 (or |d_i|^2), the squared norm of one draw's difference alone, broadcast "
            "across the pairs: a draw's own norm, not its agreement with the other draw. Take the matrix product of "
            "diff with its transpose": u_statistic(kernel * (diff**2).sum(-1)),
        },
    )

    z_grad, diff_grad = z.clone().requires_grad_(True), diff.clone().requires_grad_(True)
    out = as_tensor_result(call_learner(ksd_u_statistic, z_grad, diff_grad, h))
    if not out.requires_grad:
        fail("no gradient flows to z: build the kernel with torch operations (no .detach(), .item() or numpy)")
    g, g_diff = learner_grad(out, (z_grad, diff_grad))
    if g is None:
        fail("no gradient flows to z: build the kernel from z with torch operations (no .detach())")
    diff_r = diff.clone().requires_grad_(True)
    (r_diff,) = torch.autograd.grad(reference_ksd(z, diff_r, h), diff_r)
    if g_diff is None or not close(g_diff, r_diff, 1e-5, 1e-8):
        fail(
            "no (or a wrong) gradient flows to diff: training needs it, since diff holds the scores of the draws; "
            "do not detach it"
        )
    if not torch.isfinite(g).all():
        fail(
            "the gradient with respect to z is not finite; compute the squared distances with torch operations, "
            "e.g. ((z[:, None] - z[None]) ** 2).sum(-1)"
        )
    _expect_vectorised(ksd_u_statistic, h)
    return (
        "an unbiased U-statistic over the pairs i != j, differentiable in z, vectorised: a fixed number of "
        "operations whatever S."
    )


# ---------------------------------------------------------------- 7.7


class _FixedFamily(torch.nn.Module):
    """A stand-in for a semi-implicit family whose draws are fixed functions of its parameters: every call of
    ``rsample(S)`` returns the same ``(z, psi)``, differentiable in ``shift`` and ``log_sigma``, so that a loss
    built from it can be compared with the reference's value and gradient exactly. ``sample_psi`` returns
    *other* draws, as a family's fresh draws would be. It has the whole interface of
    :class:`helpers.semi_implicit.SemiImplicitGaussian` that lessons 06 to 08 teach (``sigma``, ``log_sigma``,
    ``scale_tril``, ``full_covariance``, ``L``, ``noise_dim``, ``sample_psi``, ``rsample``, ``log_conditional``)."""

    full_covariance = False
    L = noise_dim = 2

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.register_buffer("psi_base", torch.randn(6, 2, generator=g, dtype=_F64))
        self.register_buffer("eps", torch.randn(6, 2, generator=g, dtype=_F64))
        self.register_buffer("other_psi", torch.randn(6, 2, generator=g, dtype=_F64))
        self.shift = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=_F64))
        self.log_sigma = torch.nn.Parameter(torch.tensor([-0.4, 0.1], dtype=_F64))

    @property
    def sigma(self):
        return self.log_sigma.exp()

    def rsample(self, S):
        psi = self.psi_base[:S] + self.shift
        return psi + self.sigma * self.eps[:S], psi

    def sample_psi(self, n):
        return self.other_psi[:n] + self.shift

    def scale_tril(self):
        return torch.diag_embed(self.sigma)

    def log_conditional(self, z, psi):
        return log_normal_diag(z, psi, self.log_sigma)


def _banana_like(z):  # a non-Gaussian target, so that its score depends on z non-linearly
    return -0.5 * z[:, 0] ** 2 / 4 - 0.5 * (z[:, 1] - z[:, 0] ** 2 / 4) ** 2


def _ksivi_variant(kind, q, S, h):
    z, psi = q.rsample(S)
    if kind == "no create_graph":
        (score_p,) = torch.autograd.grad(_banana_like(z).sum(), z, retain_graph=True)
    else:
        (score_p,) = torch.autograd.grad(_banana_like(z).sum(), z, create_graph=True)
    if kind == "mean score":
        score_p = score_p / S
    if kind == "no target score":
        score_p = torch.zeros_like(score_p)
    score_q = {
        "sigma, not sigma^2": -(z - psi) / q.sigma,
        "conditional score sign": (z - psi) / q.sigma**2,
        "fresh psi": -(z - q.sample_psi(S)) / q.sigma**2,
        "no conditional score": torch.zeros_like(z),
    }.get(kind, -(z - psi) / q.sigma**2)
    return (-1 if kind == "loss sign" else 1) * reference_ksd(z, score_p - score_q, h)


_KSIVI_MISTAKES = {
    "no create_graph": "the value is right but its gradient is not: the target's score depends on z, which depends on "
    "the family's parameters; take it with torch.autograd.grad(..., create_graph=True) so that it stays in the graph",
    "sigma, not sigma^2": "the conditional score is -(z - psi) / sigma^2: the gradient of log N(z; psi, sigma^2) "
    "divides by the variance, not the standard deviation",
    "conditional score sign": "a sign is off: d_i = s_p(z_i) - grad_z log q(z_i | psi_i) = s_p(z_i) + (z_i - psi_i) "
    "/ sigma^2 (the conditional score is -(z - psi) / sigma^2, and d_i is a difference of scores, not a sum)",
    "fresh psi": "the conditional score needs psi_i, the draw that generated z_i (the second output of "
    "q.rsample(S)), not a fresh draw of psi",
    "no target score": "the target's score s_p(z_i) is missing from d_i: KSD compares two scores, d_i = s_p(z_i) - "
    "grad_z log q(z_i | psi_i); take s_p with torch.autograd.grad(log_target(z).sum(), z, create_graph=True)",
    "no conditional score": "the conditional score is missing from d_i: d_i = s_p(z_i) - grad_z log q(z_i | psi_i), "
    "with grad_z log q(z | psi) = -(z - psi) / sigma^2 standing in for the intractable s_q(z_i)",
    "loss sign": "the loss has the wrong sign: KSD^2 is zero at q = p and positive elsewhere, and training minimises "
    "it; return the U-statistic itself, not its negative",
    "mean score": "the target's score is divided by S: take the gradient of log_target(z).sum(), not of its mean "
    "(each z_i's score is the gradient of its own log density)",
}


@checker("7.7", "the KSIVI loss with conditional scores")
def check_ksivi_loss(ksivi_loss):
    q, S, h = _FixedFamily(), 6, 0.9
    calls = []

    def spy_ksd(z, diff, bandwidth):  # the statistic the learner must hand the pieces to
        calls.append(float(bandwidth))
        return reference_ksd(z, diff, bandwidth)

    out = as_tensor_result(call_learner(ksivi_loss, _banana_like, q, S, h, spy_ksd))
    expect_shape(out, (), " (the loss is one number: a 0-d tensor)")
    expect_finite(out)
    if not calls:
        fail("the U-statistic you are given (the argument ksd) was never called: hand it z, the d_i and the bandwidth")
    if abs(calls[-1] - h) > 1e-12:
        fail(
            f"the bandwidth passed was {h}, but the statistic received {calls[-1]:.6g}: use the bandwidth you are given"
        )
    reference = reference_ksivi_loss(_banana_like, q, S, bandwidth=h)
    variants = {kind: _ksivi_variant(kind, q, S, h) for kind in _KSIVI_MISTAKES}
    if not close(out, reference, 1e-6, 1e-9):
        for kind, message in _KSIVI_MISTAKES.items():
            if kind != "no create_graph" and close(out, variants[kind], 1e-6, 1e-9):
                fail(message)
        fail(f"does not match the reference: expected {fmt(reference)}, got {fmt(out)}")
    params = [q.shift, q.log_sigma]
    if not out.requires_grad:
        fail("no gradient reaches the family's parameters: build the loss from q.rsample without .detach()")
    got = learner_grad(out, params)
    want = torch.autograd.grad(reference, params)
    if any(g is None for g in got) or not all(close(g, w, 1e-6, 1e-9) for g, w in zip(got, want, strict=True)):
        no_graph = torch.autograd.grad(variants["no create_graph"], params)
        if all(g is not None for g in got) and all(close(g, w, 1e-6, 1e-9) for g, w in zip(got, no_graph, strict=True)):
            fail(_KSIVI_MISTAKES["no create_graph"])
        fail(
            "the value is right but its gradient with respect to the family's parameters is not: keep z, psi, "
            "sigma and the target's score in the graph (no .detach(), create_graph=True for the score)"
        )
    # the default bandwidth: the median heuristic of the same draws
    calls.clear()
    call_learner(ksivi_loss, _banana_like, q, S, None, spy_ksd)
    z, _ = q.rsample(S)
    if not calls or abs(calls[-1] - float(median_bandwidth(z.detach()))) > 1e-9:
        fail("with bandwidth=None, use the median heuristic of the draws: median_bandwidth(z)")
    return "the U-statistic of KSD^2 with d_i = s_p(z_i) + (z_i - psi_i) / sigma^2, differentiable through the score."
