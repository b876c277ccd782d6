"""Checkers for lesson 02's CAVI on a Gaussian mixture (2.4 and 2.5).

Reference: :mod:`helpers.mixture` (Blei, Kucukelbir & McAuliffe 2017). Each mistake in the tables below is a
value the learner's answer is compared with, so the message can name it.
"""

import torch

from .. import mixture
from ._core import (
    as_tensor_result,
    as_tensor_tuple,
    call_learner,
    checker,
    diagnose,
    expect_finite,
    expect_shape,
    fail,
    flat,
)

_F64 = torch.float64


def _mixture_problem():
    # D = 3, so that sigma^D, D sigma and sigma^2 all differ; K = 4 components, so a transposed m cannot pass
    x = torch.tensor(
        [[0.5, 1.0, -0.2], [-2.0, 0.3, 1.1], [3.1, -1.2, 0.4], [0.0, 0.0, 0.0], [1.5, 2.5, -1.0]], dtype=_F64
    )
    m = torch.tensor([[0.0, 1.0, 0.3], [2.5, -1.0, -0.5], [-1.5, 0.5, 1.0], [1.0, 1.5, -0.5]], dtype=_F64)
    s2 = torch.tensor([0.1, 0.6, 2.0, 0.3], dtype=_F64)  # unequal, so the D s_k^2 term matters
    return x, m, s2


@checker("2.4", "CAVI update of the responsibilities")
def check_responsibilities(update_responsibilities):
    x, m, s2 = _mixture_problem()
    N, K, D = x.shape[0], m.shape[0], x.shape[1]
    phi = as_tensor_result(call_learner(update_responsibilities, x, m, s2))
    if phi.shape == (K, N):
        fail(f"phi is transposed: shape ({K}, {N}); return one row per data point and one column per component")
    expect_shape(phi, (N, K), " (one row per data point, one column per component)")
    expect_finite(phi)
    ref = mixture.update_responsibilities(x, m, s2)
    logits = x @ m.T - 0.5 * ((m**2).sum(-1) + D * s2)
    diagnose(
        phi,
        ref,
        {
            "missing the variance term: E[||mu_k||^2] = ||m_k||^2 + D s_k^2": torch.softmax(
                x @ m.T - 0.5 * (m**2).sum(-1), -1
            ),
            (
                "normalised over the data points; each row (one data point) must sum to 1 over the K components"
            ): torch.softmax(logits, 0),
            "not normalised: each row must sum to 1 (use torch.softmax or subtract logsumexp)": logits.exp(),
            "returns log phi; return the probabilities phi": torch.log_softmax(logits, -1),
            "sign error: phi_ik is proportional to exp(x_i . m_k - E[||mu_k||^2] / 2)": torch.softmax(-logits, -1),
            "missing the 1/2 in front of E[||mu_k||^2]": torch.softmax(x @ m.T - ((m**2).sum(-1) + D * s2), -1),
            "E[||mu_k||^2] = ||m_k||^2 + D s_k^2: the variance counts once per dimension (the factor D)": torch.softmax(
                x @ m.T - 0.5 * ((m**2).sum(-1) + s2), -1
            ),
            "s2 holds variances s_k^2; use it as it is, not its square root": torch.softmax(
                x @ m.T - 0.5 * ((m**2).sum(-1) + D * s2.sqrt()), -1
            ),
        },
    )
    far = as_tensor_result(call_learner(update_responsibilities, x * 1e3, m, s2))
    expect_finite(far, " for data far from the means: normalise in log space (torch.softmax, or logsumexp)")
    diagnose(far, mixture.update_responsibilities(x * 1e3, m, s2), {}, context=" (for data far from the means)")
    return "rows sum to 1, match the update, and stay finite far from the means."


@checker("2.5", "CAVI update of the component means")
def check_component_update(update_components):
    x, _, _ = _mixture_problem()
    phi = torch.tensor(  # K = 4 components for D = 3 dimensions, so that m (K, D) cannot be transposed unnoticed
        [
            [0.6, 0.2, 0.1, 0.1],
            [0.1, 0.1, 0.7, 0.1],
            [0.2, 0.6, 0.1, 0.1],
            [0.3, 0.2, 0.4, 0.1],
            [0.8, 0.05, 0.05, 0.1],
        ],
        dtype=_F64,
    )
    prior_std = 3.0
    m, s2 = as_tensor_tuple(call_learner(update_components, x, phi, prior_std), ("m", "s2"))
    K, D = phi.shape[1], x.shape[1]
    if m.shape == (K,) and s2.shape == (K, D):
        fail("the tuple is swapped: return (m, s2), the means (K, D) first, then the variances (K,)")
    if m.shape == (D, K):
        fail(f"m is transposed: shape ({D}, {K}); return one row per component, shape (K, D) = ({K}, {D})")
    expect_shape(m, (phi.shape[1], x.shape[1]), " (for m: one row per component)")
    expect_shape(s2, (phi.shape[1],), " (for s2: one variance per component)")
    expect_finite(flat(m, s2))
    ref_m, ref_s2 = mixture.update_components(x, phi, prior_std)
    counts, weighted = phi.sum(0), phi.T @ x
    mle_s2 = 1 / counts
    diagnose(
        flat(m, s2),
        flat(ref_m, ref_s2),
        {
            "missing the prior precision: s_k^2 = 1 / (1/sigma^2 + sum_i phi_ik)": flat(
                mle_s2.unsqueeze(-1) * weighted, mle_s2
            ),
            "the prior precision is 1/sigma^2, not 1/sigma": flat(
                (1 / (1 / prior_std + counts)).unsqueeze(-1) * weighted, 1 / (1 / prior_std + counts)
            ),
            "returns s_k, the standard deviation; return the variance s_k^2": flat(ref_m, ref_s2.sqrt()),
            "m_k must weight each x_i by phi_ik": flat(ref_s2.unsqueeze(-1) * x.sum(0), ref_s2),
            "m_k must be multiplied by s_k^2: m_k = s_k^2 sum_i phi_ik x_i": flat(weighted, ref_s2),
            "m_k = s_k^2 sum_i phi_ik x_i is shrunk towards the prior mean 0; sum(phi x) / sum(phi) is the "
            "EM (maximum-likelihood) mean": flat(weighted / counts.unsqueeze(-1), ref_s2),
            "returns the precision 1/s_k^2; return the variance s_k^2": flat(ref_m, 1 / ref_s2),
            "the prior on mu_k has variance sigma^2 (isotropic), not sigma^D": flat(
                (1 / (prior_std ** -x.shape[1] + counts)).unsqueeze(-1) * weighted,
                1 / (prior_std ** -x.shape[1] + counts),
            ),
        },
        labels=["m"] * ref_m.numel() + ["s2"] * ref_s2.numel(),
    )
    return "matches the update of q(mu_k) for every component."
