r"""Amortized and per-data-point Gaussian VI for models with local latent variables.

Throughout, ``log_joint(x, z)`` maps data ``x (B, D)`` and latents
``z (S, B, L)`` to :math:`\log p(x_i, z_{s,i})` of shape ``(S, B)``, and a
Gaussian ``q`` per data point is given by ``mean`` and ``log_scale``, both ``(B, L)``.

- :func:`gaussian_elbo_terms`: the per-data-point ELBO of Gaussians given by their parameters (lesson 04 hands it
  to exercises 4.5 and 4.6).
- :func:`best_linear_encoder`: the linear Gaussian encoder that is the best diagonal Gaussian for every posterior
  of the linear-Gaussian model (exercise 4.4).
- :func:`amortized_elbo`: the per-data-point ELBO of an encoder's ``q_\phi(z\mid x)`` (lesson 04, exercise 4.1).
- :func:`fit_per_datapoint`: one ``q_i`` per data point by Adam, as in lesson 03, batched; with
  ``init`` from an encoder and few steps it is *semi-amortized* refinement (Kim et al. 2018).
- :func:`refine`: ``steps`` Adam steps from the encoder's output at a constant rate (exercise 4.6).
- :func:`break_even`: the number of new data points from which an encoder has paid for its training
  (exercise 4.7).

References
----------
Cremer, C., Li, X. & Duvenaud, D. Inference suboptimality in variational autoencoders (2018).
Kim, Y., Wiseman, S., Miller, A. C., Sontag, D. & Rush, A. M. Semi-amortized variational autoencoders (2018).
Bishop, C. M. Pattern recognition and machine learning (2006), section 10.1.2.
"""

import math

import torch
from torch.distributions import Normal

from .training import maximize

__all__ = ["gaussian_elbo_terms", "amortized_elbo", "best_linear_encoder", "fit_per_datapoint", "refine", "break_even"]


def gaussian_elbo_terms(x, mean, log_scale, log_joint, eps):
    r"""Reparameterised ELBO estimate per data point for ``q_i = N(mean_i, diag exp(2 log_scale_i))``.

    .. math:: \widehat{\mathrm{ELBO}}_i = \frac1S\sum_{s=1}^S \log p(x_i, z_{s,i}) - \log q_i(z_{s,i}),
        \qquad z_{s,i} = \mu_i + \sigma_i\odot\varepsilon_{s,i}

    ``eps``: ``(S, B, L)`` standard normal noise. Returns ``(B,)``.
    """
    scale = log_scale.exp()
    z = mean + scale * eps  # (S, B, L)
    log_q = Normal(mean, scale).log_prob(z).sum(-1)  # (S, B)
    return (log_joint(x, z) - log_q).mean(0)


def amortized_elbo(x, encoder, log_joint, eps):
    r"""Per-data-point ELBO of the encoder's :math:`q_\phi(z\mid x_i)`; gradients reach the encoder.

    ``encoder(x)`` returns ``(mean, log_scale)``, each ``(B, L)``. Returns ``(B,)``;
    training maximises its mean over a mini-batch (``loss = -elbo.mean()``).
    """
    mean, log_scale = encoder(x)
    return gaussian_elbo_terms(x, mean, log_scale, log_joint, eps)


