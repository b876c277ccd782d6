r"""Unbiased implicit VI (UIVI): the ELBO's gradient for a semi-implicit family, with no surrogate bound.

With :math:`z = h_\phi(\varepsilon, \xi) = g_\phi(\varepsilon) + C\xi` reparameterised, the ELBO's gradient is

.. math::
    \nabla_\phi\,\mathrm{ELBO} = \mathbb E\big[(\nabla_z\log p(z) - \nabla_z\log q_\phi(z))^\top
        \partial_\phi h_\phi(\varepsilon, \xi)\big],

because :math:`\mathbb E_q[\nabla_\phi\log q_\phi(z)] = 0`. Only the marginal *score*
:math:`s_q(z) = \nabla_z\log q_\phi(z)` is missing, and it is an expectation under the *reverse
conditional* :math:`q_\phi(\varepsilon\mid z)\propto q_\phi(z\mid\varepsilon)\,q(\varepsilon)`:

.. math::
    s_q(z) = \mathbb E_{q_\phi(\varepsilon\mid z)}\big[\nabla_z\log q_\phi(z\mid\varepsilon)\big].

UIVI draws from the reverse conditional by HMC, started at the :math:`\varepsilon` that generated
:math:`z`, which is already an exact draw from it, so every draw of the chain is one too. Averaging the
conditional score over the chain's draws gives an unbiased estimate of :math:`s_q(z)` given :math:`z`, and
the surrogate :math:`\log p(z) - \mathrm{sg}(\hat s_q(z))^\top z` has the ELBO's gradient in expectation
(its value is not the ELBO) up to one correction: the draws are correlated with the starting
:math:`\varepsilon`, at which :math:`\partial z/\partial\phi` is evaluated, so the product is biased
until the chain forgets its start. The burn-in is there for that; lesson 08 measures what is left.

References
----------
Titsias, M. K. & Ruiz, F. J. R. Unbiased implicit variational inference. AISTATS (2019).
"""

import torch
from torch import nn

from .gaussian import log_normal_diag
from .hmc import hmc

__all__ = [
    "reverse_conditional_log_prob",
    "reverse_conditional_draws",
    "conditional_score",
    "marginal_score_estimate",
    "uivi_objective",
    "uivi_surrogate",
]


def reverse_conditional_log_prob(q, z, eps):
    r""":math:`\log q(z\mid g(\varepsilon)) + \log\mathcal N(\varepsilon; 0, I)`, the reverse conditional's
    log density up to :math:`-\log q(z)`; ``z (S, L)``, ``eps (S, D)`` -> ``(S,)``."""
    return q.log_conditional(z, q.mixing(eps)) + log_normal_diag(eps, 0.0, torch.zeros_like(eps))


def _mlp_layers(mixing):
    """The (weight, bias) pairs of a ``Sequential`` of ``Linear`` layers with ``ReLU`` between, else ``None``."""
    if not isinstance(mixing, nn.Sequential):
        return None
    modules = list(mixing)
    linears, relus = modules[0::2], modules[1::2]
    if not (all(isinstance(m, nn.Linear) for m in linears) and all(isinstance(m, nn.ReLU) for m in relus)):
        return None
    return [(m.weight.detach(), m.bias.detach()) for m in linears]


def _mlp_vjp(layers, eps):
    """``g(eps)`` and the map ``v -> J_g(eps)^T v`` for a ReLU MLP, by hand: no autograd."""
    h, masks = eps, []
    for W, b in layers[:-1]:
        pre = h @ W.T + b
        masks.append(pre > 0)
        h = pre.clamp_min(0)
    W, b = layers[-1]
    out = h @ W.T + b

    def vjp(v):
        g = v @ layers[-1][0]
        for (W, _), mask in zip(reversed(layers[:-1]), reversed(masks), strict=True):
            g = (g * mask) @ W
        return g

    return out, vjp


def reverse_conditional_draws(q, z, eps0, n_samples, n_warmup, step_size, n_leapfrog, log_prob=None):
    r"""HMC draws from :math:`q(\varepsilon\mid z)`, one chain per ``z``, started at ``eps0``.

    ``z (S, L)`` and ``eps0 (S, D)`` are detached. Returns ``(draws (n_samples, S, D), acceptance_rate)``.
    ``log_prob(q, z, eps) -> (S,)`` replaces :func:`reverse_conditional_log_prob` (lesson 08 runs the
    learner's; its gradient is then taken by autograd). The gradient in :math:`\varepsilon` is
    :math:`J_g(\varepsilon)^\top(CC^\top)^{-1}(z - g(\varepsilon)) - \varepsilon`; for a ReLU MLP (the
    families of lessons 06-08) it is computed by hand, several times faster than autograd at these sizes.
    """
    z, eps0 = z.detach(), eps0.detach()
    layers = _mlp_layers(q.mixing) if log_prob is None else None
    log_prob = log_prob or reverse_conditional_log_prob

    def log_prob_and_grad(eps):
        if layers is None:
            with torch.enable_grad():
                eps = eps.detach().requires_grad_(True)
                lp = log_prob(q, z, eps)
                (grad,) = torch.autograd.grad(lp.sum(), eps)
            return lp.detach(), grad
        with torch.no_grad():
            psi, vjp = _mlp_vjp(layers, eps)
            lp = q.log_conditional(z, psi) + log_normal_diag(eps, 0.0, torch.zeros_like(eps))
            return lp, vjp(-conditional_score(q, z, psi)) - eps  # d log N(z; psi) / d psi = -(score in z)

    # UIVI's authors run HMC at a fixed, adapted step: no jitter, so the step their adaptation sets is the one taken
    return hmc(log_prob_and_grad, eps0, step_size, n_leapfrog, n_samples, n_warmup, jitter=0.0)


