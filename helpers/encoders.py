r"""Amortized Gaussian encoders :math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2)`.

One network maps any data point to the parameters of its approximate
posterior; training it once replaces one optimisation per data point. This
is what "amortized" means (lesson 04). ``hidden=()`` gives a linear encoder,
which can represent the exact posterior of a linear-Gaussian model.

References
----------
Kingma, D. P. & Welling, M. Auto-encoding variational Bayes (2014).
Gershman, S. J. & Goodman, N. D. Amortized inference in probabilistic reasoning (2014).
"""

import torch
from torch import nn

__all__ = ["GaussianEncoder"]


class GaussianEncoder(nn.Module):
    r"""MLP ``D -> hidden... -> 2L`` with ``tanh`` activations; returns ``(mean, log_scale)``.

    Parameters
    ----------
    D, L : int. Data and latent dimensions.
    hidden : tuple of int. Widths of the hidden layers; ``()`` for a linear map.

    Forward: ``x (..., D)`` -> ``mean (..., L)``, ``log_scale (..., L)``.

    The output layer starts at zero, so before training every ``q(z | x)`` is
    ``N(0, I)``, the prior, and no input direction is favoured by chance.
    Inputs are standardised by fixed buffers ``shift`` and ``scale`` (set them
    from the training data with :meth:`standardise_inputs`): an offset shared by
    all inputs would otherwise couple the weights to the bias and slow training.
    """

    def __init__(self, D, L, hidden=(64, 64)):
        super().__init__()
        for name, value in (("D", D), ("L", L)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        widths = (D, *hidden)
        layers = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.Tanh()]
        layers.append(nn.Linear(widths[-1], 2 * L))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)
        self.L = L
        self.register_buffer("shift", torch.zeros(D))
        self.register_buffer("scale", torch.ones(D))

    def standardise_inputs(self, x_train):
        """Set ``shift`` and ``scale`` to the training data's mean and standard deviation per input; returns self."""
        self.shift.copy_(x_train.mean(0))
        self.scale.copy_(x_train.std(0).clamp_min(1e-6))
        return self

    def forward(self, x):
        out = self.net((x - self.shift) / self.scale)
        return out[..., : self.L], out[..., self.L :]