def best_linear_encoder(W, b, sigma):
    r"""The best diagonal Gaussian for :math:`p(z\mid x)` of the linear-Gaussian model, as a linear encoder of x.

    For :math:`z \sim \mathcal N(0, I_L)`, :math:`x\mid z \sim \mathcal N(Wz + b, \sigma^2 I_D)` the posterior is
    :math:`\mathcal N(\mu(x), \Lambda^{-1})` with the precision :math:`\Lambda = I + W^\top W/\sigma^2` and
    :math:`\mu(x) = \Lambda^{-1}W^\top(x - b)/\sigma^2`. Among diagonal Gaussians
    :math:`q = \mathcal N(m, \mathrm{diag}\,s^2)`, :math:`\mathrm{KL}(q\,\|\,p(z\mid x))` is smallest at

    .. math::
        m = \mu(x) = Ax + c, \quad A = \Lambda^{-1}\frac{W^\top}{\sigma^2}, \quad c = -Ab, \qquad
        \log s_l = -\tfrac12\log\Lambda_{ll},

    the mean-field optimum (Bishop 2006, section 10.1.2): the variances are the inverse diagonal of the
    precision, not the diagonal :math:`\Sigma_{ll}` of the covariance, which minimises the other direction,
    :math:`\mathrm{KL}(p\,\|\,q)`. It leaves :math:`\mathrm{KL} = \tfrac12\big(\sum_l\log\Lambda_{ll} -
    \log\det\Lambda\big)` at every :math:`x`, zero exactly when :math:`\Lambda` is diagonal.

    ``W``: ``(D, L)``; ``b``: ``(D,)``; ``sigma``: a positive number. Returns ``A (L, D)``, ``c (L,)`` and
    ``log_scale (L,)``: :math:`q(z\mid x) = \mathcal N(Ax + c, \mathrm{diag}\,e^{2\,\text{log\_scale}})`.
    """
    L = W.shape[1]
    precision = torch.eye(L, dtype=W.dtype, device=W.device) + W.T @ W / sigma**2  # (L, L)
    A = torch.linalg.solve(precision, W.T) / sigma**2  # (L, D)
    return A, -A @ b, -0.5 * precision.diagonal().log()


def fit_per_datapoint(x, log_joint, L, steps, lr=0.05, S=8, final_lr_factor=0.02, init=None, generator=None):
    r"""Maximise each data point's ELBO over its own ``(mean_i, log_scale_i)`` with Adam.

    The ELBO is a sum over data points and each ``q_i`` has its own
    parameters, so one optimiser over the stacked ``(B, L)`` parameters fits
    all of them at once. The learning rate decays geometrically to
    ``lr * final_lr_factor`` (``1.0``: constant).

    Parameters
    ----------
    init : ``(mean, log_scale)`` or None (zeros: the prior's location, unit scale).

    Returns
    -------
    ``(mean (B, L), log_scale (B, L))``, detached.
    """
    B = x.shape[0]
    if init is None:
        mean = torch.zeros(B, L, dtype=x.dtype, device=x.device)
        log_scale = torch.zeros(B, L, dtype=x.dtype, device=x.device)
    else:
        mean, log_scale = init
    mean = mean.detach().clone().requires_grad_(True)
    log_scale = log_scale.detach().clone().requires_grad_(True)
    if steps == 0:
        return mean.detach(), log_scale.detach()

    def bound():  # the sum of the per-point ELBOs: each q_i gets the gradient of its own term only
        eps = torch.randn(S, B, L, generator=generator, dtype=x.dtype, device=x.device)
        return gaussian_elbo_terms(x, mean, log_scale, log_joint, eps).sum()

    maximize(bound, [mean, log_scale], steps, lr, final_lr_factor)
    return mean.detach(), log_scale.detach()


def refine(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
    """Semi-amortized VI: ``steps`` Adam steps per data point, at a constant rate, from the encoder's output."""
    return fit_per_datapoint(
        x, log_joint, mean.shape[-1], steps, lr=lr, S=S, final_lr_factor=1.0, init=(mean, log_scale)
    )


def break_even(train_cost, optimise_cost, encode_cost):
    r"""The number of new data points from which amortized inference is no more expensive than optimisation.

    Training costs :math:`T` once; each new data point then costs :math:`e` with the encoder, or :math:`o` with
    its own optimisation. For :math:`n` points the totals are :math:`T + n e` and :math:`n o`, so amortization
    is no more expensive from

    .. math::
        n^* = \Big\lceil \frac{T}{o - e} \Big\rceil \qquad (o > e),

    and :math:`n^* = 0` when :math:`T = 0` (whatever :math:`o` and :math:`e`: :math:`0 \le 0`); otherwise, when
    :math:`o \le e`, never (returns ``math.inf``). The costs are in any one unit (seconds, likelihood
    evaluations), non-negative numbers. Gershman & Goodman (2014) frame amortization as this trade.
    """
    costs = {"train_cost": train_cost, "optimise_cost": optimise_cost, "encode_cost": encode_cost}
    for name, value in costs.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    if train_cost == 0:  # n = 0 already satisfies T + n e <= n o
        return 0
    if encode_cost >= optimise_cost:
        return math.inf
    return math.ceil(train_cost / (optimise_cost - encode_cost))