def conditional_score(q, z, psi):
    r""":math:`\nabla_z\log\mathcal N(z;\psi, CC^\top) = -(CC^\top)^{-1}(z - \psi)`; ``z``, ``psi (..., L)``."""
    if not q.full_covariance:
        return -(z - psi) / q.sigma**2
    C = q.scale_tril()
    u = torch.linalg.solve_triangular(C, (z - psi).unsqueeze(-1), upper=False)
    return -torch.linalg.solve_triangular(C.T, u, upper=True).squeeze(-1)


def marginal_score_estimate(q, z, eps_draws):
    r""":math:`\hat s_q(z) = \frac1M\sum_m\nabla_z\log q(z\mid g(\varepsilon^{(m)}))`, unbiased for :math:`s_q(z)`
    when the :math:`\varepsilon^{(m)}` are draws from :math:`q(\varepsilon\mid z)`.

    ``z (S, L)``, ``eps_draws (M, S, D)`` (draw ``m`` of chain ``s`` belongs to ``z[s]``) -> ``(S, L)``.
    """
    return conditional_score(q, z, q.mixing(eps_draws)).mean(0)


def uivi_objective(log_target, z, score):
    r"""UIVI's surrogate on given draws: a 0-d tensor whose gradient is the ELBO's gradient estimate.

    .. math::
        \frac1S\sum_{s=1}^S\Big[\log p(z_s) - \mathrm{sg}\big(\hat s_q(z_s)\big)^\top z_s\Big],

    with :math:`\mathrm{sg}` the stop-gradient: for reparameterized draws :math:`z_s = h_\phi(\varepsilon_s,
    \xi_s)`, its gradient in :math:`\phi` is :math:`\frac1S\sum_s(\nabla_z\log p(z_s) - \hat s_q(z_s))^\top
    \partial h_\phi/\partial\phi`, the ELBO's gradient with the score estimate in place of
    :math:`\nabla_z\log q_\phi` (Titsias & Ruiz 2019, eq. 5). Its value is not the ELBO.
    ``log_target``: ``(S, L) -> (S,)``; ``z``: ``(S, L)``, differentiable; ``score``: ``(S, L)``, held fixed.
    """
    return (log_target(z) - (score.detach() * z).sum(-1)).mean()


def uivi_surrogate(
    log_target,
    q,
    S,
    n_samples=5,
    n_warmup=5,
    step_size=0.2,
    n_leapfrog=5,
    stats=None,
    score_estimate=None,
    objective=None,
):
    r"""A surrogate whose gradient estimates the ELBO's gradient (unbiased as the chain forgets its start).

    .. math::
        \frac1S\sum_{s=1}^S\Big[\log p(z_s) - \mathrm{sg}\big(\hat s_q(z_s)\big)^\top z_s\Big],\qquad
        \hat s_q(z_s) = \frac1M\sum_{m=1}^M\nabla_z\log q(z_s\mid g(\varepsilon_s^{(m)})),

    with :math:`\varepsilon_s^{(m)}` the ``n_samples`` draws kept after ``n_warmup`` HMC iterations on
    :math:`q(\varepsilon\mid z_s)` (Titsias & Ruiz 2019, algorithm 1). Maximise it; its value is not a bound.
    ``stats``, a dict, receives the HMC acceptance rate under ``"acceptance"`` (to adapt ``step_size``).
    ``score_estimate(q, z, eps_draws) -> (S, L)`` replaces :func:`marginal_score_estimate` and
    ``objective(log_target, z, score)`` replaces :func:`uivi_objective` (lesson 08 passes the learner's).
    """
    p = q.log_sigma
    eps = torch.randn(S, q.noise_dim, dtype=p.dtype, device=p.device)
    psi = q.mixing(eps)
    xi = torch.randn_like(psi)
    z = psi + (xi @ q.scale_tril().T if q.full_covariance else q.sigma * xi)
    draws, acceptance = reverse_conditional_draws(q, z, eps, n_samples, n_warmup, step_size, n_leapfrog)
    if stats is not None:
        stats["acceptance"] = acceptance
    with torch.no_grad():
        score = (score_estimate or marginal_score_estimate)(q, z.detach(), draws)  # (S, L)
    return (objective or uivi_objective)(log_target, z, score)
