r"""A variational autoencoder for images of counts: Gaussian encoder, Binomial decoder.

.. math::
    z \sim \mathcal N(0, I_L), \qquad
    x_d \mid z \sim \mathrm{Binomial}\big(n, \mathrm{sigmoid}(f_\theta(z)_d)\big), \quad d = 1..D,

with :math:`n = 16` for the UCI digits (each pixel counts 16 sub-pixels), and
:math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2)` from
:class:`helpers.encoders.GaussianEncoder`. The ELBO uses the closed-form KL to
the prior (Kingma & Welling 2014, appendix B):

.. math::
    \mathrm{ELBO}(x) = \mathbb E_{q_\phi(z\mid x)}[\log p_\theta(x\mid z)]
    - \tfrac12\sum_{l=1}^L \big(\mu_l^2 + \sigma_l^2 - 1 - \log\sigma_l^2\big).

These are the reference answers of lesson 05's exercises.
"""

import math

import torch
from torch import nn
from torch.distributions import Binomial

from .encoders import GaussianEncoder

__all__ = ["VAE", "reparameterize", "kl_standard_normal", "log_mean_exp"]


def reparameterize(mean, log_scale, eps):
    r""":math:`z = \mu + e^{\log\sigma}\odot\varepsilon`; broadcasts ``(B, L)`` against ``eps (S, B, L)``."""
    return mean + log_scale.exp() * eps


def kl_standard_normal(mean, log_scale):
    r""":math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2)\,\|\,\mathcal N(0, I))`, summed over the last axis.

    ``mean, log_scale``: ``(..., L)``; returns ``(...)``.
    """
    return 0.5 * (mean**2 + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(-1)


def log_mean_exp(log_w, dim=0):
    r""":math:`\log\frac1K\sum_k e^{\log w_k}` along ``dim``, with ``logsumexp``: no overflow, no underflow."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


class VAE(nn.Module):
    """Encoder ``D -> hidden -> 2L`` and decoder ``L -> hidden -> D`` (Binomial logits), ``tanh`` / ``ReLU`` MLPs.

    Parameters
    ----------
    D, L : int. Data and latent dimensions.
    hidden : tuple of int. Hidden widths of both networks.
    n_trials : int. The Binomial's :math:`n` (16 for the digits).
    """

    def __init__(self, D=64, L=8, hidden=(256, 256), n_trials=16):
        super().__init__()
        self.encoder = GaussianEncoder(D, L, hidden)
        self.encoder.scale.fill_(float(n_trials))  # counts 0..n -> [0, 1]: a fixed, data-free scaling
        widths = (L, *hidden)
        layers = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], D))
        self.decoder = nn.Sequential(*layers)
        self.D, self.L, self.n_trials = D, L, n_trials

    def log_likelihood(self, x, z):
        r""":math:`\log p_\theta(x\mid z)`: ``x (B, D)``, ``z (..., B, L)`` -> ``(..., B)``."""
        return Binomial(self.n_trials, logits=self.decoder(z)).log_prob(x).sum(-1)

    def log_joint(self, x, z):
        r""":math:`\log p_\theta(x, z)`, ``(..., B)``."""
        log_prior = -0.5 * (z**2).sum(-1) - 0.5 * self.L * math.log(2 * math.pi)
        return self.log_likelihood(x, z) + log_prior

    def elbo(self, x, S=1):
        """Per-data-point ELBO with ``S`` reparameterised draws and the closed-form KL; ``(B,)``."""
        mean, log_scale = self.encoder(x)
        eps = torch.randn(S, *mean.shape, dtype=mean.dtype, device=mean.device)
        z = reparameterize(mean, log_scale, eps)
        return self.log_likelihood(x, z).mean(0) - kl_standard_normal(mean, log_scale)

    def iwae_bound(self, x, K, chunk=250):
        r"""Importance-weighted bound :math:`\mathcal L_K` per data point, with the encoder as proposal; ``(B,)``.

        The ``K`` log-weights are computed in chunks (memory) and averaged in log space.
        """
        mean, log_scale = self.encoder(x)
        scale = log_scale.exp()
        parts = []
        for start in range(0, K, chunk):
            k = min(chunk, K - start)
            eps = torch.randn(k, *mean.shape, dtype=mean.dtype, device=mean.device)
            z = mean + scale * eps
            log_q = (-0.5 * eps**2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
            parts.append(self.log_joint(x, z) - log_q)
        return log_mean_exp(torch.cat(parts), dim=0)

    @torch.no_grad()
    def sample(self, n, generator=None):
        """``n`` images from the model: ``z`` from the prior, then the decoder's mean ``n_trials * p``; ``(n, D)``."""
        p = next(self.parameters())
        z = torch.randn(n, self.L, generator=generator, dtype=p.dtype, device=p.device)
        return self.n_trials * torch.sigmoid(self.decoder(z))
