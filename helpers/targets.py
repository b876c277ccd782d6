r"""Two-dimensional targets from the SIVI paper that a Gaussian cannot fit.

Each is a normalised log density ``log_prob(z)`` for ``z`` of shape ``(..., 2)``,
as used in the toy experiments of Yin & Zhou (2018) and their public code
(``SIVI_2d.py``):

- ``banana``: :math:`z_1\sim\mathcal N(0, 2^2)`, :math:`z_2\mid z_1\sim\mathcal N(z_1^2/4, 1)`;
- ``gaussian_mixture``: :math:`\tfrac12\mathcal N((-2, 0), I) + \tfrac12\mathcal N((2, 0), I)`;
- ``x_shape``: :math:`\tfrac12\mathcal N(0, \Sigma_+) + \tfrac12\mathcal N(0, \Sigma_-)`,
  :math:`\Sigma_\pm = \begin{pmatrix}2 & \pm1.8\\ \pm1.8 & 2\end{pmatrix}`.

Lesson 06 fits mean-field and full-rank Gaussians and semi-implicit families to them.

References
----------
Yin, M. & Zhou, M. Semi-implicit variational inference. ICML (2018).
"""

import math

import torch

from .gaussian import LOG_2PI, log_normal_diag

__all__ = ["TARGETS", "BOXES", "banana", "gaussian_mixture", "x_shape"]


def banana(z):
    r""":math:`\log\mathcal N(z_1; 0, 4) + \log\mathcal N(z_2; z_1^2/4, 1)`; ``(..., 2) -> (...)``."""
    z1, z2 = z[..., :1], z[..., 1:]  # (..., 1) each: p(z) = p(z_1) p(z_2 | z_1), one factor per coordinate
    log_2, log_1 = (torch.tensor(math.log(std), dtype=z.dtype, device=z.device) for std in (2.0, 1.0))
    return log_normal_diag(z1, 0.0, log_2) + log_normal_diag(z2, 0.25 * z1**2, log_1)


def _log_half_sum(a, b):
    # log((e^a + e^b) / 2) by logsumexp, not logaddexp: the second derivative of logaddexp is NaN when
    # a - b is large, and the score-based methods of lesson 07 differentiate the score
    return torch.logsumexp(torch.stack([a, b]), 0) - math.log(2)


def gaussian_mixture(z):
    r"""Equal mixture of :math:`\mathcal N((\pm 2, 0), I)`, in log space; ``(..., 2) -> (...)``."""
    unit = torch.zeros(2, dtype=z.dtype, device=z.device)  # log standard deviations: identity covariances
    mean = torch.tensor([2.0, 0.0], dtype=z.dtype, device=z.device)
    return _log_half_sum(log_normal_diag(z, -mean, unit), log_normal_diag(z, mean, unit))


def _zero_mean_2d_gaussian(z, var, cov):
    det = var**2 - cov**2
    quad = (var * z[..., 0] ** 2 + var * z[..., 1] ** 2 - 2 * cov * z[..., 0] * z[..., 1]) / det
    return -0.5 * quad - 0.5 * math.log(det) - LOG_2PI  # 2-D: twice half of log 2 pi


def x_shape(z):
    r"""Equal mixture of two zero-mean Gaussians with correlations :math:`\pm 0.9`; ``(..., 2) -> (...)``."""
    return _log_half_sum(_zero_mean_2d_gaussian(z, 2.0, 1.8), _zero_mean_2d_gaussian(z, 2.0, -1.8))


TARGETS = {"banana": banana, "Gaussian mixture": gaussian_mixture, "X shape": x_shape}

# Boxes that hold all but a negligible part of each target's mass, for pictures and for quadrature
# (lesson 08 computes KL divergences on a grid over them): ((z1_low, z1_high), (z2_low, z2_high)).
BOXES = {
    "banana": ((-8.0, 8.0), (-4.0, 20.0)),
    "Gaussian mixture": ((-6.0, 6.0), (-4.0, 4.0)),
    "X shape": ((-6.0, 6.0), (-6.0, 6.0)),
}
