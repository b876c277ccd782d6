"""Closed forms for univariate Gaussians: entropy and KL divergence.

First met in lesson 01 (the ELBO); reused wherever a Gaussian ``q`` appears.
Scales are standard deviations, never variances, and logs are taken of the
scales themselves so nothing is squared before a ``log``.
"""

import math

import torch

__all__ = ["normal_entropy", "kl_normal"]

_LOG_2PI_E = math.log(2 * math.pi * math.e)


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
