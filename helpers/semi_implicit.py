r"""Semi-implicit variational families and the SIVI surrogate lower bound.

A semi-implicit family mixes a simple conditional over an implicit
distribution: a network :math:`g_\phi` pushes noise :math:`\varepsilon` to a
mixing variable :math:`\psi = g_\phi(\varepsilon)`, and

.. math::
    q_\phi(z) = \int \mathcal N(z;\ \psi,\ \sigma^2 I)\, q_\phi(\psi)\, d\psi .

Drawing from :math:`q_\phi` is easy (draw :math:`\psi`, then :math:`z`), but
:math:`q_\phi(\psi)` has no density, so neither has :math:`q_\phi(z)`, and the
ELBO's :math:`-\log q_\phi(z)` cannot be evaluated. SIVI replaces it by the
log of a :math:`(K+1)`-sample average of the conditional, which gives a lower
bound on the ELBO that tightens as :math:`K` grows (Yin & Zhou 2018, theorem 1).

References
----------
Yin, M. & Zhou, M. Semi-implicit variational inference. ICML (2018).
Molchanov, D., Kharitonov, V., Sobolev, A. & Vetrov, D. Doubly semi-implicit variational inference. AISTATS (2019).
"""

import math

import torch
from torch import nn

__all__ = ["SemiImplicitGaussian", "sivi_bound"]


class SemiImplicitGaussian(nn.Module):
    r""":math:`q(z) = \int\mathcal N(z; \psi, \sigma^2 I)\,q(\psi)\,d\psi` with :math:`\psi = g(\varepsilon)`.

    Parameters
    ----------
    mixing : nn.Module mapping noise ``(n, noise_dim)`` to ``psi (n, L)``.
    noise_dim : int. Dimension of :math:`\varepsilon\sim\mathcal N(0, I)`.
    sigma : float. The conditional's fixed standard deviation.
    """

    def __init__(self, mixing, noise_dim, sigma):
        super().__init__()
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        self.mixing, self.noise_dim, self.sigma = mixing, noise_dim, float(sigma)

    @classmethod
    def mlp(cls, L=2, noise_dim=10, hidden=(40, 60, 40), sigma=0.1):
        """The family of the SIVI paper's 2-D experiments: a ReLU MLP pushes 10-D noise to ``psi``."""
        widths = (noise_dim, *hidden)
        layers = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], L))
        return cls(nn.Sequential(*layers), noise_dim, sigma)

    def sample_psi(self, n):
        """``n`` draws of the mixing variable, ``(n, L)``, differentiable in the network's weights."""
        p = next(self.parameters())
        return self.mixing(torch.randn(n, self.noise_dim, dtype=p.dtype, device=p.device))

    def rsample(self, n):
        """``n`` reparameterised draws ``z = psi + sigma * eps``; returns ``(z, psi)``, each ``(n, L)``."""
        psi = self.sample_psi(n)
        return psi + self.sigma * torch.randn_like(psi), psi

    def log_conditional(self, z, psi):
        r""":math:`\log\mathcal N(z; \psi, \sigma^2 I)`, broadcasting ``z (..., L)`` against ``psi (..., L)``."""
        L = z.shape[-1]
        log_norm = L * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
        return -0.5 * ((z - psi) ** 2).sum(-1) / self.sigma**2 - log_norm


def sivi_bound(log_target, q, S, K):
    r"""The SIVI surrogate lower bound, estimated with ``S`` draws of ``z`` and ``K`` extra draws of ``psi``.

    .. math::
        \underline{\mathcal L}_K = \mathbb E\Big[\log p(z) - \log\frac{1}{K+1}\Big(q(z\mid\psi_0)
        + \sum_{k=1}^K q(z\mid\psi_k)\Big)\Big],\qquad \psi_0,\dots,\psi_K\sim q(\psi),\ z\sim q(z\mid\psi_0).

    :math:`\underline{\mathcal L}_K \le \mathrm{ELBO}(q)`, non-decreasing in ``K``, and
    :math:`\to\mathrm{ELBO}(q)` as :math:`K\to\infty` (Yin & Zhou 2018, theorem 1). The
    average is taken in log space. The ``K`` extra draws are shared by the ``S``
    draws of ``z``, as in the paper's code.

    Parameters
    ----------
    log_target : callable ``(S, L) -> (S,)``, the (unnormalised) log density :math:`\log p`.
    q : :class:`SemiImplicitGaussian`.
    S, K : int, positive.

    Returns
    -------
    0-d tensor: the bound (higher is better; training minimises its negative).
    """
    z, psi0 = q.rsample(S)  # (S, L) each
    psi = q.sample_psi(K)  # (K, L)
    log_own = q.log_conditional(z, psi0).unsqueeze(1)  # (S, 1): the psi that generated z
    log_others = q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0))  # (S, K)
    log_mixture = torch.logsumexp(torch.cat([log_own, log_others], 1), 1) - math.log(K + 1)  # (S,)
    return (log_target(z) - log_mixture).mean()
