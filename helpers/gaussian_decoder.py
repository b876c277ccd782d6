r"""Latent-variable models with a standard normal prior and a Gaussian decoder.

.. math::
    z \sim \mathcal N(0, I_L), \qquad x \mid z \sim \mathcal N\big(f(z),\ \sigma^2 I_D\big).

:class:`GaussianDecoderModel` holds what every such model shares (sampling,
the log prior, likelihood and joint); subclasses give the decoder ``decode``:
linear in :class:`helpers.linear_gaussian.LinearGaussianModel`, a fixed network
in :class:`helpers.nonlinear_gaussian.NonlinearGaussianModel`.
"""

import math

import torch

from .gaussian import LOG_2PI

__all__ = ["GaussianDecoderModel"]


class GaussianDecoderModel:
    """Base class: subclasses set ``D``, ``L``, ``sigma``, ``dtype`` and define ``decode(z)``: ``(..., L) -> (..., D)``.

    ``decode`` raises ``NotImplementedError`` here.
    """

    def decode(self, z):
        raise NotImplementedError

    def sample(self, N, generator=None):
        """Draw ``(z (N, L), x (N, D))`` from the model."""
        z = torch.randn(N, self.L, generator=generator, dtype=self.dtype)
        noise = torch.randn(N, self.D, generator=generator, dtype=self.dtype)
        return z, self.decode(z) + self.sigma * noise

    def log_likelihood(self, x, z):
        r""":math:`\log\mathcal N(x; f(z), \sigma^2 I)`; ``x (..., D)``, ``z (..., L)`` broadcast to ``(...)``."""
        r = x - self.decode(z)
        return -0.5 * (r**2).sum(-1) / self.sigma**2 - self.D * (math.log(self.sigma) + 0.5 * LOG_2PI)

    def log_prior(self, z):
        r""":math:`\log\mathcal N(z; 0, I)`, ``(..., L) -> (...)``."""
        return -0.5 * (z**2).sum(-1) - 0.5 * self.L * LOG_2PI

    def log_joint(self, x, z):
        r""":math:`\log p(x, z)`, broadcasting ``x (..., D)`` against ``z (..., L)``."""
        return self.log_likelihood(x, z) + self.log_prior(z)
