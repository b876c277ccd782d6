r"""Semi-implicit variational families and the SIVI bounds on their ELBO.

A semi-implicit family mixes a simple conditional over an implicit
distribution: a network :math:`g_\phi` pushes noise :math:`\varepsilon` to a
mixing variable :math:`\psi = g_\phi(\varepsilon)`, and

.. math::
    q_\phi(z) = \int \mathcal N\big(z;\ \psi,\ \Sigma\big)\, q_\phi(\psi)\, d\psi ,

with a diagonal conditional covariance :math:`\Sigma = \mathrm{diag}\,\sigma^2` (the SIVI paper's
two-dimensional experiments) or a full one, :math:`\Sigma = CC^\top` with a learned lower-triangular
:math:`C` (the paper's Bayesian logistic regression).

Drawing from :math:`q_\phi` is easy (draw :math:`\psi`, then :math:`z`), but
:math:`q_\phi(\psi)` has no density, so neither has :math:`q_\phi(z)`, and the
ELBO's :math:`-\log q_\phi(z)` cannot be evaluated. SIVI replaces
:math:`q_\phi(z)` by an average of the conditional over ``K`` extra draws of
:math:`\psi`. With the draw that generated :math:`z` included, the result is
a lower bound on the ELBO; without it, an upper bound. Both tighten as ``K``
grows (Yin & Zhou 2018, theorem 1 and its corollaries).

References
----------
Yin, M. & Zhou, M. Semi-implicit variational inference. ICML (2018).
Molchanov, D., Kharitonov, V., Sobolev, A. & Vetrov, D. Doubly semi-implicit variational inference. AISTATS (2019).
"""

import math

import torch
from torch import nn

from .estimators import standard_error
from .gaussian import log_normal_diag, log_normal_tril

__all__ = [
    "SemiImplicitGaussian",
    "sivi_bound",
    "sivi_upper_bound",
    "sivi_sandwich",
    "log_density_estimate",
    "dsivi_bound",
    "semi_implicit_covariance",
]


class SemiImplicitGaussian(nn.Module):
    r""":math:`q(z) = \int\mathcal N(z; \psi, \Sigma)\,q(\psi)\,d\psi`, :math:`\psi = g(\varepsilon)`.

    The conditional covariance is :math:`\Sigma = CC^\top` with :math:`C` lower-triangular and a positive
    diagonal :math:`\sigma`: diagonal (:math:`C = \mathrm{diag}\,\sigma`) by default, full with
    ``full_covariance=True``, as in Yin & Zhou (2018)'s logistic-regression code, which learns every entry
    of the Cholesky factor. (Here the diagonal is learned on the log scale, to stay positive; the paper's
    code leaves it unconstrained.)

    Parameters
    ----------
    mixing : nn.Module mapping noise ``(n, noise_dim)`` to ``psi (n, L)``.
    noise_dim : int. Dimension of :math:`\varepsilon\sim\mathcal N(0, I)`.
    L : int. Dimension of ``z`` (and of ``psi``).
    sigma : positive float. The conditional's standard deviation (its initial value when learned).
    learn_sigma : bool. If true, one :math:`\log\sigma_l` per coordinate is a parameter; otherwise fixed.
    full_covariance : bool. If true, the :math:`L(L-1)/2` entries of :math:`C` below its diagonal are
        parameters too (starting at 0); requires ``learn_sigma``.
    """

    def __init__(self, mixing, noise_dim, L, sigma=0.1, learn_sigma=False, full_covariance=False):
        super().__init__()
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        for name, value in (("noise_dim", noise_dim), ("L", L)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if full_covariance and not learn_sigma:
            raise ValueError("full_covariance=True learns the conditional's Cholesky factor: pass learn_sigma=True")
        self.mixing, self.noise_dim, self.L = mixing, noise_dim, L
        p = next(mixing.parameters(), None)
        dtype = torch.get_default_dtype() if p is None else p.dtype
        log_sigma = torch.full((L,), math.log(sigma), dtype=dtype)
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.full_covariance = full_covariance
        if full_covariance:
            self.below_diagonal = nn.Parameter(torch.zeros(L * (L - 1) // 2, dtype=dtype))  # row by row

    @classmethod
    def mlp(cls, L=2, noise_dim=10, hidden=(40, 60, 40), sigma=0.1, learn_sigma=False, full_covariance=False):
        """A ReLU MLP pushes ``noise_dim``-dimensional noise to ``psi``; the SIVI paper's 2-D family by default."""
        widths = (noise_dim, *hidden)
        layers = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], L))
        return cls(nn.Sequential(*layers), noise_dim, L, sigma, learn_sigma, full_covariance)

    @classmethod
    def linear(cls, mean, tau, sigma):
        r"""Mixing :math:`\psi = m + \tau\varepsilon`; the marginal is :math:`\mathcal N(m, (\tau^2 + \sigma^2) I)`.

        A semi-implicit family whose density *is* known, to test the bounds against the exact ELBO.
        ``mean`` is a 1-D tensor (its dtype is kept); ``tau`` and ``sigma`` positive floats.
        """
        mean = torch.as_tensor(mean)
        L = mean.shape[-1]
        mixing = nn.Linear(L, L).to(mean.dtype)
        with torch.no_grad():
            mixing.weight.copy_(tau * torch.eye(L, dtype=mean.dtype))
            mixing.bias.copy_(mean)
        return cls(mixing, L, L, sigma)

    def scale_tril(self):
        r"""The conditional's Cholesky factor :math:`C`, ``(L, L)``, lower-triangular: :math:`\Sigma = CC^\top`."""
        C = torch.diag_embed(self.log_sigma.exp())
        if self.full_covariance:
            rows, cols = torch.tril_indices(self.L, self.L, -1, device=C.device)
            C = C.index_put((rows, cols), self.below_diagonal)
        return C

    @property
    def sigma(self):
        r"""The conditional's standard deviation in each coordinate, :math:`\sqrt{\Sigma_{ll}}`, ``(L,)``."""
        return self.scale_tril().norm(dim=-1) if self.full_covariance else self.log_sigma.exp()

    def sample_psi(self, n):
        """``n`` draws of the mixing variable, ``(n, L)``, differentiable in the network's weights."""
        return self.mixing(torch.randn(n, self.noise_dim, dtype=self.log_sigma.dtype, device=self.log_sigma.device))

    def rsample(self, n):
        """``n`` reparameterised draws ``z = psi + C eps``; returns ``(z, psi)``, each ``(n, L)``."""
        psi = self.sample_psi(n)
        eps = torch.randn_like(psi)
        return (psi + eps @ self.scale_tril().T if self.full_covariance else psi + self.sigma * eps), psi

    def log_conditional(self, z, psi):
        r""":math:`\log\mathcal N(z; \psi, CC^\top)`; ``z (..., L)`` broadcasts against ``psi``.

        Full covariance: with :math:`u = C^{-1}(z - \psi)`,
        :math:`\log\mathcal N = -\tfrac12\|u\|^2 - \sum_l\log C_{ll} - \tfrac L2\log 2\pi`.
        """
        if not self.full_covariance:
            return log_normal_diag(z, psi, self.log_sigma)
        return log_normal_tril(z, psi, self.scale_tril())


