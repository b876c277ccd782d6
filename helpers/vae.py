r"""A variational autoencoder for images of counts: Gaussian encoder, Binomial decoder.

.. math::
    z \sim \mathcal N(0, I_L), \qquad
    x_d \mid z \sim \mathrm{Binomial}\big(n, \mathrm{sigmoid}(f_\theta(z)_d)\big), \quad d = 1..D,

with :math:`n = 16` for the UCI digits (each pixel counts 16 sub-pixels), and
:math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2)` from
:class:`helpers.encoders.GaussianEncoder`. The ELBO uses the closed-form KL to
the prior (Kingma & Welling 2014, appendix B):

.. math::
    \mathrm{ELBO}(x) = \mathbb E_{q_\phi(z\mid x)}[\log p_\theta(x\mid z)]
    - \tfrac12\sum_{l=1}^L \big(\mu_l^2 + \sigma_l^2 - 1 - \log\sigma_l^2\big).

These are the reference answers of lesson 05's exercises.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import GaussianEncoder
from .gaussian import LOG_2PI

__all__ = [
    "VAE",
    "reparameterize",
    "kl_standard_normal",
    "training_step",
    "log_mean_exp",
    "binomial_log_prob",
    "aggregate_log_density",
    "mutual_information",
]


def reparameterize(mean, log_scale, eps):
    r""":math:`z = \mu + e^{\log\sigma}\odot\varepsilon`; broadcasts ``(B, L)`` against ``eps (S, B, L)``."""
    return mean + log_scale.exp() * eps


def kl_standard_normal(mean, log_scale):
    r""":math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2)\,\|\,\mathcal N(0, I))`, summed over the last axis.

    ``mean, log_scale``: ``(..., L)``; returns ``(...)``.
    """
    return 0.5 * (mean**2 + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(-1)


def training_step(elbo, model, optimizer, x, eps):
    r"""One gradient step on :math:`-\frac1B\sum_i \mathrm{ELBO}(x_i)`, the loss of a mini-batch ``x`` (B, D).

    ``elbo(x, model, eps)`` returns the per-image ELBOs ``(B,)`` for the draws ``eps`` (S, B, L) (exercise 5.3's
    ``vae_elbo``). Zeroes the gradients, backpropagates, and steps ``optimizer``; returns the batch's ELBOs, detached,
    at the weights before the step (for the training curve). The mean, not the sum, keeps the step's size
    independent of the batch size. Reference answer of exercise 5.4 (lesson 05).
    """
    values = elbo(x, model, eps)  # (B,)
    loss = -values.mean()  # optimisers minimise; we maximise the ELBO
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return values.detach()


def log_mean_exp(log_w, dim=0):
    r""":math:`\log\frac1K\sum_k e^{\log w_k}` along ``dim``, with ``logsumexp``: no overflow, no underflow."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def aggregate_log_density(z, mean, log_scale, chunk=512):
    r"""Log density of the aggregate posterior :math:`\bar q_\phi(z) = \frac1N\sum_i q_\phi(z\mid x_i)`, a mixture
    of :math:`N` diagonal Gaussians, at the points ``z``:

    .. math::
        \log\bar q_\phi(z) = \operatorname{logsumexp}_i
        \sum_{l=1}^L \log\mathcal N(z_l;\, \mu_{il},\, \sigma_{il}^2) - \log N.

    ``z (M, L)``; ``mean``, ``log_scale (N, L)``, the encoder's outputs for the ``N`` images. Returns ``(M,)``.
    Averages the densities in log space (each is far below float32's smallest number at the lesson's
    widths), ``chunk`` points at a time so that memory stays at ``chunk x N x L``.

    References
    ----------
    Hoffman, M. D. & Johnson, M. J. ELBO surgery. NeurIPS workshop on approximate Bayesian inference (2016).
    """
    scale = log_scale.exp()
    parts = []
    for start in range(0, len(z), chunk):
        zc = z[start : start + chunk, None, :]  # (m, 1, L) against (N, L)
        log_components = (-0.5 * ((zc - mean) / scale) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
        parts.append(torch.logsumexp(log_components, dim=1) - math.log(mean.shape[0]))
    return torch.cat(parts)


def mutual_information(mean, log_scale, eps):
    r"""Monte Carlo estimate of the mutual information between the image index :math:`i` and the code :math:`z`
    under the encoder's joint :math:`q(i, z) = \frac1N q_\phi(z\mid x_i)`:

    .. math::
        I_q(i; z) = \frac1N\sum_{i=1}^N \mathbb E_{q_\phi(z\mid x_i)}\big[\log q_\phi(z\mid x_i)
        - \log\bar q_\phi(z)\big]
        \approx \frac1{SN}\sum_{s=1}^S\sum_{i=1}^N \big[\log q_\phi(z_{si}\mid x_i)
        - \log\bar q_\phi(z_{si})\big],
        \qquad z_{si} = \mu_i + \sigma_i\odot\varepsilon_{si},

    with :math:`\log\bar q_\phi` the log-sum-exp over all :math:`N` encoders, the draw's own included
    (:func:`aggregate_log_density`): then each term is at most :math:`\log N`, and so is the estimate, and the
    only randomness is the draws' (the mixture is exact), so the estimate is unbiased.

    ``mean``, ``log_scale``: ``(N, L)``, the encoder's outputs for the ``N`` images; ``eps``: ``(S, N, L)``, ``S``
    standard normal draws per image. Returns a scalar. Reference answer of exercise 5.9 (lesson 05).

    References
    ----------
    Hoffman, M. D. & Johnson, M. J. ELBO surgery. NeurIPS workshop on approximate Bayesian inference (2016).
    """
    S, N, L = eps.shape
    z = reparameterize(mean, log_scale, eps)  # (S, N, L): z[s, i] is a draw of q(z | x_i)
    log_q = (-0.5 * eps**2 - log_scale - 0.5 * LOG_2PI).sum(-1)  # (S, N): each draw under its own encoder
    log_q_bar = aggregate_log_density(z.reshape(S * N, L), mean, log_scale).reshape(S, N)
    return (log_q - log_q_bar).mean()


def binomial_log_prob(x, n, logits):
    r"""Log-probability of counts ``x`` under :math:`\mathrm{Binomial}(n, \mathrm{sigmoid}(\ell))`, elementwise.

    .. math::
        \log p(x\mid \ell) = \log\binom{n}{x} + x\log\sigma(\ell) + (n - x)\log\big(1 - \sigma(\ell)\big)
        = \log\binom{n}{x} + x\,\ell - n\,\mathrm{softplus}(\ell),

    since :math:`\log\sigma(\ell) = \ell - \mathrm{softplus}(\ell)` and
    :math:`\log(1 - \sigma(\ell)) = -\mathrm{softplus}(\ell)`. Written in the logits, it is stable for any
    :math:`\ell` and costs one ``softplus``; it equals ``torch.distributions.Binomial(n, logits=logits).log_prob(x)``
    (the tests check this; beyond :math:`\ell = 20` ``F.softplus`` returns :math:`\ell` itself, which leaves
    out at most :math:`n\log(1 + e^{-20}) < 4\cdot 10^{-8}` nats) in about a third of the time, forward and
    backward (0.28 ms against 0.92 ms for a batch of 128 digits on one CPU thread), which matters in a training
    loop that calls it every step.

    ``x``: counts in ``{0, ..., n}``, broadcastable against ``logits (..., D)``. Raises ``ValueError`` otherwise
    (for example, pixels already divided by ``n``).
    """
    counts = x.long()
    if not torch.equal(counts.clamp(0, n).to(x.dtype), x):  # fractions, negatives, counts above n, NaN all fail
        raise ValueError(
            f"x must hold whole counts between 0 and {n} (the Binomial's number of trials); got "
            f"values from {x.min().item():g} to {x.max().item():g}. Pass the raw counts, not pixels "
            "scaled to [0, 1]."
        )
    k = torch.arange(n + 1, dtype=logits.dtype, device=logits.device)
    log_choose = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)  # log C(n, k) for k = 0..n
    return log_choose[counts] + x * logits - n * F.softplus(logits)  # a table lookup: x is data, no gradient


class VAE(nn.Module):
    """Encoder ``D -> hidden -> 2L`` and decoder ``L -> hidden -> D`` (Binomial logits), ``tanh`` / ``ReLU`` MLPs.

    Parameters
    ----------
    D, L : int. Data and latent dimensions.
    hidden : tuple of int. Hidden widths of both networks.
    n_trials : int. The Binomial's :math:`n` (16 for the digits).
    """

    def __init__(self, D=64, L=8, hidden=(256, 256), n_trials=16):
        super().__init__()
        self.encoder = GaussianEncoder(D, L, hidden)
        self.encoder.set_input_scaling(scale=float(n_trials))  # counts 0..n -> [0, 1]: a fixed, data-free scaling
        widths = (L, *hidden)
        layers = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], D))
        self.decoder = nn.Sequential(*layers)
        self.D, self.L, self.n_trials = D, L, n_trials

    def log_likelihood(self, x, z):
        r""":math:`\log p_\theta(x\mid z)`: ``x (B, D)``, ``z (..., B, L)`` -> ``(..., B)``."""
        return binomial_log_prob(x, self.n_trials, self.decoder(z)).sum(-1)

    def log_joint(self, x, z):
        r""":math:`\log p_\theta(x, z)`, ``(..., B)``."""
        log_prior = -0.5 * (z**2).sum(-1) - 0.5 * self.L * LOG_2PI
        return self.log_likelihood(x, z) + log_prior

    def elbo(self, x, S=1):
        """Per-data-point ELBO with ``S`` reparameterised draws and the closed-form KL; ``(B,)``."""
        mean, log_scale = self.encoder(x)
        eps = torch.randn(S, *mean.shape, dtype=mean.dtype, device=mean.device)
        z = reparameterize(mean, log_scale, eps)
        return self.log_likelihood(x, z).mean(0) - kl_standard_normal(mean, log_scale)

    def log_weights(self, x, eps):
        r"""Importance log-weights with the encoder as proposal: :math:`\log p_\theta(x, z_k) - \log q_\phi(z_k\mid x)`.

        :math:`z_k = \mu_\phi(x) + \sigma_\phi(x)\odot\varepsilon_k` for the given ``eps`` of shape ``(K, B, L)``;
        returns ``(K, B)``. Reference answer of exercise 5.6 (lesson 05).
        """
        mean, log_scale = self.encoder(x)
        z = mean + log_scale.exp() * eps
        log_q = (-0.5 * eps**2 - log_scale - 0.5 * LOG_2PI).sum(-1)  # log N(z; mean, scale^2), in terms of eps
        return self.log_joint(x, z) - log_q

    def iwae_bound(self, x, K, chunk=250):
        r"""Importance-weighted bound :math:`\mathcal L_K` per data point, with the encoder as proposal; ``(B,)``.

        The ``K`` log-weights (:meth:`log_weights`) are computed in chunks (memory) and averaged in log space.
        """
        mean, _ = self.encoder(x)
        parts = []
        for start in range(0, K, chunk):
            eps = torch.randn(min(chunk, K - start), *mean.shape, dtype=mean.dtype, device=mean.device)
            parts.append(self.log_weights(x, eps))
        return log_mean_exp(torch.cat(parts), dim=0)

    @torch.no_grad()
    def sample(self, n, generator=None):
        """``n`` images from the model: ``z`` from the prior, then the decoder's mean ``n_trials * p``; ``(n, D)``."""
        p = next(self.parameters())
        z = torch.randn(n, self.L, generator=generator, dtype=p.dtype, device=p.device)
        return self.n_trials * torch.sigmoid(self.decoder(z))
