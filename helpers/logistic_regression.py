r"""Bayesian logistic regression: the model, its MAP and Laplace fit, and predictive checks.

.. math::
    w \sim \mathcal N(0, \sigma_0^2 I_D), \qquad
    y_n \mid w \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(x_n^\top w)), \quad n = 1..N.

There is no closed-form posterior. Lesson 03 fits Gaussian ``q`` to it, and
:mod:`helpers.hmc` computes the reference they are compared against.
Everything works in log space: :math:`\log \mathrm{sigmoid}(a) = -\mathrm{softplus}(-a)`.
"""

import math

import torch
import torch.nn.functional as F

from .gaussian import LOG_2PI

__all__ = ["BayesianLogisticRegression"]


class BayesianLogisticRegression:
    r"""Logistic regression with an isotropic Gaussian prior on the weights.

    Parameters
    ----------
    X : Tensor ``(N, D)``. Inputs; include a column of ones for an intercept.
    y : Tensor ``(N,)`` of 0s and 1s.
    prior_std : float. :math:`\sigma_0`.

    References
    ----------
    Bishop, C. M. Pattern Recognition and Machine Learning, section 4.5 (2006).
    """

    def __init__(self, X, y, prior_std=1.0):
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ValueError(f"X must be (N, D) and y (N,); got {tuple(X.shape)} and {tuple(y.shape)}")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must hold 0s and 1s")
        if not (isinstance(prior_std, (int, float)) and prior_std > 0):
            raise ValueError(f"prior_std must be a positive number, got {prior_std!r}")
        self.X, self.y, self.prior_std = X, y, float(prior_std)
        self.N, self.D = X.shape

    def log_prior(self, w):
        r""":math:`\log \mathcal N(w; 0, \sigma_0^2 I)` for ``w`` of shape ``(..., D)``; returns ``(...)``."""
        return -0.5 * (w**2).sum(-1) / self.prior_std**2 - self.D * (math.log(self.prior_std) + 0.5 * LOG_2PI)

    def log_likelihood(self, w):
        r""":math:`\sum_n y_n \log s(a_n) + (1 - y_n)\log(1 - s(a_n))`, :math:`a = Xw`; ``(..., D) -> (...)``."""
        logits = w @ self.X.T  # (..., N)
        return (self.y * logits - F.softplus(logits)).sum(-1)

    def log_joint(self, w):
        r""":math:`\log p(y, w \mid X)` for ``w`` of shape ``(..., D)``; returns ``(...)``."""
        return self.log_prior(w) + self.log_likelihood(w)

    def subsampled_log_joint(self, w, batch):
        r"""An unbiased estimate of the log joint from the data points ``batch`` only.

        .. math::

            \widehat{\log p}(y, w \mid X) = \log p(w) + \frac{N}{B}\sum_{n \in \mathcal B} \log p(y_n \mid x_n, w),

        for a batch :math:`\mathcal B` of :math:`B` indices drawn uniformly without replacement: each
        index is in it with probability :math:`B/N`, so the expectation over batches is the log
        joint, and so is that of its gradient (Hoffman, Blei, Wang & Paisley 2013).
        ``w``: ``(..., D)``; ``batch``: ``(B,)`` indices into the rows of ``X``. Returns ``(...)``.
        """
        logits = w @ self.X[batch].T  # (..., B)
        log_lik = (self.y[batch] * logits - F.softplus(logits)).sum(-1)
        return self.log_prior(w) + self.N / batch.shape[0] * log_lik

    def log_joint_and_grad(self, w):
        r"""The log joint and its gradient :math:`X^\top(y - s(Xw)) - w/\sigma_0^2`, in closed form.

        ``w``: ``(C, D)``. Returns ``((C,), (C, D))``. Used by HMC, where
        autograd's overhead would dominate a step this small.
        """
        logits = w @ self.X.T  # (C, N)
        log_joint = self.log_prior(w) + (self.y * logits - F.softplus(logits)).sum(-1)
        grad = (self.y - torch.sigmoid(logits)) @ self.X - w / self.prior_std**2
        return log_joint, grad

    def laplace(self, iters=50, tol=1e-10):
        r"""The MAP weights by Newton's method and the Laplace covariance :math:`(-\nabla^2 \log p)^{-1}`.

        The log joint is strictly concave, so Newton's method converges from 0.

        Returns
        -------
        ``(w_map (D,), cov (D, D))``.
        """
        w = torch.zeros(self.D, dtype=self.X.dtype)
        for _ in range(iters):
            _, grad = self.log_joint_and_grad(w.unsqueeze(0))
            hessian = self._neg_hessian(w)
            step = torch.linalg.solve(hessian, grad[0])
            w = w + step
            if step.abs().max() < tol:
                break
        return w, torch.linalg.inv(self._neg_hessian(w))

    def _neg_hessian(self, w):
        p = torch.sigmoid(self.X @ w)
        return (self.X.T * (p * (1 - p))) @ self.X + torch.eye(self.D, dtype=self.X.dtype) / self.prior_std**2

    @staticmethod
    def log_predictive(w_samples, X, y):
        r"""Mean log posterior-predictive probability of the labels, per data point.

        .. math::
            \frac1M\sum_m \log \frac1S\sum_s p(y_m \mid x_m, w_s)

        averaged in log space with ``logsumexp``. ``w_samples``: ``(S, D)``.
        """
        logits = w_samples @ X.T  # (S, M)
        log_lik = y * logits - F.softplus(logits)
        return (torch.logsumexp(log_lik, 0) - math.log(w_samples.shape[0])).mean()

    @staticmethod
    def accuracy(w_samples, X, y):
        """Accuracy of the posterior-predictive mean probability thresholded at 1/2."""
        prob = torch.sigmoid(w_samples @ X.T).mean(0)
        return ((prob > 0.5).to(y.dtype) == y).to(X.dtype).mean()
