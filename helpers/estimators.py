r"""Monte Carlo estimators of the evidence lower bound and its relatives.

Everything here works in log space: a log-weight is
:math:`\log w_s = \log p_\theta(x, z_s) - \log q(z_s)` with :math:`z_s\sim q`,
the ELBO is their mean, and the importance-weighted bound averages the
weights themselves with ``logsumexp``, never ``exp`` followed by ``log``.
"""

import math

import torch

__all__ = ["log_weights", "elbo", "iwae_bound", "standard_error"]


def log_weights(log_joint, q, S):
    r"""Log importance weights :math:`\log w_s = \log p(x, z_s) - \log q(z_s)`.

    The draws :math:`z_s = \mathrm{rsample}(q)` are reparameterised, so
    gradients flow from the result back to the parameters of ``q``.

    Parameters
    ----------
    log_joint : callable, ``z`` of shape ``(S, *event)`` -> ``(S,)``. :math:`\log p(x, z)`.
    q : torch.distributions.Distribution with ``rsample``. Its ``log_prob`` must
        return one value per draw (wrap factorised families in ``Independent``).
    S : int, positive. Number of Monte Carlo samples.

    Returns
    -------
    Tensor of shape ``(S,)``; ``(S, *batch)`` when ``q`` and ``log_joint`` hold a batch of independent problems
    (lesson 04: one per data point), the two shapes equal. Raises ``ValueError`` when they differ, rather than
    broadcasting ``(S,)`` against ``(S, 1)`` into an ``(S, S)`` table.
    """
    if not (isinstance(S, int) and S > 0):
        raise ValueError(f"S must be a positive integer, got {S!r}")
    z = q.rsample((S,))
    log_p, log_q = log_joint(z), q.log_prob(z)
    if log_p.shape != log_q.shape or log_p.shape[:1] != (S,):
        # (S,) against (S, 1) would broadcast silently to an (S, S) table: a wrong spread, and S^2 memory
        raise ValueError(
            f"log_joint(z) has shape {tuple(log_p.shape)} and q.log_prob(z) {tuple(log_q.shape)}; they must be "
            f"the same, ({S},) or ({S}, *batch), one value per draw (and per independent problem): sum log_joint "
            "over the latent axes, and wrap a factorised q in torch.distributions.Independent so that its log_prob "
            "sums them too"
        )
    return log_p - log_q


def elbo(log_joint, q, S):
    r"""Reparameterised Monte Carlo ELBO.

    .. math::
        \mathrm{ELBO}(q) = \mathbb E_q[\log p(x,z) - \log q(z)]
        \approx \frac1S\sum_{s=1}^S \log w_s

    Returns the bound (higher is better) as a 0-d tensor; training code
    minimises ``loss = -elbo(...)``.

    References
    ----------
    Kingma, D. P. & Welling, M. Auto-encoding variational Bayes (2014).
    """
    return log_weights(log_joint, q, S).mean(0)


def iwae_bound(log_joint, q, S):
    r"""Importance-weighted bound :math:`\mathcal L_S`, averaged in log space.

    .. math::
        \mathcal L_S = \mathbb E\Big[\log \frac1S\sum_{s=1}^S w_s\Big]
        \le \log p(x), \qquad \mathcal L_1 = \mathrm{ELBO}

    One draw of the estimator ``logsumexp(log_w) - log S``; it increases
    towards :math:`\log p(x)` as ``S`` grows (Jensen's inequality, less slack).

    References
    ----------
    Burda, Y., Grosse, R. & Salakhutdinov, R. Importance weighted autoencoders (2016).
    """
    log_w = log_weights(log_joint, q, S)
    return torch.logsumexp(log_w, 0) - math.log(S)


def standard_error(values, dim=0):
    r"""Monte Carlo standard error of the mean of ``values`` along ``dim``.

    .. math::
        \widehat{\mathrm{se}} = \frac{\hat\sigma}{\sqrt S}, \qquad
        \hat\sigma^2 = \frac{1}{S - 1}\sum_{s=1}^S \big(v_s - \bar v\big)^2

    with ``S = values.shape[dim]`` independent draws :math:`v_s` (the sample standard deviation, with
    ``S - 1``). An estimate's error is quoted as a few standard errors: a mean further than about 4 of them
    from its expectation is a mistake, not bad luck.

    Parameters
    ----------
    values : tensor (or array, or list of floats) of shape ``(S, ...)``, with ``S >= 2`` along ``dim``.
    dim : int. The axis of the draws.

    Returns
    -------
    Tensor of ``values``'s shape without ``dim``: one standard error per entry.

    References
    ----------
    Robert, C. P. & Casella, G. Monte Carlo Statistical Methods, 2nd ed., section 3.2 (2004).
    """
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values, dtype=torch.float64)  # a list of Python floats keeps its precision
    return values.std(dim) / math.sqrt(values.shape[dim])
