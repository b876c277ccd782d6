"""Gaussian building blocks: the diagonal and full-covariance log densities, the entropy and the KL divergence.

First met in lesson 01 (the ELBO); reused wherever a Gaussian ``q``, prior or
likelihood appears, so that the course writes each formula once. Scales are
standard deviations, never variances, and logs are taken of the scales
themselves so nothing is squared before a ``log``.
"""

import math

import torch

__all__ = ["LOG_2PI", "log_normal_diag", "log_normal_tril", "normal_entropy", "kl_normal"]

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
    u = (z - mean) * torch.exp(-log_scale)  # the standardised points, (..., L)
    L = u.shape[-1]
    # the normaliser is summed over the scales' own shape, not over the broadcast (S, K, L) of a SIVI bound:
    # half the passes over the largest tensor, twice as fast there (a scale shared by all L axes counts L times)
    log_scale = log_scale.expand(*log_scale.shape[:-1], L) if log_scale.dim() else log_scale.expand(L)
    return -0.5 * u.square().sum(-1) - (log_scale.sum(-1) + 0.5 * L * LOG_2PI)


def log_normal_tril(z, mean, scale_tril):
    r"""Log density of a Gaussian with full covariance :math:`\Sigma = CC^\top`, given its Cholesky factor :math:`C`.

    .. math::
        \log\mathcal N\big(z;\ \mu,\ CC^\top\big) = -\frac12\|u\|^2 - \sum_{l=1}^{L}\log C_{ll}
            - \frac L2\log 2\pi,\qquad u = C^{-1}(z - \mu),

    since :math:`(z-\mu)^\top\Sigma^{-1}(z-\mu) = \|C^{-1}(z-\mu)\|^2` and
    :math:`\log|\Sigma|^{1/2} = \sum_l\log C_{ll}`. :math:`C^{-1}` is formed once by a triangular solve and
    applied to ``z`` and ``mean`` separately, so ``S`` points against ``K`` means cost :math:`(S + K)L^2`
    multiplications rather than :math:`SKL^2` (lesson 06's SIVI bound evaluates every such pair).

    Parameters
    ----------
    z : Tensor ``(..., L)``. mean : Tensor broadcastable against ``z``, ``(..., L)``.
    scale_tril : Tensor ``(L, L)``, lower-triangular with a positive diagonal.

    Returns
    -------
    Tensor ``(...)``, the broadcast shape without its last axis; differentiable in all three arguments.

    References
    ----------
    Bishop, C. M. Pattern Recognition and Machine Learning, section 2.3 (2006).
    Yin, M. & Zhou, M. Semi-implicit variational inference. ICML (2018): the full conditional of its
    logistic-regression experiment.
    """
    L = scale_tril.shape[-1]
    eye = torch.eye(L, dtype=scale_tril.dtype, device=scale_tril.device)
    C_inv = torch.linalg.solve_triangular(scale_tril, eye, upper=False)  # (L, L)
    u = z @ C_inv.T - mean @ C_inv.T  # C^{-1}(z - mean), each side transformed before broadcasting
    return -0.5 * (u**2).sum(-1) - scale_tril.diagonal().log().sum() - 0.5 * L * LOG_2PI


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
