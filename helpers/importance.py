r"""Self-normalised importance sampling: a posterior's moments by a method that shares nothing with MCMC.

A reference posterior drawn by HMC (:mod:`helpers.hmc`) is itself an
approximation; before anything is measured against it, an independent method
must agree with it. With draws :math:`z_s \sim g` from a proposal that covers
the posterior's tails, and unnormalised weights
:math:`w_s = \tilde p(z_s) / g(z_s)`,

.. math::
    \mathbb E_p[f(z)] \approx \frac{\sum_s w_s f(z_s)}{\sum_s w_s},
    \qquad
    \mathrm{ESS} = \frac{(\sum_s w_s)^2}{\sum_s w_s^2},

where the effective sample size says how many independent posterior draws the
weighted sample is worth (Owen 2013, section 9.3). A multivariate Student t
centred at the MAP with the Laplace covariance is the usual proposal: as close
to the posterior as the Laplace fit, with heavier tails, so the weights stay
bounded.

References
----------
Owen, A. B. Monte Carlo theory, methods and examples, ch. 9 (2013).
Geweke, J. Bayesian inference in econometric models using Monte Carlo integration. Econometrica 57 (1989).
"""

import math
from dataclasses import dataclass

import torch

__all__ = ["MultivariateT", "WeightedMoments", "importance_moments"]


class MultivariateT:
    r"""Multivariate Student t, :math:`z = \mu + L\,g\,/\sqrt{c/\nu}` with :math:`g\sim\mathcal N(0, I)`,
    :math:`c\sim\chi^2_\nu`; its scale matrix is :math:`LL^\top` (covariance :math:`LL^\top\nu/(\nu-2)`).

    ``loc (D,)``, ``scale_tril (D, D)`` lower triangular, ``df`` a positive integer (so that :math:`c` is a sum
    of ``df`` squared normals, drawn from ``generator`` like everything else).
    """

    def __init__(self, loc, scale_tril, df):
        if not (isinstance(df, int) and df > 0):
            raise ValueError(f"df must be a positive integer, got {df!r}")
        if scale_tril.shape != (loc.shape[-1], loc.shape[-1]):
            raise ValueError(f"scale_tril must be ({loc.shape[-1]}, {loc.shape[-1]}), got {tuple(scale_tril.shape)}")
        self.loc, self.scale_tril, self.df = loc, scale_tril, float(df)

    def sample(self, n, generator=None):
        """``n`` draws, shape ``(n, D)``."""
        D = self.loc.shape[-1]
        g = torch.randn(n, D, generator=generator, dtype=self.loc.dtype)
        c = (torch.randn(n, int(self.df), generator=generator, dtype=self.loc.dtype) ** 2).sum(-1, keepdim=True)
        return self.loc + (g / (c / self.df).sqrt()) @ self.scale_tril.T

    def log_prob(self, z):
        r""":math:`\log\Gamma(\frac{\nu+D}2) - \log\Gamma(\frac\nu2) - \frac D2\log(\nu\pi) - \log|L|
        - \frac{\nu+D}2\log(1 + \|L^{-1}(z-\mu)\|^2/\nu)` for ``z (..., D)``."""
        D = self.loc.shape[-1]
        u = torch.linalg.solve_triangular(self.scale_tril, (z - self.loc).reshape(-1, D).T, upper=False).T
        maha = (u**2).sum(-1).reshape(z.shape[:-1])
        nu = self.df
        const = math.lgamma((nu + D) / 2) - math.lgamma(nu / 2) - D / 2 * math.log(nu * math.pi)
        return const - self.scale_tril.diagonal().log().sum() - (nu + D) / 2 * torch.log1p(maha / nu)


@dataclass
class WeightedMoments:
    """Self-normalised estimates: ``mean (D,)``, ``cov (D, D)``, their ``sd`` and ``corr``; ``ess`` and draws ``n``."""

    mean: torch.Tensor
    cov: torch.Tensor
    ess: float
    n: int

    @property
    def sd(self):
        return self.cov.diagonal().sqrt()

    @property
    def corr(self):
        return self.cov / torch.outer(self.sd, self.sd)


def importance_moments(log_target, proposal, n, chunk=20_000, generator=None):
    r"""Posterior mean and covariance by self-normalised importance sampling, in chunks of draws.

    The weighted sums are kept relative to the largest log-weight seen so far (rescaled when a larger one
    arrives), so no weight is exponentiated outside :math:`(0, 1]`.

    Parameters
    ----------
    log_target : callable ``z (S, D) -> (S,)``, the unnormalised log posterior :math:`\log\tilde p`.
    proposal : object with ``sample(S, generator) -> (S, D)`` and ``log_prob(z) -> (S,)``, e.g. :class:`MultivariateT`.
    n : int, positive. Number of draws in all.
    chunk : int. Draws per batch (memory: ``chunk x D`` at a time).

    Returns
    -------
    :class:`WeightedMoments`.
    """
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    shift, s0, s00, s1, s2 = -math.inf, 0.0, 0.0, 0.0, 0.0
    done = 0
    while done < n:
        z = proposal.sample(min(chunk, n - done), generator=generator)
        with torch.no_grad():
            log_w = log_target(z) - proposal.log_prob(z)
        if not torch.isfinite(log_w).all():
            raise ValueError("a log-weight is not finite: the target or the proposal gives -inf, inf or nan")
        top = float(log_w.max())
        if top > shift:  # rescale what was summed so far to the new largest weight
            scale = math.exp(shift - top)
            s0, s00, s1, s2 = s0 * scale, s00 * scale**2, s1 * scale, s2 * scale
            shift = top
        w = (log_w - shift).exp()
        s0, s00 = s0 + float(w.sum()), s00 + float((w**2).sum())
        s1 = s1 + w @ z
        s2 = s2 + (z * w[:, None]).T @ z
        done += len(z)
    mean = s1 / s0
    cov = s2 / s0 - torch.outer(mean, mean)
    return WeightedMoments(mean=mean, cov=cov, ess=s0**2 / s00, n=n)
