r"""Monte Carlo estimators of the ELBO's gradient, written as *surrogate objectives*.

A surrogate is a scalar whose autograd gradient with respect to the
variational parameters is the estimator. This is how libraries implement
them (Schulman et al. 2015), and it lets ``loss = -surrogate`` drive any
optimiser. Here :math:`q = \mathcal N(m, \mathrm{diag}(s^2))` with
:math:`s = e^{\log s}`, and :math:`f(z) = \log p(x, z) - \log q(z)`.

These are the reference answers of lesson 03's exercises 3.1 and 3.2.

References
----------
Williams, R. J. Simple statistical gradient-following algorithms for connectionist reinforcement learning (1992).
Kingma, D. P. & Welling, M. Auto-encoding variational Bayes (2014).
Schulman, J. et al. Gradient estimation using stochastic computation graphs (2015).
Mohamed, S. et al. Monte Carlo gradient estimation in machine learning. JMLR 21 (2020).
"""

from torch.distributions import Normal

__all__ = ["score_function_surrogate", "score_function_loo_surrogate", "reparameterization_surrogate"]


def score_function_surrogate(log_joint, m, log_s, z):
    r"""Surrogate whose gradient is the score-function (REINFORCE) estimate of :math:`\nabla\mathrm{ELBO}`.

    .. math::
        \widehat{\nabla\mathrm{ELBO}} = \frac1S\sum_{s=1}^S f(z_s)\,\nabla_\phi\log q_\phi(z_s),
        \qquad z_s\sim q_\phi \text{ (no gradient through } z_s)

    The term :math:`-\mathbb E_q[\nabla_\phi \log q_\phi(z)]` of the exact
    derivative is zero in expectation and left out.

    Parameters
    ----------
    log_joint : callable ``(S, L) -> (S,)``.
    m, log_s : Tensors ``(L,)``, the parameters (``requires_grad``).
    z : Tensor ``(S, L)``, draws from ``q`` without gradient.

    Returns
    -------
    0-d tensor. Its value is not an ELBO estimate; only its gradient means something.
    """
    log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)  # (S,), depends on the parameters
    weight = (log_joint(z) - log_q).detach()  # f(z_s): a constant for autograd
    return (weight * log_q).mean()


def score_function_loo_surrogate(log_joint, m, log_s, z):
    r"""The score-function surrogate with the leave-one-out baseline (Kool, van Hoof & Welling 2019).

    .. math::
        \widehat{\nabla\mathrm{ELBO}} = \frac1S\sum_{j=1}^S \big(f(z_j) - b_j\big)\,\nabla_\phi\log q_\phi(z_j),
        \qquad b_j = \frac1{S-1}\sum_{k\ne j} f(z_k).

    :math:`b_j` does not depend on :math:`z_j`, so the estimator stays unbiased; it needs ``S >= 2``. Shapes as in
    :func:`score_function_surrogate`. Reference answer of exercise 3.3 (lesson 03).
    """
    log_q = Normal(m, log_s.exp()).log_prob(z).sum(-1)  # (S,)
    weight = (log_joint(z) - log_q).detach()  # f(z_j)
    S = weight.shape[0]
    if S < 2:
        raise ValueError(f"the leave-one-out baseline needs at least 2 draws, got S = {S}")
    baseline = (weight.sum() - weight) / (S - 1)  # (S,): b_j leaves out draw j
    return ((weight - baseline) * log_q).mean()


def reparameterization_surrogate(log_joint, m, log_s, eps):
    r"""Reparameterised Monte Carlo ELBO: its gradient is the pathwise estimate.

    .. math::
        z_s = m + s\odot\varepsilon_s,\quad \varepsilon_s\sim\mathcal N(0, I), \qquad
        \widehat{\mathrm{ELBO}} = \frac1S\sum_{s=1}^S \log p(x, z_s) - \log q_\phi(z_s)

    Parameters
    ----------
    log_joint : callable ``(S, L) -> (S,)``.
    m, log_s : Tensors ``(L,)``, the parameters (``requires_grad``).
    eps : Tensor ``(S, L)``, standard normal noise.

    Returns
    -------
    0-d tensor: an unbiased estimate of the ELBO whose gradient is unbiased for its gradient.
    """
    s = log_s.exp()
    z = m + s * eps  # (S, L): the gradient flows through the draw
    log_q = Normal(m, s).log_prob(z).sum(-1)  # (S,)
    return (log_joint(z) - log_q).mean()
