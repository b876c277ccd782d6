r"""SIVI by score matching (SIVI-SM): the Fisher divergence of a semi-implicit family, as a minimax game.

The Fisher divergence :math:`\mathbb E_q\lVert s_p(z) - s_q(z)\rVert^2` needs the marginal score
:math:`s_q`, which a semi-implicit family lacks. Its variational form does not: for any vector field
:math:`f`,

.. math::
    \mathbb E_q\lVert s_p - s_q\rVert^2
        = \max_f\ \mathbb E_q\big[2f(z)^\top(s_p(z) - s_q(z)) - \lVert f(z)\rVert^2\big],

attained at :math:`f = s_p - s_q` (complete the square). Inside the expectation :math:`s_q(z)` appears
only linearly, multiplied by a function of :math:`z` alone, so it may be replaced by the *conditional*
score: :math:`\mathbb E_{q(z,\psi)}[f(z)^\top\nabla_z\log q(z\mid\psi)] = \mathbb E_q[f(z)^\top s_q(z)]`.
SIVI-SM trains a network :math:`f_\omega` to maximise the objective and the family to minimise it,
alternating steps (Yu & Zhang 2023, equation 9).

References
----------
Yu, L. & Zhang, C. Semi-implicit variational inference via score matching. ICLR (2023).
Hyvärinen, A. Estimation of non-normalized statistical models by score matching. JMLR 6 (2005).
"""

import torch
from torch import nn

from .uivi import conditional_score

__all__ = ["sivism_objective", "sivism_step", "score_network"]


def sivism_objective(log_target, q, f, S, train_family=True):
    r"""The SIVI-SM objective from ``S`` draws: the family minimises it, the network ``f`` maximises it.

    .. math::
        \frac1S\sum_{s=1}^S\Big[2 f(z_s)^\top\big(s_p(z_s) - \nabla_z\log q(z_s\mid\psi_s)\big)
            - \lVert f(z_s)\rVert^2\Big],\qquad (z_s, \psi_s)\sim q,

    reparameterized, so the gradient reaches the family through :math:`z_s`, the target's score (kept in
    the graph) and the conditional's covariance. At the best ``f`` its expectation is the Fisher divergence.

    Parameters
    ----------
    log_target : callable ``(S, L) -> (S,)``, normalised or not. q : a semi-implicit family with
        ``rsample`` and a Gaussian conditional. f : callable ``(S, L) -> (S, L)``. S : int, positive.
    train_family : bool. ``False`` for ``f``'s step: the family's draws and scores are detached, so only
        ``f``'s graph is built (the value is the same).
    """
    z, psi = q.rsample(S)
    if not train_family:
        z, psi = z.detach().requires_grad_(True), psi.detach()
    (score_p,) = torch.autograd.grad(log_target(z).sum(), z, create_graph=train_family)
    score_q = conditional_score(q, z, psi)
    if not train_family:
        score_q = score_q.detach()
    fz = f(z)
    return (2 * (fz * (score_p - score_q)).sum(-1) - (fz**2).sum(-1)).mean()


def sivism_step(log_target, q, f, opt_q, opt_f, S, objective=None):
    r"""One SIVI-SM update: the family one step down the objective, then ``f`` one step up it.

    .. math::
        \phi \leftarrow \phi - \eta_\phi\nabla_\phi\hat J(\phi, \omega),\qquad
        \omega \leftarrow \omega + \eta_\omega\nabla_\omega\hat J(\phi, \omega),

    with :math:`\hat J` the objective (:func:`sivism_objective`) on ``S`` fresh draws each time, the family's
    step first, as the authors' ``sivism_2d.py`` alternates them; ``f`` steps with the family just updated.
    Each step clears its optimiser's gradients first (the family's backward also reaches ``f``'s weights).

    Parameters
    ----------
    log_target, q, f, S : as :func:`sivism_objective`. opt_q, opt_f : torch optimisers over the family's
        and over ``f``'s parameters. objective : ``(log_target, q, f, S) -> 0-d tensor``, by default
        :func:`sivism_objective` (detached family draws in ``f``'s step, which saves the family's graph).

    Returns
    -------
    float, the objective at the family's step (before either update): :math:`f`'s current estimate of the
    Fisher divergence.
    """
    opt_q.zero_grad()
    value = (objective or sivism_objective)(log_target, q, f, S)
    value.backward()  # the family minimises
    opt_q.step()
    opt_f.zero_grad()
    if objective is None:
        f_value = sivism_objective(log_target, q, f, S, train_family=False)
    else:
        f_value = objective(log_target, q, f, S)
    (-f_value).backward()  # f maximises: loss = -objective
    opt_f.step()
    return value.item()


def score_network(L, hidden=(128, 128)):
    """The vector field :math:`f_\\omega`: a ReLU MLP ``(S, L) -> (S, L)``, as SIVI-SM's ``Fnet`` (128, 128)."""
    widths = (L, *hidden)
    layers = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], L))
    return nn.Sequential(*layers)
