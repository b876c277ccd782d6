r"""A latent-variable model with a fixed nonlinear decoder: no closed-form posterior.

.. math::
    z_i \sim \mathcal N(0, I_L), \qquad x_i \mid z_i \sim \mathcal N\big(f(z_i),\ \sigma^2 I_D\big), \qquad
    f(z) = W_2 \tanh(W_1 z + b_1) + b_2 .

The decoder's weights are drawn once from a seed and then fixed: the model is
known, only inference is approximate. With ``L = 2`` the evidence
:math:`p(x) = \int p(x, z)\,dz` can be computed by quadrature on a grid
(:meth:`log_evidence_grid`), an independent check of importance-sampling estimates.
Lesson 04 measures approximation and amortization gaps on it.
"""

import math

import torch

from .gaussian_decoder import GaussianDecoderModel

__all__ = ["NonlinearGaussianModel"]


class NonlinearGaussianModel(GaussianDecoderModel):
    """Fixed random ``tanh`` decoder ``L -> H -> D`` with Gaussian noise ``sigma``."""

    def __init__(self, D=10, L=2, H=32, sigma=0.3, seed=0, dtype=None):
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        for name, value in (("D", D), ("L", L), ("H", H)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        dtype = dtype or torch.get_default_dtype()
        g = torch.Generator().manual_seed(seed)
        self.W1 = 0.7 * torch.randn(H, L, generator=g, dtype=dtype)
        self.b1 = 0.5 * torch.randn(H, generator=g, dtype=dtype)
        self.W2 = 2.0 / math.sqrt(H) * torch.randn(D, H, generator=g, dtype=dtype)
        self.b2 = 0.1 * torch.randn(D, generator=g, dtype=dtype)
        self.D, self.L, self.sigma = D, L, float(sigma)

    def decode(self, z):
        r""":math:`f(z)`, ``(..., L) -> (..., D)``."""
        return torch.tanh(z @ self.W1.T + self.b1) @ self.W2.T + self.b2

    @property
    def dtype(self):
        return self.W1.dtype

    def log_evidence_grid(self, x, half_width=6.0, n=301):
        r""":math:`\log p(x_i)` by the midpoint rule on an ``n x n`` grid over ``[-w, w]^2``.

        Only for ``L = 2``. ``x``: ``(N, D)``; returns ``(N,)``. Accurate when
        the posterior lies well inside the grid and is wider than a few cells
        (here: :math:`\sigma = 0.3` and a standard normal prior).
        """
        if self.L != 2:
            raise ValueError("grid quadrature is implemented for L = 2 only")
        h = 2 * half_width / n
        axis = -half_width + h * (torch.arange(n, dtype=self.W1.dtype) + 0.5)
        Z1, Z2 = torch.meshgrid(axis, axis, indexing="ij")
        grid = torch.stack([Z1.reshape(-1), Z2.reshape(-1)], -1)  # (n^2, 2)
        out = []
        for xi in x:
            out.append(torch.logsumexp(self.log_joint(xi, grid), 0) + 2 * math.log(h))
        return torch.stack(out)
