r"""The linear-Gaussian latent-variable model (probabilistic PCA) with a fixed decoder.

.. math::
    z_i \sim \mathcal N(0, I_L), \qquad x_i \mid z_i \sim \mathcal N(W z_i + b,\ \sigma^2 I_D),
    \quad i = 1..N.

Everything is exact: the posterior of each :math:`z_i` is Gaussian with a
covariance shared by all data points, and the evidence is Gaussian,

.. math::
    p(z_i\mid x_i) = \mathcal N\big(\Sigma W^\top (x_i - b)/\sigma^2,\ \Sigma\big),\quad
    \Sigma = (I + W^\top W/\sigma^2)^{-1}, \qquad
    p(x_i) = \mathcal N(b,\ WW^\top + \sigma^2 I).

Lesson 03 fits one :math:`q_i(z_i)` per data point against these; lesson 04
replaces them by an encoder.

References
----------
Tipping, M. E. & Bishop, C. M. Probabilistic principal component analysis. JRSS B 61 (1999).
"""

import torch
from torch.distributions import MultivariateNormal

from .gaussian_decoder import GaussianDecoderModel

__all__ = ["LinearGaussianModel"]


class LinearGaussianModel(GaussianDecoderModel):
    r"""PPCA with known decoder weights ``W (D, L)``, offset ``b (D,)`` and noise ``sigma``."""

    def __init__(self, W, b, sigma):
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"W must be (D, L) and b (D,); got {tuple(W.shape)} and {tuple(b.shape)}")
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        self.W, self.b, self.sigma = W, b, float(sigma)
        self.D, self.L = W.shape

    @classmethod
    def random(cls, D, L, scales, sigma, seed=0, dtype=None):
        r"""A decoder with orthogonal columns of lengths ``scales``: :math:`W = Q\,\mathrm{diag}(\text{scales})`.

        With orthogonal columns, :math:`W^\top W` is diagonal and so is the
        posterior covariance: a mean-field ``q`` can be exact. (Maximum-likelihood
        PPCA has this form too, up to a rotation; Tipping & Bishop 1999, eq. 7.)
        """
        dtype = dtype or torch.get_default_dtype()
        if len(scales) != L:
            raise ValueError(f"scales must have L = {L} entries, got {len(scales)}")
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=dtype))
        W = Q * torch.as_tensor(scales, dtype=dtype)
        b = torch.randn(D, generator=g, dtype=dtype)
        return cls(W, b, sigma)

    @property
    def dtype(self):
        return self.W.dtype

    def decode(self, z):
        r""":math:`Wz + b`, ``(..., L) -> (..., D)``."""
        return z @ self.W.T + self.b

    def posterior(self, x):
        r"""Exact posterior of each :math:`z_i`: ``(mean (N, L), cov (L, L))``; the covariance is shared."""
        precision = torch.eye(self.L, dtype=self.W.dtype) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(precision)
        mean = (x - self.b) @ self.W @ cov / self.sigma**2  # (N, L); cov is symmetric
        return mean, cov

    def log_evidence(self, x):
        r"""Exact :math:`\log p(x_i)` for each row of ``x (N, D)``, shape ``(N,)``."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.D, dtype=self.W.dtype)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)
