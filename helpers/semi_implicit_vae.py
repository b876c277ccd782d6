r"""Amortized semi-implicit inference: a VAE whose encoder is a semi-implicit family.

.. math::
    q_\phi(z\mid x) = \int \mathcal N\big(z;\ \psi,\ \mathrm{diag}\,\sigma_\phi(x)^2\big)\, q_\phi(\psi\mid x)\, d\psi,
    \qquad \psi = \mu_\phi(x) + g_\phi(h_\phi(x), \varepsilon),\ \varepsilon\sim\mathcal N(0, I).

The trunk :math:`h_\phi(x)` and the heads :math:`\mu_\phi, \log\sigma_\phi` are those of
:class:`helpers.encoders.GaussianEncoder`; a small noise network :math:`g_\phi`, whose
output layer starts at zero, moves the conditional's mean by an amount that depends
on noise. Before training the encoder is therefore exactly the Gaussian one.

Training maximises the SIVI surrogate of each image's ELBO (:func:`semi_implicit_elbo_terms`);
evaluation uses the importance-weighted bound of :meth:`SemiImplicitVAE.iw_bound`, which is a
lower bound on :math:`\log p_\theta(x)` for any number of extra draws.

References
----------
Yin, M. & Zhou, M. Semi-implicit variational inference. ICML (2018), section 5 (SIVI-VAE).
Sobolev, A. & Vetrov, D. Importance weighted hierarchical variational inference. NeurIPS (2019).
"""

import math

import torch
from torch import nn

from .encoders import GaussianEncoder
from .gaussian import log_normal_diag
from .vae import VAE, log_mean_exp

__all__ = ["SemiImplicitEncoder", "SemiImplicitVAE", "semi_implicit_elbo_terms", "semi_implicit_log_weights"]


def semi_implicit_elbo_terms(x, z, psi, log_scale, log_joint):
    r"""The SIVI surrogate of each data point's ELBO, one draw of ``z`` per data point.

    .. math::
        \log p(x, z) - \log\frac{1}{K+1}\sum_{k=0}^{K}\mathcal N\big(z;\ \psi_k,\ \mathrm{diag}\,\sigma(x)^2\big),

    where ``psi[0]`` generated ``z`` and ``psi[1:]`` are ``K`` extra draws from :math:`q(\psi\mid x)`.

    Parameters
    ----------
    x : ``(B, D)``. z : ``(B, L)``. psi : ``(K + 1, B, L)``. log_scale : ``(B, L)``.
    log_joint : callable ``(x, z) -> (B,)``.

    Returns
    -------
    ``(B,)``: its expectation is a lower bound on each ELBO (Yin & Zhou 2018, theorem 1).
    """
    log_q = log_mean_exp(log_normal_diag(z, psi, log_scale), dim=0)  # (B,): psi_0 included
    return log_joint(x, z) - log_q


def semi_implicit_log_weights(x, z, psi_own, psi_extra, log_scale, log_joint):
    r"""Importance log-weights of draws from a semi-implicit encoder, its density replaced by a ``K_psi``-draw average.

    .. math::
        \log w_k = \log p_\theta(x, z_k) - \log\frac{1}{K_\psi + 1}\Big(q(z_k\mid\psi_{k0})
            + \sum_{j=1}^{K_\psi} q(z_k\mid\psi_j)\Big),\qquad q(z\mid\psi) = \mathcal N\big(z;\ \psi,\
            \mathrm{diag}\,\sigma(x)^2\big),

    each :math:`z_k` with its own generating draw :math:`\psi_{k0}`, the extra draws shared by all :math:`z_k`.
    Each weight is unbiased for :math:`p_\theta(x)` (Sobolev & Vetrov 2019), so the log of their average is a
    lower bound on :math:`\log p_\theta(x)`; the average is taken in log space.

    Parameters
    ----------
    x : ``(B, D)``. z, psi_own : ``(M, B, L)``; ``psi_own[k]`` generated ``z[k]``. psi_extra : ``(K_psi, B, L)``.
    log_scale : ``(B, L)``. log_joint : callable ``(x, z (M, B, L)) -> (M, B)``.

    Returns
    -------
    ``(M, B)``.
    """
    own = log_normal_diag(z, psi_own, log_scale).unsqueeze(1)  # (M, 1, B)
    others = log_normal_diag(z.unsqueeze(1), psi_extra.unsqueeze(0), log_scale)  # (M, K_psi, B)
    log_q = torch.logsumexp(torch.cat([own, others], 1), 1) - math.log(psi_extra.shape[0] + 1)
    return log_joint(x, z) - log_q


