r"""Conjugate models whose posterior and evidence are exact.

They let every identity of lesson 01 (the ELBO) be checked to round-off:
:math:`\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q\,\|\,p(z\mid x))`.
"""

import math
from dataclasses import dataclass

import torch

from .gaussian import LOG_2PI, log_normal_diag, normal_entropy

__all__ = ["NormalNormal"]


@dataclass(frozen=True)
class NormalNormal:
    r"""Unknown mean :math:`z`, known noise: the Normal-Normal model.

    .. math::
        z \sim \mathcal N(m_0, s_0^2), \qquad
        x_i \mid z \sim \mathcal N(z, \sigma^2), \quad i = 1..N.

    Parameters
    ----------
    prior_mean, prior_std : float. :math:`m_0` and :math:`s_0`.
    noise_std : float. :math:`\sigma`, the known observation noise.

    All methods take data ``x`` of shape ``(N,)`` and broadcast over the
    shapes of ``z`` (or of ``m`` and ``s``), returning float64 tensors when
    given float64 input.

    References
    ----------
    Bishop, C. M. Pattern Recognition and Machine Learning, section 2.3.6 (2006).
    Murphy, K. P. Conjugate Bayesian analysis of the Gaussian distribution (2007).
    """

    prior_mean: float = 0.0
    prior_std: float = 1.0
    noise_std: float = 1.0

    def __post_init__(self):
        for name in ("prior_std", "noise_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"NormalNormal: {name} must be a positive finite number, got {value!r}")

    def sample(self, N, generator=None):
        """Draw ``(z, x)``: one latent mean and ``N`` observations, ``x`` of shape ``(N,)``."""
        dtype = torch.get_default_dtype()
        z = self.prior_mean + self.prior_std * torch.randn((), generator=generator, dtype=dtype)
        x = z + self.noise_std * torch.randn(N, generator=generator, dtype=dtype)
        return z, x

    def log_prior(self, z):
        r""":math:`\log p(z)`, shape of ``z``."""
        z = torch.as_tensor(z)
        return log_normal_diag(z.unsqueeze(-1), self.prior_mean, _log(self.prior_std))  # one coordinate

    def log_likelihood(self, x, z):
        r""":math:`\log p(x\mid z) = \sum_i \log\mathcal N(x_i; z, \sigma^2)`, shape of ``z``."""
        x, z = torch.as_tensor(x), torch.as_tensor(z)
        return log_normal_diag(x, z.unsqueeze(-1), _log(self.noise_std))  # (..., N) summed over the N data points

    def log_joint(self, x, z):
        r""":math:`\log p_\theta(x, z) = \log p(x\mid z) + \log p(z)`, shape of ``z``."""
        return self.log_likelihood(x, z) + self.log_prior(z)

    def posterior(self, x):
        r"""Exact posterior :math:`p(z\mid x) = \mathcal N(m_N, s_N^2)`.

        .. math::
            \frac1{s_N^2} = \frac1{s_0^2} + \frac N{\sigma^2}, \qquad
            m_N = s_N^2\Big(\frac{m_0}{s_0^2} + \frac{\sum_i x_i}{\sigma^2}\Big)

        Returns ``(m_N, s_N)`` as 0-d tensors.
        """
        x = _as_data(x)
        precision = 1.0 / self.prior_std**2 + x.numel() / self.noise_std**2
        var = 1.0 / precision
        mean = var * (self.prior_mean / self.prior_std**2 + x.sum() / self.noise_std**2)
        return mean, torch.sqrt(torch.as_tensor(var, dtype=x.dtype))

    def log_evidence(self, x):
        r"""Exact :math:`\log p(x) = \log\mathcal N(x;\, m_0\mathbf 1,\ \sigma^2 I + s_0^2\mathbf 1\mathbf 1^\top)`.

        Computed in :math:`O(N)` with the matrix determinant lemma and the
        Sherman-Morrison formula; tested against a dense multivariate normal.
        """
        x = _as_data(x)
        N = x.numel()
        r = x - self.prior_mean
        s2, t2 = self.noise_std**2, self.prior_std**2
        # det(s2 I + t2 11^T) = s2^(N-1) (s2 + N t2)
        logdet = (N - 1) * math.log(s2) + math.log(s2 + N * t2)
        # r^T (s2 I + t2 11^T)^{-1} r = (r.r - t2 (sum r)^2 / (s2 + N t2)) / s2
        quad = ((r * r).sum() - t2 * r.sum() ** 2 / (s2 + N * t2)) / s2
        return -0.5 * (N * LOG_2PI + logdet + quad)

    def expected_log_likelihood(self, m, s, x):
        r""":math:`\mathbb E_q[\log p(x\mid z)]` for :math:`q = \mathcal N(m, s^2)`, shape of ``m``.

        .. math:: \sum_i \Big[-\tfrac12\log 2\pi\sigma^2 - \frac{(x_i-m)^2 + s^2}{2\sigma^2}\Big]
        """
        x = _as_data(x)
        m, s = torch.as_tensor(m), torch.as_tensor(s)
        N = x.numel()
        sq = ((x - m.unsqueeze(-1)) ** 2).sum(-1)  # sum_i (x_i - m)^2, shape of m
        return -0.5 * N * math.log(2 * math.pi * self.noise_std**2) - (sq + N * s**2) / (2 * self.noise_std**2)

    def expected_log_prior(self, m, s):
        r""":math:`\mathbb E_q[\log p(z)]` for :math:`q = \mathcal N(m, s^2)`, shape of ``m``.

        .. math:: -\tfrac12\log 2\pi s_0^2 - \frac{(m-m_0)^2 + s^2}{2 s_0^2}
        """
        m, s = torch.as_tensor(m), torch.as_tensor(s)
        return -0.5 * math.log(2 * math.pi * self.prior_std**2) - ((m - self.prior_mean) ** 2 + s**2) / (
            2 * self.prior_std**2
        )

    def gaussian_elbo(self, m, s, x):
        r"""ELBO of :math:`q = \mathcal N(m, s^2)` in closed form.

        .. math::
            \mathrm{ELBO}(m, s) = \mathbb E_q[\log p(x\mid z)] + \mathbb E_q[\log p(z)] + \mathbb H[q],
            \qquad \mathbb H[q] = \tfrac12\log 2\pi e + \log s

        ``m`` and ``s`` broadcast together; the result has their shape. This is
        the reference answer of exercise 1.1 (lesson 01).
        """
        return self.expected_log_likelihood(m, s, x) + self.expected_log_prior(m, s) + normal_entropy(s)


def _log(std):
    # a 0-d float64 tensor: like a Python number, it leaves the dtype of the data and z alone
    return torch.tensor(math.log(std), dtype=torch.float64)


def _as_data(x):
    x = torch.as_tensor(x)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"data x must be a non-empty 1-D tensor of shape (N,), got shape {tuple(x.shape)}")
    return x
