"""Gaussian building blocks: the diagonal log density, the entropy and the KL divergence.

First met in lesson 01 (the ELBO); reused wherever a Gaussian ``q``, prior or
likelihood appears, so that the course writes each formula once. Scales are
standard deviations, never variances, and logs are taken of the scales
themselves so nothing is squared before a ``log``.
"""

import math

import torch

__all__ = ["LOG_2PI", "log_normal_diag", "normal_entropy", "kl_normal"]

LOG_2PI = math.log(2 * math.pi)  # the normalising constant of every Gaussian density, once
_LOG_2PI_E = math.log(2 * math.pi * math.e)


def log_normal_diag(z, mean, log_scale):
    r"""Log density of a Gaussian with diagonal covariance, summed over the last axis.

    .. math::
        \log\mathcal N\big(z;\ \mu,\ \mathrm{diag}\,\sigma^2\big)
            = \sum_{l=1}^{L}\Big[-\frac12\Big(\frac{z_l - \mu_l}{\sigma_l}\Big)^2 - \log\sigma_l
            - \frac12\log 2\pi\Big],\qquad \sigma_l = e^{\log\sigma_l}

    Parameters
    ----------
    z : Tensor ``(..., L)``. The points.
    mean : Tensor (or number) broadcastable against ``z``, ``(..., L)``. The means :math:`\mu`.
    log_scale : Tensor broadcastable against ``z``, ``(..., L)``. The log standard deviations
        :math:`\log\sigma` (not variances): a scale that is learned as a log never passes through ``log``.

    Returns
    -------
    Tensor of the broadcast shape of ``z``, ``mean`` and ``log_scale`` without its last axis, ``(...)``;
    differentiable in all three. Leading axes broadcast as usual, so ``z (B, L)`` against
    ``mean (K, B, L)`` gives ``(K, B)``. For a univariate density keep a last axis of size 1.

    References
    ----------
    Bishop, C. M. Pattern Recognition and Machine Learning, section 2.3 (2006).
    """
    return (-0.5 * ((z - mean) / log_scale.exp()) ** 2 - log_scale - 0.5 * LOG_2PI).sum(-1)


def normal_entropy(sigma):
    r"""Differential entropy of :math:`\mathcal N(\mu, \sigma^2)`.

    .. math:: \mathbb H[q] = \tfrac12 \log(2\pi e) + \log\sigma

    Parameters
    ----------
    sigma : Tensor, any shape, positive. Standard deviation.

    Returns
    -------
    Tensor of the shape of ``sigma``, in nats.
    """
    sigma = torch.as_tensor(sigma)
    return 0.5 * _LOG_2PI_E + torch.log(sigma)


def kl_normal(mu_q, sigma_q, mu_p, sigma_p):
    r"""KL divergence :math:`\mathrm{KL}(\mathcal N(\mu_q,\sigma_q^2)\,\|\,\mathcal N(\mu_p,\sigma_p^2))`.

    .. math::
        \mathrm{KL}(q\,\|\,p) = \log\frac{\sigma_p}{\sigma_q}
            + \frac{\sigma_q^2 + (\mu_q-\mu_p)^2}{2\sigma_p^2} - \frac12

    Parameters
    ----------
    mu_q, sigma_q, mu_p, sigma_p : Tensors that broadcast together.
        Means and standard deviations (not variances).

    Returns
    -------
    Tensor of the broadcast shape, in nats; zero exactly when ``q = p``.

    References
    ----------
    Kullback, S. & Leibler, R. A. On information and sufficiency (1951).
    """
    mu_q, sigma_q, mu_p, sigma_p = (torch.as_tensor(t) for t in (mu_q, sigma_q, mu_p, sigma_p))
    ratio = sigma_q / sigma_p
    return -torch.log(ratio) + 0.5 * (ratio**2 + ((mu_q - mu_p) / sigma_p) ** 2) - 0.5