class SemiImplicitEncoder(nn.Module):
    """Gaussian encoder trunk and heads plus a noise network ``[h(x), eps] -> 128 -> L`` (ReLU) shifting the mean.

    Parameters
    ----------
    D, L : int. hidden : tuple of int, the trunk's widths. noise_dim : int, the dimension of ``eps``.
    noise_hidden : int, the noise network's width.
    """

    def __init__(self, D, L, hidden=(256, 256), noise_dim=8, noise_hidden=128):
        super().__init__()
        self.gaussian = GaussianEncoder(D, L, hidden)
        self.noise_net = nn.Sequential(
            nn.Linear(hidden[-1] + noise_dim, noise_hidden), nn.ReLU(), nn.Linear(noise_hidden, L)
        )
        nn.init.zeros_(self.noise_net[-1].weight)
        nn.init.zeros_(self.noise_net[-1].bias)
        self.L, self.noise_dim = L, noise_dim

    def forward(self, x):
        """``x (B, D)`` -> ``(h (B, H), mean (B, L), log_scale (B, L))``: the trunk's features and the heads."""
        h = self.gaussian.features(x)
        return (h, *self.gaussian.heads(h))

    def sample_psi(self, h, mean, n):
        r"""``n`` draws of :math:`\psi` for each data point, ``(n, B, L)``, reparameterized."""
        eps = torch.randn(n, *h.shape[:-1], self.noise_dim, dtype=h.dtype, device=h.device)
        return mean + self.noise_net(torch.cat([h.expand(n, *h.shape), eps], -1))


class SemiImplicitVAE(VAE):
    """:class:`helpers.vae.VAE` (same Binomial decoder and prior) with a :class:`SemiImplicitEncoder`."""

    def __init__(self, D=64, L=8, hidden=(256, 256), n_trials=16, noise_dim=8, noise_hidden=128):
        super().__init__(D, L, hidden, n_trials)
        self.encoder = SemiImplicitEncoder(D, L, hidden, noise_dim, noise_hidden)
        self.encoder.gaussian.set_input_scaling(scale=float(n_trials))  # counts 0..n -> [0, 1], as in VAE

    def surrogate_elbo(self, x, K, elbo_terms=semi_implicit_elbo_terms):
        """The SIVI surrogate per data point with ``K`` extra draws of psi; ``(B,)``, differentiable.

        Draws ``psi (K + 1, B, L)`` from the encoder and one ``z (B, L)`` from ``psi[0]``, then returns
        ``elbo_terms(x, z, psi, log_scale, log_joint)``: :func:`semi_implicit_elbo_terms` by default;
        lesson 07 passes its exercise 7.1, so that training runs on the learner's surrogate.
        """
        h, mean, log_scale = self.encoder(x)
        psi = self.encoder.sample_psi(h, mean, K + 1)  # psi[0] generates z
        z = psi[0] + log_scale.exp() * torch.randn_like(mean)
        return elbo_terms(x, z, psi, log_scale, self.log_joint)

    def elbo(self, x, S=1, K=100):
        """Mean over ``S`` draws of the surrogate with ``K`` extra draws: a lower bound on the ELBO; ``(B,)``."""
        return torch.stack([self.surrogate_elbo(x, K) for _ in range(S)]).mean(0)

    @torch.no_grad()
    def iw_bound(self, x, K, K_psi=100, chunk=100, log_weights=semi_implicit_log_weights):
        r"""Importance-weighted lower bound on :math:`\log p_\theta(x)` with the semi-implicit encoder; ``(B,)``.

        .. math::
            \mathbb E\Big[\log\frac1K\sum_{k=1}^K \frac{p_\theta(x, z_k)}{\tilde q(z_k\mid x)}\Big],\qquad
            \tilde q(z_k\mid x) = \frac{q(z_k\mid\psi_{k0}) + \sum_{j=1}^{K_\psi} q(z_k\mid\psi_j)}{K_\psi + 1},

        each ``z_k`` with its own generating draw :math:`\psi_{k0}`, the ``K_psi`` extra draws shared.
        Each weight has expectation :math:`p_\theta(x)` (the symmetrised-proposal argument of lesson 06),
        so by Jensen's inequality this is a lower bound for every ``K`` and ``K_psi``; it approaches the
        IWAE bound of the exact :math:`q(z\mid x)` as ``K_psi`` grows (Sobolev & Vetrov 2019). The log-weights
        come from ``log_weights`` (:func:`semi_implicit_log_weights`; lesson 07 passes its exercise).
        """
        h, mean, log_scale = self.encoder(x)
        extra = self.encoder.sample_psi(h, mean, K_psi)  # (K_psi, B, L)
        parts = []
        for start in range(0, K, chunk):
            psi0 = self.encoder.sample_psi(h, mean, min(chunk, K - start))  # (k, B, L)
            z = psi0 + log_scale.exp() * torch.randn_like(psi0)
            parts.append(log_weights(x, z, psi0, extra, log_scale, self.log_joint))  # (k, B)
        return log_mean_exp(torch.cat(parts), dim=0)
