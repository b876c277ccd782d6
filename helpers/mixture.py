r"""Bayesian mixture of unit-variance Gaussians and its CAVI updates.

Model (Blei, Kucukelbir & McAuliffe 2017, section 3):

.. math::
    \mu_k \sim \mathcal N(0, \sigma^2 I_D), \quad
    c_i \sim \mathrm{Cat}(1/K, \dots, 1/K), \quad
    x_i \mid c_i, \mu \sim \mathcal N(\mu_{c_i}, I_D).

Mean-field family: :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I_D)` (global) and
:math:`q(c_i) = \mathrm{Cat}(\varphi_i)` (local: one per data point).
Shapes: ``x (N, D)``, ``phi (N, K)``, ``m (K, D)``, ``s2 (K,)``.
"""

import math

import torch

from .gaussian import LOG_2PI

__all__ = ["sample_mixture", "update_responsibilities", "update_components", "mixture_elbo"]


def sample_mixture(N, K, D=2, prior_std=5.0, seed=0):
    """Draw ``(x, c, mu)``: data ``(N, D)``, assignments ``(N,)`` and component means ``(K, D)``."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.get_default_dtype()
    mu = prior_std * torch.randn(K, D, generator=g, dtype=dtype)
    c = torch.randint(0, K, (N,), generator=g)
    x = mu[c] + torch.randn(N, D, generator=g, dtype=dtype)
    return x, c, mu


def update_responsibilities(x, m, s2):
    r"""CAVI update of the local factors :math:`q(c_i)`, in log space.

    .. math::
        \varphi_{ik} \propto \exp\Big(x_i^\top m_k - \tfrac12\,\mathbb E[\|\mu_k\|^2]\Big),
        \qquad \mathbb E[\|\mu_k\|^2] = \|m_k\|^2 + D s_k^2

    Normalised with ``logsumexp`` over ``k``. Returns ``phi (N, K)``. Reference
    answer of exercise 2.3 (lesson 02).
    """
    D = x.shape[-1]
    logits = x @ m.T - 0.5 * ((m**2).sum(-1) + D * s2)  # (N, K)
    return torch.softmax(logits, dim=-1)


def update_components(x, phi, prior_std):
    r"""CAVI update of the global factors :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I)`.

    .. math::
        s_k^2 = \Big(\frac1{\sigma^2} + \sum_i\varphi_{ik}\Big)^{-1}, \qquad
        m_k = s_k^2 \sum_i \varphi_{ik}\, x_i

    Returns ``(m (K, D), s2 (K,))``. Reference answer of exercise 2.4 (lesson 02).
    """
    s2 = 1.0 / (1.0 / prior_std**2 + phi.sum(0))
    return s2.unsqueeze(-1) * (phi.T @ x), s2


def mixture_elbo(x, phi, m, s2, prior_std):
    r"""The mean-field ELBO of the Bayesian Gaussian mixture, in closed form.

    .. math::
        \sum_k \mathbb E[\log p(\mu_k)] + \sum_i \big(\mathbb E[\log p(c_i)]
        + \mathbb E[\log p(x_i\mid c_i,\mu)]\big) + \sum_i \mathbb H[q(c_i)] + \sum_k \mathbb H[q(\mu_k)]

    with :math:`\mathbb E\|x_i-\mu_k\|^2 = \|x_i-m_k\|^2 + D s_k^2`; ``0 log 0 = 0`` in the entropies.
    """
    N, D = x.shape
    K = m.shape[0]
    e_prior = (-0.5 * D * math.log(2 * math.pi * prior_std**2) - ((m**2).sum(-1) + D * s2) / (2 * prior_std**2)).sum()
    sq = ((x.unsqueeze(1) - m.unsqueeze(0)) ** 2).sum(-1) + D * s2  # (N, K): E||x_i - mu_k||^2
    e_lik = (phi * (-0.5 * D * LOG_2PI - 0.5 * sq)).sum()
    e_assign = -N * math.log(K)
    h_c = -torch.special.xlogy(phi, phi).sum()
    h_mu = (0.5 * D * (1 + LOG_2PI + torch.log(s2))).sum()
    return e_prior + e_lik + e_assign + h_c + h_mu
