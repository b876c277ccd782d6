r"""A normalizing flow, RealNVP: a rich family whose density is explicit, the other road from a Gaussian.

A flow pushes a standard Gaussian :math:`u\sim\mathcal N(0, I)` through invertible maps
:math:`z = f_T\circ\dots\circ f_1(u)`, each with a cheap Jacobian determinant, so that

.. math::
    \log q(z) = \log\mathcal N(u; 0, I) - \sum_{t=1}^T\log\Big|\det\frac{\partial f_t}{\partial x_{t-1}}\Big| .

RealNVP's map is the *affine coupling*: with a binary mask :math:`m`, the masked coordinates pass
unchanged and condition a scale and a shift for the others,

.. math::
    y = m\odot x + (1 - m)\odot\big(x\odot e^{s(m\odot x)} + t(m\odot x)\big),\qquad
    \log|\det\partial y/\partial x| = \sum_l (1 - m_l)\,s_l(m\odot x),

a triangular Jacobian; the inverse is as cheap, :math:`x = m\odot y + (1 - m)\odot(y - t)e^{-s}`. Masks
alternate, so every coordinate is transformed by half of the layers. Unlike a semi-implicit family, the
flow's ELBO needs no surrogate; unlike a Gaussian, it can bend and split its mass (within the limits of a
continuous invertible map: two separated modes stay joined by a thin bridge).

References
----------
Dinh, L., Sohl-Dickstein, J. & Bengio, S. Density estimation using Real NVP. ICLR (2017).
Rezende, D. & Mohamed, S. Variational inference with normalizing flows. ICML (2015).
Papamakarios, G. et al. Normalizing flows for probabilistic modeling and inference. JMLR 22 (2021).
"""

import torch
from torch import nn

from .gaussian import log_normal_diag

__all__ = ["affine_coupling", "AffineCoupling", "RealNVP"]


def affine_coupling(x, mask, shift_and_log_scale):
    r"""One affine coupling step, :math:`x\mapsto y`, and its log-determinant.

    Parameters
    ----------
    x : Tensor ``(n, L)``.
    mask : Tensor ``(L,)`` of zeros and ones; the coordinates with ``mask == 1`` pass unchanged.
    shift_and_log_scale : callable ``(n, L) -> (t (n, L), s (n, L))``, applied to ``mask * x``.

    Returns
    -------
    ``(y (n, L), log_det (n,))`` with :math:`\log|\det\partial y/\partial x| = \sum_l(1 - m_l)s_l`.
    """
    kept = mask * x
    t, s = shift_and_log_scale(kept)
    y = kept + (1 - mask) * (x * s.exp() + t)
    return y, ((1 - mask) * s).sum(-1)


class AffineCoupling(nn.Module):
    r"""An affine coupling layer with a small MLP for :math:`t` and :math:`s`; :math:`s` is kept in
    :math:`(-\text{max\_log\_scale}, \text{max\_log\_scale})` by a ``tanh``, so no step can blow up."""

    def __init__(self, mask, hidden=64, max_log_scale=2.0, coupling=affine_coupling):
        super().__init__()
        self.coupling = coupling
        L = mask.shape[0]
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(L, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.shift, self.log_scale = nn.Linear(hidden, L), nn.Linear(hidden, L)
        for layer in (self.shift, self.log_scale):  # start at the identity map
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.max_log_scale = max_log_scale

    def shift_and_log_scale(self, kept):
        h = self.net(kept)
        return self.shift(h), self.max_log_scale * torch.tanh(self.log_scale(h) / self.max_log_scale)

    def forward(self, x):
        """``x (n, L) -> (y (n, L), log_det (n,))``."""
        return self.coupling(x, self.mask, self.shift_and_log_scale)

    def inverse(self, y):
        """``y (n, L) -> (x (n, L), log_det (n,))``, the log-determinant of the *forward* map at ``x``."""
        kept = self.mask * y
        t, s = self.shift_and_log_scale(kept)
        x = kept + (1 - self.mask) * (y - t) * (-s).exp()
        return x, ((1 - self.mask) * s).sum(-1)


class RealNVP(nn.Module):
    r""":math:`z = f_T\circ\dots\circ f_1(u)`, :math:`u\sim\mathcal N(0, I_L)`, with ``n_layers`` affine couplings.

    Masks alternate between the even and the odd coordinates (for ``L = 2``: first :math:`z_1` conditions
    :math:`z_2`, then the reverse). Every layer starts at the identity, so the untrained flow is
    :math:`\mathcal N(0, I)`.

    Parameters
    ----------
    L : int, at least 2. n_layers : int, positive. hidden : int, the width of each layer's MLP.
    coupling : the forward step, :func:`affine_coupling` by default (lesson 08 passes the learner's).
    """

    def __init__(self, L=2, n_layers=8, hidden=64, max_log_scale=2.0, coupling=affine_coupling):
        super().__init__()
        if not (isinstance(L, int) and L >= 2):
            raise ValueError(f"a coupling flow needs L >= 2 coordinates, got {L!r}")
        if not (isinstance(n_layers, int) and n_layers > 0):
            raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        even = (torch.arange(L) % 2 == 0).to(torch.get_default_dtype())
        masks = [even if t % 2 == 0 else 1 - even for t in range(n_layers)]
        self.L = L
        self.layers = nn.ModuleList(AffineCoupling(m, hidden, max_log_scale, coupling) for m in masks)

    def _base_log_prob(self, u):
        return log_normal_diag(u, 0.0, torch.zeros_like(u))

    def rsample_with_log_prob(self, n):
        r"""``n`` reparameterised draws and their log density: ``(z (n, L), log q(z) (n,))``, as the ELBO needs."""
        p = next(self.parameters())
        u = torch.randn(n, self.L, dtype=p.dtype, device=p.device)
        log_q = self._base_log_prob(u)
        z = u
        for layer in self.layers:
            z, log_det = layer(z)
            log_q = log_q - log_det
        return z, log_q

    def log_prob(self, z):
        r""":math:`\log q(z)` at given points, by running the layers backwards; ``z (n, L) -> (n,)``."""
        log_det_total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for layer in reversed(self.layers):
            z, log_det = layer.inverse(z)
            log_det_total = log_det_total + log_det
        return self._base_log_prob(z) - log_det_total
