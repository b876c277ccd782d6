"""The checker of helpers.checks.linear_gaussian, lesson 03's 3.6 (the exact posterior of the linear-Gaussian
model), accepts correct answers written in different ways and names the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, rejects

from helpers.checks import (
    check_ppca_posterior,
)
from helpers.linear_gaussian import LinearGaussianModel

# ------------------------------------------------------------ exercise 3.6 (the exact PPCA posterior)


def ppca_ref(x, W, b, sigma):
    return LinearGaussianModel(W, b, sigma).posterior(x)


def ppca_solve(x, W, b, sigma):
    L = W.shape[1]
    precision = torch.eye(L, dtype=W.dtype) + W.T @ W / sigma**2
    mean = torch.linalg.solve(precision, W.T @ (x - b).T).T / sigma**2
    return mean, torch.linalg.inv(precision)


def ppca_woodbury(x, W, b, sigma):
    # Sigma = I - W^T (W W^T + sigma^2 I)^{-1} W, and mean = W^T (W W^T + sigma^2 I)^{-1} (x - b)
    D = W.shape[0]
    C = W @ W.T + sigma**2 * torch.eye(D, dtype=W.dtype)
    K = torch.linalg.solve(C, W).T  # (L, D)
    return (x - b) @ K.T, torch.eye(W.shape[1], dtype=W.dtype) - K @ W


@pytest.mark.parametrize("fn", [ppca_ref, ppca_solve, ppca_woodbury])
def test_ppca_posterior_accepts(fn, capsys):
    accepts(check_ppca_posterior, fn, capsys)


def test_ppca_posterior_names_mistakes(capsys):
    def with_precision(make_precision, centre=True):
        def fn(x, W, b, sigma):
            cov = torch.linalg.inv(make_precision(W, sigma))
            return ((x - b) if centre else x) @ W @ cov / sigma**2, cov

        return fn

    def eye(W):
        return torch.eye(W.shape[1], dtype=W.dtype)

    rejects(check_ppca_posterior, with_precision(lambda W, s: W.T @ W / s**2), capsys, "missing the prior's identity")
    rejects(
        check_ppca_posterior,
        with_precision(lambda W, s: eye(W) + W.T @ W / s**2, centre=False),
        capsys,
        "subtract the offset",
    )
    rejects(
        check_ppca_posterior,
        lambda x, W, b, s: (ppca_ref(x, W, b, s)[0], eye(W) + W.T @ W / s**2),
        capsys,
        "returned the precision",
    )
    rejects(
        check_ppca_posterior,
        lambda x, W, b, s: (ppca_ref(x, W, b, s)[0].T, ppca_ref(x, W, b, s)[1]),
        capsys,
        "one row per data point",
    )
    rejects(
        check_ppca_posterior,
        lambda x, W, b, s: ppca_ref(x, W, b, math.sqrt(s)),
        capsys,
        "sigma is a standard deviation",
    )
    rejects(check_ppca_posterior, lambda x, W, b, s: ppca_ref(x, W, b, s)[0], capsys, "return the tuple (mean, cov)")
