r"""Checkers whose reference is in :mod:`helpers.linear_gaussian`: lesson 03's exact PPCA posterior (3.6),
compared with :class:`helpers.linear_gaussian.LinearGaussianModel`.
"""

import torch

from ..linear_gaussian import LinearGaussianModel
from ._core import (
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


# ---------------------------------------------------------------- 3.6 exact PPCA posterior


@checker("3.6", "exact posterior of the linear-Gaussian model")
def check_ppca_posterior(posterior):
    W = torch.tensor([[1.0, 0.5], [-0.4, 1.2], [0.3, -0.8], [2.0, 0.1]], dtype=_F64)  # columns not orthogonal
    b = torch.tensor([0.5, -1.0, 0.2, 0.0], dtype=_F64)
    sigma = 0.7
    x = torch.tensor([[1.0, 0.2, -0.5, 2.5], [-0.3, -2.0, 1.1, 0.4], [0.5, -1.0, 0.2, 0.0]], dtype=_F64)
    model = LinearGaussianModel(W, b, sigma)
    mean, cov = as_tensor_tuple(call_learner(posterior, x, W, b, sigma), ("mean", "cov"))
    N, L = x.shape[0], W.shape[1]
    if mean.shape == (L, N):
        fail(f"mean has shape {tuple(mean.shape)}; return one row per data point, shape ({N}, {L})")
    expect_shape(mean, (N, L), " (for mean: one row per data point)")
    expect_shape(cov, (L, L), " (for cov: one covariance, shared by all data points)")
    expect_finite(flat(mean, cov))
    ref_mean, ref_cov = model.posterior(x)
    eye = torch.eye(L, dtype=_F64)

    def with_precision(precision, centred=x - b, sigma_power=2):
        c = torch.linalg.inv(precision)
        return flat(centred @ W @ c / sigma**sigma_power, c)

    diagnose(
        flat(mean, cov),
        flat(ref_mean, ref_cov),
        {
            "missing the prior's identity: the posterior precision is I + W^T W / sigma^2 (without I it is "
            "least squares)": with_precision(W.T @ W / sigma**2),
            "sigma is a standard deviation: use sigma^2 in I + W^T W / sigma^2 and in the mean": with_precision(
                eye + W.T @ W / sigma, sigma_power=1
            ),
            "the mean must subtract the offset: Sigma W^T (x - b) / sigma^2": with_precision(
                eye + W.T @ W / sigma**2, x
            ),
            "the offset is subtracted: x - b, not x + b": with_precision(eye + W.T @ W / sigma**2, x + b),
            "returned the precision I + W^T W / sigma^2; return its inverse, the covariance": flat(
                ref_mean, eye + W.T @ W / sigma**2
            ),
            "the mean misses the factor Sigma: mean = Sigma W^T (x - b) / sigma^2": flat(
                (x - b) @ W / sigma**2, ref_cov
            ),
            "the mean misses the 1/sigma^2: mean = Sigma W^T (x - b) / sigma^2": flat(ref_mean * sigma**2, ref_cov),
        },
        labels=["mean"] * ref_mean.numel() + ["cov"] * ref_cov.numel(),
    )
    return "matches the exact posterior mean of every data point and the shared covariance."