def _chunks(n, size):
    return [size] * (n // size) + ([n % size] if n % size else [])


def _log_mixture(q, z, psi0, psi):
    """``log (1/n) sum_k q(z | psi_k)`` over ``psi`` ``(K, L)``, plus ``psi0`` ``(S, L)`` when given; ``(S,)``."""
    log_terms = q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0))  # (S, K): the K draws are shared by all z
    if psi0 is not None:
        log_terms = torch.cat([q.log_conditional(z, psi0).unsqueeze(1), log_terms], 1)  # (S, K + 1)
    return torch.logsumexp(log_terms, 1) - math.log(log_terms.shape[1])


def _check_sizes(S, K, K_min):
    if not (isinstance(S, int) and S > 0):
        raise ValueError(f"S must be a positive integer, got {S!r}")
    if not (isinstance(K, int) and K >= K_min):
        raise ValueError(f"K must be an integer >= {K_min}, got {K!r}")


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
    S : int, positive. K : int, non-negative (``K = 0`` uses the conditional alone).

    Returns
    -------
    0-d tensor: the bound (higher is better; training minimises its negative).
    """
    _check_sizes(S, K, 0)
    z, psi0 = q.rsample(S)  # (S, L) each
    return (log_target(z) - _log_mixture(q, z, psi0, q.sample_psi(K))).mean()


def sivi_upper_bound(log_target, q, S, K):
    r"""The ELBO's upper bound: :math:`\psi_0`, the draw that generated ``z``, left out of the average.

    .. math::
        \overline{\mathcal L}_K = \mathbb E\Big[\log p(z) - \log\frac1K\sum_{k=1}^K q(z\mid\psi_k)\Big]
        \ge \mathrm{ELBO}(q),

    non-increasing in ``K`` (Jensen's inequality: :math:`\mathbb E\log\frac1K\sum_k q(z\mid\psi_k)\le\log q(z)`).
    For evaluation only: maximising an *upper* bound is not safe. Shapes as :func:`sivi_bound`; ``K >= 1``.
    """
    _check_sizes(S, K, 1)
    z, _ = q.rsample(S)
    return (log_target(z) - _log_mixture(q, z, None, q.sample_psi(K))).mean()


@torch.no_grad()
def sivi_sandwich(log_target, q, S, K, chunk=256, with_se=False):
    r"""Both bounds from the same draws, :math:`(\underline{\mathcal L}_K, \overline{\mathcal L}_K)`, as floats.

    The ELBO of ``q`` lies between them. One set of ``K`` draws of :math:`\psi` is shared by all
    ``S`` draws of ``z``, which are processed ``chunk`` at a time to bound the memory
    (``chunk * K * L`` numbers). No gradients. With ``with_se``, also the two standard errors over the
    ``S`` draws of ``z`` (given the shared ``psi``: their own variation is not included), as a 4-tuple.
    """
    _check_sizes(S, K, 1)
    psi = q.sample_psi(K)
    lower, upper = [], []
    for n in _chunks(S, chunk):
        z, psi0 = q.rsample(n)
        log_p = log_target(z)
        log_others = q.log_conditional(z.unsqueeze(1), psi.unsqueeze(0))  # (n, K), used by both bounds
        log_own = q.log_conditional(z, psi0).unsqueeze(1)
        lower.append(log_p - torch.logsumexp(torch.cat([log_own, log_others], 1), 1) + math.log(K + 1))
        upper.append(log_p - torch.logsumexp(log_others, 1) + math.log(K))
    lower, upper = torch.cat(lower), torch.cat(upper)
    values = (float(lower.mean()), float(upper.mean()))
    if with_se:
        values += (float(standard_error(lower)), float(standard_error(upper)))
    return values


@torch.no_grad()
def log_density_estimate(q, z, K, chunk=1024):
    r""":math:`\log\frac1K\sum_{k=1}^K q(z\mid\psi_k)`, a consistent estimate of :math:`\log q(z)` at given points.

    For pictures and checks (its expectation lies below :math:`\log q(z)` by Jensen's inequality,
    by a margin that vanishes as ``K`` grows). ``z (n, L) -> (n,)``; the ``K`` draws are shared by
    all points, which are processed ``chunk`` at a time. No gradients.
    """
    _check_sizes(1, K, 1)
    psi = q.sample_psi(K)
    return torch.cat([_log_mixture(q, part, None, psi) for part in z.split(chunk)])


def dsivi_bound(log_likelihood, prior, q, S, K):
    r"""The doubly semi-implicit bound: a semi-implicit prior *and* a semi-implicit posterior.

    .. math::
        \mathbb E\Big[\log p(x\mid z) + \log\frac1K\sum_{k=1}^K p(z\mid\zeta_k)
        - \log\frac{1}{K+1}\sum_{k=0}^K q(z\mid\psi_k)\Big] \le \mathrm{ELBO}(q) \le \log p(x),

    with :math:`\zeta_k\sim p(\zeta)` independent of :math:`z`, and :math:`\psi_0` the draw that
    generated :math:`z\sim q`. The two averages err in opposite directions on purpose: the prior's,
    without an own term, is *below* :math:`\log p(z)` on average (Jensen), which lowers the bound;
    the posterior's, with :math:`\psi_0`, is *above* :math:`\log q(z)` on average, which lowers it too
    (Molchanov et al. 2019).

    Parameters
    ----------
    log_likelihood : callable ``(S, L) -> (S,)``, :math:`\log p(x\mid z)`.
    prior, q : :class:`SemiImplicitGaussian` (the prior's mixing draws are :math:`\zeta`).
    S, K : int, positive. The same ``K`` for both averages.
    """
    _check_sizes(S, K, 1)
    z, psi0 = q.rsample(S)
    log_prior = _log_mixture(prior, z, None, prior.sample_psi(K))  # no own term: z did not come from the prior
    return (log_likelihood(z) + log_prior - _log_mixture(q, z, psi0, q.sample_psi(K))).mean()


def semi_implicit_covariance(psi, scale_tril):
    r"""The covariance of :math:`z`, estimated from draws of the mixing variable: the law of total covariance.

    .. math::
        \mathrm{Cov}\,z = \mathrm{Cov}\,\mathbb E[z\mid\psi] + \mathbb E\,\mathrm{Cov}[z\mid\psi]
            = \mathrm{Cov}\,\psi + CC^\top .

    ``psi (n, L)`` draws of :math:`\psi` (``torch.cov`` of them, divided by ``n - 1``); ``scale_tril (L, L)``,
    the conditional's Cholesky factor (``diag(sigma)`` for a diagonal conditional). Returns ``(L, L)``.
    """
    return torch.cov(psi.T) + scale_tril @ scale_tril.T
