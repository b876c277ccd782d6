r"""The Gaussian with unknown mean and precision, and its mean-field approximation.

Model (Bishop, PRML section 10.1.3):

.. math::
    \tau \sim \mathrm{Gamma}(a_0, b_0), \qquad
    \mu \mid \tau \sim \mathcal N\big(\mu_0, (\lambda_0\tau)^{-1}\big), \qquad
    x_i \mid \mu, \tau \sim \mathcal N(\mu, \tau^{-1}), \quad i = 1..N.

The posterior is Normal-Gamma (exact, :meth:`NormalGamma.posterior`); the
mean-field family :math:`q(\mu)q(\tau) = \mathcal N(\mu_N, \lambda_N^{-1})\,
\mathrm{Gamma}(a_N, b_N)` is not exact, and its ELBO has a closed form
(:meth:`NormalGamma.mean_field_elbo`). Gamma uses the rate ``b``.
"""

import math
from dataclasses import dataclass

import torch

from .gaussian import LOG_2PI

__all__ = ["NormalGamma"]


def _t(v, like=None):
    dtype = like.dtype if isinstance(like, torch.Tensor) else torch.get_default_dtype()
    return torch.as_tensor(v, dtype=dtype)


@dataclass(frozen=True)
class NormalGamma:
    """Normal-Gamma prior on ``(mu, tau)`` with Gaussian observations; see the module docstring.

    Parameters
    ----------
    mu0, lambda0 : float. Prior mean of :math:`\\mu` and its precision scale (> 0).
    a0, b0 : float. Gamma shape and rate of :math:`\\tau` (> 0).

    References
    ----------
    Bishop, C. M. Pattern Recognition and Machine Learning, sections 2.3.6 and 10.1.3 (2006).
    Murphy, K. P. Conjugate Bayesian analysis of the Gaussian distribution (2007).
    """

    mu0: float = 0.0
    lambda0: float = 1.0
    a0: float = 1.0
    b0: float = 1.0

    def __post_init__(self):
        for name in ("lambda0", "a0", "b0"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"NormalGamma: {name} must be a positive finite number, got {value!r}")

    def sample(self, N, seed=0):
        """Draw ``(mu, tau, x)`` with ``x`` of shape ``(N,)``, from its own seeded stream.

        (``torch.distributions.Gamma`` takes no generator, so the draw forks the
        global random state instead of advancing it.)
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tau = torch.distributions.Gamma(_t(self.a0), _t(self.b0)).sample()
            mu = self.mu0 + torch.randn(()) / torch.sqrt(self.lambda0 * tau)
            x = mu + torch.randn(N) / torch.sqrt(tau)
        return mu, tau, x

    def log_joint(self, x, mu, tau):
        r""":math:`\log p(x, \mu, \tau)`, broadcasting over the shapes of ``mu`` and ``tau``."""
        mu, tau = torch.as_tensor(mu), torch.as_tensor(tau)
        log_lik = torch.distributions.Normal(mu.unsqueeze(-1), tau.rsqrt().unsqueeze(-1)).log_prob(x).sum(-1)
        log_mu = torch.distributions.Normal(_t(self.mu0, x), torch.rsqrt(self.lambda0 * tau)).log_prob(mu)
        log_tau = torch.distributions.Gamma(_t(self.a0, x), _t(self.b0, x)).log_prob(tau)
        return log_lik + log_mu + log_tau

    def posterior(self, x):
        r"""Exact posterior parameters ``(mu_post, lambda_post, a_post, b_post)``.

        .. math::
            \lambda' = \lambda_0 + N,\quad \mu' = \frac{\lambda_0\mu_0 + N\bar x}{\lambda_0 + N},\quad
            a' = a_0 + \frac N2,\quad
            b' = b_0 + \frac12\sum_i (x_i-\bar x)^2 + \frac{\lambda_0 N(\bar x-\mu_0)^2}{2(\lambda_0+N)}
        """
        x = _data(x)
        N, xbar = x.numel(), x.mean()
        lam = self.lambda0 + N
        mu = (self.lambda0 * self.mu0 + N * xbar) / lam
        a = self.a0 + N / 2
        b = self.b0 + 0.5 * ((x - xbar) ** 2).sum() + self.lambda0 * N * (xbar - self.mu0) ** 2 / (2 * lam)
        return mu, _t(lam, x), _t(a, x), b

    def log_posterior(self, x, mu, tau):
        r""":math:`\log p(\mu, \tau \mid x)` (Normal-Gamma density), broadcasting over ``mu`` and ``tau``."""
        m, lam, a, b = self.posterior(x)
        mu, tau = torch.as_tensor(mu), torch.as_tensor(tau)
        return torch.distributions.Gamma(a, b).log_prob(tau) + torch.distributions.Normal(
            m, torch.rsqrt(lam * tau)
        ).log_prob(mu)

    def log_evidence(self, x):
        r""":math:`\log p(x) = \log\Gamma(a') - \log\Gamma(a_0) + a_0\log b_0 - a'\log b'
        + \tfrac12\log\frac{\lambda_0}{\lambda'} - \frac N2\log 2\pi`."""
        x = _data(x)
        _, lam, a, b = self.posterior(x)
        return (
            torch.lgamma(a)
            - math.lgamma(self.a0)
            + self.a0 * math.log(self.b0)
            - a * torch.log(b)
            + 0.5 * torch.log(self.lambda0 / lam)
            - 0.5 * x.numel() * LOG_2PI
        )

    def posterior_mean_variance(self, x):
        r"""Exact marginal posterior variance of :math:`\mu`.

        The marginal is a Student-t; its variance is :math:`\frac{b'}{\lambda'(a'-1)}` (needs :math:`a'>1`).
        """
        _, lam, a, b = self.posterior(x)
        return b / (lam * (a - 1))

    # ------------------------------------------------------------------ mean field

    def update_q_mu(self, x, E_tau):
        r"""CAVI update of :math:`q(\mu) = \mathcal N(\mu_N, \lambda_N^{-1})` given :math:`\mathbb E[\tau]`.

        .. math::
            \mu_N = \frac{\lambda_0\mu_0 + N\bar x}{\lambda_0 + N}, \qquad
            \lambda_N = (\lambda_0 + N)\,\mathbb E[\tau]

        Returns ``(mu_N, lambda_N)``. Reference answer of exercise 2.1 (lesson 02).
        """
        x = _data(x)
        N = x.numel()
        return (self.lambda0 * self.mu0 + x.sum()) / (self.lambda0 + N), (self.lambda0 + N) * torch.as_tensor(E_tau)

    def update_q_tau(self, x, mu_N, lambda_N):
        r"""CAVI update of :math:`q(\tau) = \mathrm{Gamma}(a_N, b_N)` given :math:`q(\mu)`.

        .. math::
            a_N = a_0 + \frac{N+1}2, \qquad
            b_N = b_0 + \frac12\,\mathbb E_{q(\mu)}\Big[\sum_i (x_i-\mu)^2 + \lambda_0(\mu-\mu_0)^2\Big]
                = b_0 + \frac12\Big[\sum_i (x_i-\mu_N)^2 + \lambda_0(\mu_N-\mu_0)^2 + \frac{N+\lambda_0}{\lambda_N}\Big]

        Returns ``(a_N, b_N)``. Reference answer of exercise 2.2 (lesson 02).
        """
        x = _data(x)
        N = x.numel()
        mu_N, lambda_N = torch.as_tensor(mu_N), torch.as_tensor(lambda_N)
        expected = ((x - mu_N) ** 2).sum() + self.lambda0 * (mu_N - self.mu0) ** 2 + (N + self.lambda0) / lambda_N
        return _t(self.a0 + (N + 1) / 2, x), self.b0 + 0.5 * expected

    def cavi(self, x, a_N, b_N, sweeps, update_q_mu=None, update_q_tau=None):
        r"""Coordinate ascent from :math:`q(\tau) = \mathrm{Gamma}(a_N, b_N)`: ``sweeps`` sweeps of the two updates.

        Each sweep updates :math:`q(\mu)` given :math:`\mathbb E[\tau] = a_N/b_N`, then :math:`q(\tau)` given the
        new :math:`q(\mu)`, then records :meth:`mean_field_elbo`, which therefore never decreases (Blei,
        Kucukelbir & McAuliffe 2017, algorithm 1). ``update_q_mu``, ``update_q_tau``: functions with the
        signatures of exercises 2.1 and 2.2 (``(x, E_tau, model)`` and ``(x, mu_N, lambda_N, model)``);
        default: this model's own. Returns ``((mu_N, lambda_N, a_N, b_N), trace)``, ``trace`` a list of
        ``sweeps`` floats. Reference answer of exercise 2.3 (lesson 02).
        """
        update_q_mu = update_q_mu or (lambda x_, E_tau, model: model.update_q_mu(x_, E_tau))
        update_q_tau = update_q_tau or (lambda x_, mu, lam, model: model.update_q_tau(x_, mu, lam))
        trace = []
        for _ in range(sweeps):
            mu_N, lambda_N = update_q_mu(x, a_N / b_N, self)
            a_N, b_N = update_q_tau(x, mu_N, lambda_N, self)
            trace.append(float(self.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)))
        return (mu_N, lambda_N, a_N, b_N), trace

    def mean_field_elbo(self, x, mu_N, lambda_N, a_N, b_N):
        r"""ELBO of :math:`q(\mu)q(\tau) = \mathcal N(\mu_N, \lambda_N^{-1})\,\mathrm{Gamma}(a_N, b_N)`, closed form.

        With :math:`\mathbb E[\tau] = a_N/b_N` and :math:`\mathbb E[\log\tau] = \psi(a_N) - \log b_N`:

        .. math::
            \mathrm{ELBO} = \mathbb E[\log p(x\mid\mu,\tau)] + \mathbb E[\log p(\mu\mid\tau)] + \mathbb E[\log p(\tau)]
                + \mathbb H[q(\mu)] + \mathbb H[q(\tau)]
        """
        x = _data(x)
        N = x.numel()
        mu_N, lambda_N, a_N, b_N = (torch.as_tensor(v) for v in (mu_N, lambda_N, a_N, b_N))
        E_tau, E_log_tau = a_N / b_N, torch.digamma(a_N) - torch.log(b_N)
        var_mu = 1 / lambda_N
        e_lik = 0.5 * N * (E_log_tau - LOG_2PI) - 0.5 * E_tau * (((x - mu_N) ** 2).sum() + N * var_mu)
        e_mu = 0.5 * (math.log(self.lambda0) + E_log_tau - LOG_2PI) - 0.5 * self.lambda0 * E_tau * (
            (mu_N - self.mu0) ** 2 + var_mu
        )
        e_tau = self.a0 * math.log(self.b0) - math.lgamma(self.a0) + (self.a0 - 1) * E_log_tau - self.b0 * E_tau
        h_mu = 0.5 * (1 + LOG_2PI - torch.log(lambda_N))
        h_tau = a_N - torch.log(b_N) + torch.lgamma(a_N) + (1 - a_N) * torch.digamma(a_N)
        return e_lik + e_mu + e_tau + h_mu + h_tau

    def mean_field_fixed_point(self, x):
        r"""The CAVI fixed point in closed form, ``(mu_N, lambda_N, a_N, b_N)``.

        :math:`\mu_N` and :math:`a_N` do not depend on the other factor; substituting
        :math:`\lambda_N = (\lambda_0+N)a_N/b_N` into the update of :math:`b_N` gives a linear equation:

        .. math:: b_N = \frac{b_0 + \tfrac12\big[\sum_i(x_i-\mu_N)^2 + \lambda_0(\mu_N-\mu_0)^2\big]}{1 - 1/(2a_N)}
        """
        x = _data(x)
        N = x.numel()
        mu_N = (self.lambda0 * self.mu0 + x.sum()) / (self.lambda0 + N)
        a_N = _t(self.a0 + (N + 1) / 2, x)
        b_N = (self.b0 + 0.5 * (((x - mu_N) ** 2).sum() + self.lambda0 * (mu_N - self.mu0) ** 2)) / (1 - 0.5 / a_N)
        return mu_N, (self.lambda0 + N) * a_N / b_N, a_N, b_N


def _data(x):
    x = torch.as_tensor(x)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"data x must be a non-empty 1-D tensor of shape (N,), got shape {tuple(x.shape)}")
    return x
