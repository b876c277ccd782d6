r"""Kernel semi-implicit VI: train a semi-implicit family by the kernel Stein discrepancy, no density needed.

For a target :math:`p` with score :math:`s_p = \nabla\log p` and a variational :math:`q` with score
:math:`s_q`, the (squared) kernel Stein discrepancy with a kernel :math:`k` is

.. math::
    \mathrm{KSD}^2(q, p) = \mathbb E_{z, z'\sim q}\big[k(z, z')\,(s_p(z) - s_q(z))^\top(s_p(z') - s_q(z'))\big],

zero only when :math:`q = p` (for a suitable kernel). :math:`s_q` of a semi-implicit family is
intractable, but its conditional score is not, and :math:`\mathbb E[\nabla_z\log q(z\mid\psi)\mid z] = s_q(z)`.
Because :math:`z` and :math:`z'` are independent, replacing :math:`s_q` by the conditional score in the
*off-diagonal* terms of a U-statistic leaves the estimate unbiased (Cheng et al. 2024). The diagonal
terms :math:`i = j` must be left out: there the noise of the conditional score is squared, not averaged away.

The target needs only a score, so an unnormalised :math:`\log p` is enough.

References
----------
Cheng, Z., Yu, L., Xie, T., Zhang, S. & Zhang, C. Kernel semi-implicit variational inference. ICML (2024).
Liu, Q., Lee, J. & Jordan, M. A kernelized Stein discrepancy for goodness-of-fit tests. ICML (2016).
Liu, Q. & Wang, D. Stein variational gradient descent. NeurIPS (2016).
Gorham, J. & Mackey, L. Measuring sample quality with kernels. ICML (2017).
"""

import math

import torch

__all__ = ["rbf_kernel", "imq_kernel", "median_bandwidth", "imq_bandwidth", "ksd_u_statistic", "ksivi_loss"]


def rbf_kernel(z, bandwidth):
    r""":math:`k(z_i, z_j) = \exp(-\lVert z_i - z_j\rVert^2 / (2h^2))`; ``z (S, L)`` -> ``(S, S)``."""
    sq_dist = ((z.unsqueeze(1) - z.unsqueeze(0)) ** 2).sum(-1)  # (S, S); unlike cdist, differentiable twice
    return torch.exp(-sq_dist / (2 * bandwidth**2))


def imq_kernel(z, bandwidth):
    r"""The inverse multiquadric :math:`k(z_i, z_j) = (1 + \lVert z_i - z_j\rVert^2 / h)^{-1/2}`; ``(S, L) -> (S, S)``.

    Its tails are heavy (polynomial, not Gaussian), so far-apart draws still interact; Gorham & Mackey
    (2017) show that KSD with this kernel detects non-convergence where the Gaussian kernel's can fail, and
    the KSIVI authors use it for their two-mode target. Here ``bandwidth`` is :math:`h`, a squared length.
    """
    sq_dist = ((z.unsqueeze(1) - z.unsqueeze(0)) ** 2).sum(-1)
    return (1 + sq_dist / bandwidth).rsqrt()


def imq_bandwidth(z):
    r""":math:`h = \mathrm{med}_{i\ne j}\lVert z_i - z_j\rVert^2 / \log(S + 1)`, detached: the KSIVI authors' rule
    for :func:`imq_kernel` (their ``utils/kernels.py``). ``z (S, L)`` -> 0-d tensor."""
    with torch.no_grad():
        d2 = torch.cdist(z, z) ** 2
        return d2[~torch.eye(len(z), dtype=torch.bool, device=z.device)].median() / math.log(len(z) + 1)


def median_bandwidth(z, detach=True):
    r"""The median heuristic :math:`h = \mathrm{med}_{i\ne j}\lVert z_i - z_j\rVert / \sqrt{2\log(S+1)}`.

    With :func:`rbf_kernel` this is the choice of Liu & Wang (2016, SVGD): each draw's kernel weights
    about balance the others' as ``S`` grows. Detached by default; ``detach=False`` lets the loss's gradient
    reach the draws through :math:`h` too, as the KSIVI authors' logistic-regression code does (with a detached
    :math:`h`, spreading the draws apart shrinks every kernel weight, and on lesson 06's 31-D posterior the
    family's spread grows without bound). ``z (S, L)`` -> 0-d tensor.
    """
    off_diagonal = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    if detach:
        with torch.no_grad():
            return torch.cdist(z, z)[off_diagonal].median() / math.sqrt(2 * math.log(len(z) + 1))
    sq = ((z.unsqueeze(1) - z.unsqueeze(0)) ** 2).sum(-1)  # differentiable at 0, unlike cdist
    return torch.sqrt(sq[off_diagonal].median() / (2 * math.log(len(z) + 1)))


def ksd_u_statistic(z, diff, bandwidth, kernel=rbf_kernel):
    r""":math:`\frac{1}{S(S-1)}\sum_{i\ne j} k(z_i, z_j)\,d_i^\top d_j` for draws ``z (S, L)`` and ``diff (S, L)``.

    With :math:`d_i = s_p(z_i) - \nabla\log q(z_i\mid\psi_i)` this is an unbiased estimate of
    :math:`\mathrm{KSD}^2(q, p)`. ``kernel(z, bandwidth) -> (S, S)``, :func:`rbf_kernel` by default.
    Returns a 0-d tensor.
    """
    S = z.shape[0]
    if S < 2:
        raise ValueError(f"a U-statistic needs at least 2 draws, got {S}")
    gram = kernel(z, bandwidth) * (diff @ diff.T)  # (S, S)
    return (gram.sum() - gram.diagonal().sum()) / (S * (S - 1))


def ksivi_loss(log_target, q, S, bandwidth=None, ksd=ksd_u_statistic):
    r"""KSIVI's objective: the U-statistic of :math:`\mathrm{KSD}^2` with the conditional score; minimise it.

    .. math::
        \frac{1}{S(S-1)}\sum_{i\ne j} k(z_i, z_j)\,d_i^\top d_j,\qquad
        d_i = \nabla_z\log p(z_i) + \frac{z_i - \psi_i}{\sigma^2},\qquad (z_i, \psi_i)\sim q,

    reparameterized, so its gradient reaches the family's parameters through :math:`z_i`, the target's
    score (kept in the graph) and :math:`\sigma` (Cheng et al. 2024, section 3).

    Parameters
    ----------
    log_target : callable ``(S, L) -> (S,)``, normalised or not (only its score is used).
    q : :class:`helpers.semi_implicit.SemiImplicitGaussian`.
    S : int, at least 2. The number of draws.
    bandwidth : positive number; a rule ``(S, L) -> 0-d`` applied to the draws (such as :func:`imq_bandwidth`);
        or ``None`` for :func:`median_bandwidth` of the draws.
    ksd : callable ``(z (S, L), diff (S, L), bandwidth) -> 0-d``, the U-statistic; :func:`ksd_u_statistic`
        by default. Lesson 07 passes its exercise 7.6 here, so the loss runs on the learner's statistic.

    Returns
    -------
    0-d tensor, to be minimised.
    """
    z, psi = q.rsample(S)
    (score_p,) = torch.autograd.grad(log_target(z).sum(), z, create_graph=True)  # (S, L), differentiable in z
    score_conditional = -(z - psi) / q.sigma**2  # grad_z log N(z; psi, diag sigma^2)
    h = median_bandwidth(z) if bandwidth is None else bandwidth(z) if callable(bandwidth) else bandwidth
    return ksd(z, score_p - score_conditional, h)
