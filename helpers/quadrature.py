r"""KL divergences between two-dimensional densities, by quadrature on a grid.

The 2-D targets of lessons 06-08 are normalised, so a family can be scored by its KL divergence to the
target in either direction, computed on a fine grid rather than estimated from draws. Both densities are
renormalised over the grid's box (the mass outside it is dropped from both), so the result is the KL
divergence between the two densities restricted to the box:

.. math::
    \mathrm{KL}(q\,\|\,p) \approx \sum_i \bar q_i\,(\log\bar q_i - \log\bar p_i),\qquad
    \bar q_i = \frac{q(z_i)}{\sum_j q(z_j)},\ \ \bar p_i = \frac{p(z_i)}{\sum_j p(z_j)},

a midpoint rule with equal cells (the cell area cancels). :math:`\mathrm{KL}(q\,\|\,p)`, the *reverse*
divergence, is what maximising the ELBO minimises, and penalises mass of :math:`q` where :math:`p` has
little; :math:`\mathrm{KL}(p\,\|\,q)`, the *forward* one, penalises the target's mass that :math:`q` misses.
Reporting both keeps the score from favouring ELBO-trained families.

References
----------
Cover, T. M. & Thomas, J. A. Elements of Information Theory, 2nd ed., section 2.3 (2006).
"""

import torch

__all__ = ["grid_2d", "kl_on_grid"]


def grid_2d(limits, n, dtype=None):
    r"""Cell midpoints of an ``n`` by ``n`` grid over ``limits = ((x_lo, x_hi), (y_lo, y_hi))``.

    Returns ``(points (n * n, 2), (xs (n,), ys (n,)))``; ``points.reshape(n, n, 2)[i, j] == (xs[j], ys[i])``,
    so values over the points reshape to an image with ``y`` along the rows, as ``contour`` expects.
    """
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    (x_lo, x_hi), (y_lo, y_hi) = limits
    if not (x_hi > x_lo and y_hi > y_lo):
        raise ValueError(f"each limit must be (low, high) with low < high, got {limits!r}")
    dtype = dtype or torch.get_default_dtype()
    xs = x_lo + (torch.arange(n, dtype=dtype) + 0.5) * (x_hi - x_lo) / n
    ys = y_lo + (torch.arange(n, dtype=dtype) + 0.5) * (y_hi - y_lo) / n
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), (xs, ys)


def kl_on_grid(log_q, log_p):
    r""":math:`\mathrm{KL}(q\,\|\,p)` from log densities at the points of an equal-cell grid, ``(G,)`` each.

    Either may be unnormalised (each is renormalised over the grid). Swap the arguments for
    :math:`\mathrm{KL}(p\,\|\,q)`. Returns a 0-d tensor, non-negative up to rounding.
    """
    if log_q.shape != log_p.shape or log_q.dim() != 1:
        shapes = f"{tuple(log_q.shape)} and {tuple(log_p.shape)}"
        raise ValueError(f"log_q and log_p must be 1-D and of one shape, got {shapes}")
    log_q = log_q - torch.logsumexp(log_q, 0)
    log_p = log_p - torch.logsumexp(log_p, 0)
    return (log_q.exp() * (log_q - log_p)).sum()
