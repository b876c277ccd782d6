r"""Hamiltonian Monte Carlo with a fixed linear preconditioner, many chains at once.

The course's reference posteriors (lesson 03 onwards) come from here: long
runs, whose accuracy is checked with the split-:math:`\hat R` diagnostic and,
in the tests, against Gaussian targets with known moments.

Preconditioning: given a matrix :math:`L` (typically the Cholesky factor of a
Laplace covariance), HMC runs on :math:`u` with :math:`w = L u`, so that a
posterior close to the Laplace fit looks isotropic and one step size fits all
directions. This is HMC with mass matrix :math:`(LL^\top)^{-1}`.

Step-size jitter: on a near-Gaussian target, a trajectory of fixed length
:math:`\varepsilon n` rotates each whitened coordinate by the same angle every
iteration. Close to half a period (:math:`\pi`) it maps :math:`u` to about
:math:`-u`: the means come out excellent, but :math:`u^2` hardly changes, so
standard deviations and correlations rest on a few effective draws, and
split-:math:`\hat R` cannot see it. Drawing each chain's step size afresh every
iteration (Neal 2011, section 5.4.2.2) breaks that resonance.
"""

import torch

__all__ = ["hmc", "split_rhat"]


def hmc(
    log_prob_and_grad, init, step_size, n_leapfrog, n_samples, n_warmup=0, scale_tril=None, generator=None, jitter=0.2
):
    r"""Run ``C`` independent HMC chains; return the draws and the acceptance rate.

    Each iteration draws momenta :math:`r\sim\mathcal N(0, I)`, takes
    ``n_leapfrog`` leapfrog steps of the Hamiltonian
    :math:`H(u, r) = -\log\pi(Lu) + \tfrac12\|r\|^2`, and accepts with
    probability :math:`\min(1, e^{-\Delta H})`.

    Parameters
    ----------
    log_prob_and_grad : callable ``w (C, D) -> (log pi (C,), grad (C, D))``.
    init : Tensor ``(C, D)``. Starting points, one per chain.
    step_size : float. Leapfrog step in the preconditioned coordinates; with ``jitter``, its average.
    n_leapfrog : int. Leapfrog steps per iteration.
    n_samples, n_warmup : int. Kept draws, and discarded draws before them.
    scale_tril : Tensor ``(D, D)`` or None. The preconditioner :math:`L`.
    generator : torch.Generator or None.
    jitter : float in [0, 1). Every iteration, each chain's step is ``step_size`` times a draw of
        :math:`\mathcal U(1 - \text{jitter}, 1 + \text{jitter})`; 0 keeps it fixed.

    Returns
    -------
    ``(samples (n_samples, C, D), acceptance_rate float)``.

    References
    ----------
    Neal, R. M. MCMC using Hamiltonian dynamics. Handbook of Markov Chain Monte Carlo, ch. 5 (2011).
    """
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    C, D = init.shape
    L = torch.eye(D, dtype=init.dtype) if scale_tril is None else scale_tril

    def potential(u):  # -log pi(L u) and its gradient in u
        lp, g = log_prob_and_grad(u @ L.T)
        return -lp, -(g @ L)

    u = torch.linalg.solve_triangular(L, init.T, upper=False).T
    U, grad_U = potential(u)
    draws, accepted = [], 0
    for it in range(n_warmup + n_samples):
        r = torch.randn(C, D, generator=generator, dtype=init.dtype)
        eps = step_size
        if jitter:  # (C, 1): one step size per chain, drawn afresh each iteration
            eps = step_size * (1 + jitter * (2 * torch.rand(C, 1, generator=generator, dtype=init.dtype) - 1))
        u_new, r_new, g_new = u, r - 0.5 * eps * grad_U, grad_U
        for step in range(n_leapfrog):
            u_new = u_new + eps * r_new
            U_new, g_new = potential(u_new)
            if step < n_leapfrog - 1:
                r_new = r_new - eps * g_new
        r_new = r_new - 0.5 * eps * g_new
        log_accept = U - U_new + 0.5 * ((r**2).sum(-1) - (r_new**2).sum(-1))
        log_accept = torch.nan_to_num(log_accept, nan=-float("inf"))
        accept = torch.rand(C, generator=generator, dtype=init.dtype).log() < log_accept
        u = torch.where(accept[:, None], u_new, u)
        U = torch.where(accept, U_new, U)
        grad_U = torch.where(accept[:, None], g_new, grad_U)
        if it >= n_warmup:
            draws.append(u @ L.T)
            accepted += int(accept.sum())
    return torch.stack(draws), accepted / (n_samples * C)


def split_rhat(samples):
    r"""Split-:math:`\hat R` per coordinate, for ``samples`` of shape ``(T, C, D)``.

    Each chain is cut in half, and the between-half variance is compared
    with the within-half one. Values near 1 (below about 1.01) say the
    chains agree with each other.

    References
    ----------
    Gelman, A. et al. Bayesian Data Analysis, 3rd ed., section 11.4 (2013).
    """
    T = samples.shape[0] // 2
    halves = torch.cat([samples[:T], samples[T : 2 * T]], dim=1)  # (T, 2C, D)
    chain_means = halves.mean(0)
    W = halves.var(0).mean(0)
    B = T * chain_means.var(0)
    var_plus = (T - 1) / T * W + B / T
    return (var_plus / W).sqrt()
