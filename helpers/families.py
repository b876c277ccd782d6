r"""Gaussian variational families with unconstrained parameters, as ``torch.nn.Module``.

Both return a ``torch.distributions`` object from :meth:`distribution`, so
:func:`helpers.estimators.elbo` and friends work with either. Scales are
parameterised by their logarithm, so every real parameter value is valid.

- :class:`MeanFieldGaussian`: :math:`q(z) = \prod_l \mathcal N(z_l; m_l, s_l^2)`, ``2L`` parameters.
- :class:`FullRankGaussian`: :math:`q(z) = \mathcal N(z; m, \Sigma)` with :math:`\Sigma = CC^\top`,
  :math:`C` lower-triangular with a positive diagonal (Cholesky), ``L + L(L+1)/2`` parameters.

References
----------
Kucukelbir, A. et al. Automatic differentiation variational inference. JMLR 18 (2017).
"""

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

__all__ = ["MeanFieldGaussian", "FullRankGaussian"]


def _initial(L, mean, log_scale, dtype):
    if not (isinstance(L, int) and L > 0):
        raise ValueError(f"the latent dimension L must be a positive integer, got {L!r}")
    dtype = dtype or torch.get_default_dtype()
    m = torch.zeros(L, dtype=dtype) if mean is None else torch.as_tensor(mean, dtype=dtype).clone()
    if m.shape != (L,):
        raise ValueError(f"mean must have shape ({L},), got {tuple(m.shape)}")
    return m, torch.full((L,), float(log_scale), dtype=dtype)


class MeanFieldGaussian(nn.Module):
    """Diagonal Gaussian with parameters ``mean (L,)`` and ``log_scale (L,)``."""

    def __init__(self, L, mean=None, log_scale=0.0, dtype=None):
        super().__init__()
        m, log_s = _initial(L, mean, log_scale, dtype)
        self.mean = nn.Parameter(m)
        self.log_scale = nn.Parameter(log_s)

    def distribution(self):
        """``Independent(Normal(mean, exp(log_scale)), 1)``: ``log_prob`` returns one value per draw.

        Built without torch's argument checks: the scale is an exponential, valid by construction, and the checks
        cost as much as the rest of a small training step (a NaN from a diverged fit shows in its ELBO instead).
        """
        return Independent(Normal(self.mean, self.log_scale.exp(), validate_args=False), 1, validate_args=False)

    def covariance(self):
        """The ``(L, L)`` covariance, diagonal."""
        return torch.diag((2 * self.log_scale).exp())


class FullRankGaussian(nn.Module):
    r"""Gaussian with a full covariance :math:`CC^\top`.

    Parameters ``mean (L,)``, ``log_diag (L,)`` (log of :math:`C`'s diagonal)
    and ``off_diag (L, L)`` (only its strictly lower triangle is used).
    """

    def __init__(self, L, mean=None, log_scale=0.0, dtype=None):
        super().__init__()
        m, log_d = _initial(L, mean, log_scale, dtype)
        self.mean = nn.Parameter(m)
        self.log_diag = nn.Parameter(log_d)
        self.off_diag = nn.Parameter(torch.zeros(L, L, dtype=m.dtype))

    def scale_tril(self):
        r"""The Cholesky factor :math:`C`, ``(L, L)``, lower-triangular with a positive diagonal."""
        return torch.tril(self.off_diag, diagonal=-1) + torch.diag(self.log_diag.exp())

    def distribution(self):
        """``MultivariateNormal(mean, scale_tril=C)``, without torch's argument checks (``C`` is lower-triangular
        with an exponential diagonal by construction; the checks cost a third of a small training step)."""
        return MultivariateNormal(self.mean, scale_tril=self.scale_tril(), validate_args=False)

    def covariance(self):
        r""":math:`\Sigma = CC^\top`, ``(L, L)``."""
        C = self.scale_tril()
        return C @ C.T
