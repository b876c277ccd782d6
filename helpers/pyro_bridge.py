r"""The course's models and variational families written in Pyro, for cross-checks, benchmarks and lesson 09.

Each function is a Pyro *model* or *guide*: a program whose ``pyro.sample`` statements Pyro's inference
code traces. They describe exactly the distributions of the course's own code:

- :func:`normal_normal_model` / :func:`normal_guide`: lesson 01's Normal-Normal model
  (:class:`helpers.conjugate.NormalNormal`) and a Gaussian :math:`q(z)`;
- :func:`logistic_regression_model` with :func:`mean_field_guide` or :func:`full_rank_guide`: lesson 03's
  Bayesian logistic regression (:class:`helpers.logistic_regression.BayesianLogisticRegression`) and the
  families of :mod:`helpers.families`;
- :func:`vae_model` / :func:`vae_guide`: lesson 05's VAE (:class:`helpers.vae.VAE`), with the networks
  registered by ``pyro.module``;
- :func:`train_svi`: the training loop, ``SVI.step`` once per batch, from a fresh parameter store.

A guide takes the same arguments as its model (Pyro passes both the same ones). It reads its variational
parameters from Pyro's parameter store with ``pyro.param(name, initial_value)``: the initial value is used
only when the store has no such parameter yet, so set ``pyro.param(name, value)`` beforehand to start (or
evaluate) the guide elsewhere. Pyro's optimisers then train them.
``Trace_ELBO(vectorize_particles=True, max_plate_nesting=1)`` works with every model here: the models are
written to broadcast over a leading particle dimension.

References
----------
Bingham, E. et al. Pyro: deep universal probabilistic programming. JMLR 20 (2019).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI

__all__ = [
    "normal_normal_model",
    "normal_guide",
    "logistic_regression_model",
    "mean_field_guide",
    "full_rank_guide",
    "vae_model",
    "vae_guide",
    "train_svi",
]


def normal_normal_model(x, prior_mean=0.0, prior_std=1.0, noise_std=1.0):
    r""":math:`z\sim\mathcal N(m_0, s_0^2)`, :math:`x_i\mid z\sim\mathcal N(z, \sigma^2)`; ``x`` of shape ``(N,)``."""
    z = pyro.sample("z", dist.Normal(torch.as_tensor(prior_mean, dtype=x.dtype), prior_std))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(z, noise_std), obs=x)  # z: () or, vectorized over particles, (P, 1)


def normal_guide(x, prior_mean=0.0, prior_std=1.0, noise_std=1.0):
    r""":math:`q(z) = \mathcal N(m, e^{2\log s})` with parameters ``"q_mean"`` and ``"q_log_scale"`` (start: 0, 0)."""
    m = pyro.param("q_mean", x.new_zeros(()))
    log_s = pyro.param("q_log_scale", x.new_zeros(()))
    pyro.sample("z", dist.Normal(m, log_s.exp()))


def logistic_regression_model(X, y, prior_std=1.0):
    r""":math:`w\sim\mathcal N(0, \sigma_0^2 I_D)`, :math:`y_n\sim\mathrm{Bernoulli}(\mathrm{sigmoid}(x_n^\top w))`.

    ``X (N, D)``, ``y (N,)``. The logits are ``(w * X).sum(-1)``, which broadcasts a vectorized
    particle dimension: ``w`` of shape ``(P, 1, D)`` gives logits ``(P, N)``.
    """
    D = X.shape[-1]
    w = pyro.sample("w", dist.Normal(X.new_zeros(D), prior_std).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(w * X).sum(-1)), obs=y)


def mean_field_guide(X, y, prior_std=1.0):
    r"""Mean field :math:`q(w) = \prod_d\mathcal N(m_d, s_d^2)`; parameters ``"mean"`` (0) and ``"log_scale"`` (-2)."""
    D = X.shape[-1]
    m = pyro.param("mean", X.new_zeros(D))
    log_s = pyro.param("log_scale", X.new_full((D,), -2.0))
    pyro.sample("w", dist.Normal(m, log_s.exp()).to_event(1))


def full_rank_guide(X, y, prior_std=1.0):
    r"""Full rank :math:`q(w) = \mathcal N(m, CC^\top)`; parameters ``"mean"`` (0) and ``"scale_tril"`` (:math:`0.1 I`).

    The Cholesky factor is constrained by ``pyro.param(..., constraint=lower_cholesky)``; the course's
    :class:`helpers.families.FullRankGaussian` uses a log-diagonal and a free lower triangle instead.
    """
    D = X.shape[-1]
    m = pyro.param("mean", X.new_zeros(D))
    C = pyro.param("scale_tril", 0.1 * torch.eye(D, dtype=X.dtype), constraint=dist.constraints.lower_cholesky)
    pyro.sample("w", dist.MultivariateNormal(m, scale_tril=C))


def vae_model(vae, x):
    r""":math:`z\sim\mathcal N(0, I_L)`, :math:`x_d\mid z\sim\mathrm{Binomial}(n, \mathrm{sigmoid}(f_\theta(z)_d))`.

    ``vae``: a :class:`helpers.vae.VAE`, whose decoder is registered with ``pyro.module``; ``x (B, D)``.
    """
    pyro.module("decoder", vae.decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], vae.L), 1.0).to_event(1))
        pyro.sample("x", dist.Binomial(vae.n_trials, logits=vae.decoder(z)).to_event(1), obs=x)


def vae_guide(vae, x):
    r""":math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2)` from the VAE's encoder."""
    pyro.module("encoder", vae.encoder)
    with pyro.plate("data", x.shape[0]):
        mean, log_scale = vae.encoder(x)
        pyro.sample("z", dist.Normal(mean, log_scale.exp()).to_event(1))


def train_svi(model, guide, optimizer, loss, data):
    r"""Fit ``guide`` to ``model`` by stochastic variational inference, from an empty parameter store.

    Step :math:`t` estimates the loss :math:`\ell_t = -\widehat{\mathrm{ELBO}}(\phi_{t-1})` on the arguments
    ``data[t]`` and its gradient, and updates every parameter in the store with ``optimizer``:
    :math:`\phi_t = \phi_{t-1} - \mathrm{step}(\nabla_\phi\ell_t)`.

    Parameters
    ----------
    model, guide : Pyro programs taking the same arguments.
    optimizer : a fresh ``pyro.optim`` optimiser (it keeps its state per parameter).
    loss : an ELBO estimator, such as ``Trace_ELBO(num_particles=S, vectorize_particles=True)``.
    data : a sequence of argument tuples, one per step (the same ``(X, y)`` for full-batch training, one
        batch per step for the VAE).

    Returns
    -------
    list of float
        The :math:`T` losses :math:`\ell_t`, each estimated *before* its step's update; the trained
        parameters stay in Pyro's parameter store.

    References
    ----------
    Hoffman, M. D., Blei, D. M., Wang, C. & Paisley, J. Stochastic variational inference. JMLR 14 (2013).
    """
    pyro.clear_param_store()
    svi = SVI(model, guide, optimizer, loss)
    return [svi.step(*args) for args in data]
