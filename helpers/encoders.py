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

    Forward: ``x (..., D)`` -> ``mean (..., L)``, ``log_scale (..., L)``; it is
    ``heads(features(x))``, the trunk :math:`h_\phi(x)` and then the output layer, and a
    model that builds on the encoder (:class:`helpers.semi_implicit_vae.SemiImplicitEncoder`)
    uses the two parts through these methods.

    The output layer starts at zero, so before training every ``q(z | x)`` is
    ``N(0, I)``, the prior, and no input direction is favoured by chance.
    Inputs enter the network as ``(x - shift) / scale``, with fixed buffers
    ``shift`` and ``scale`` (zero and one to begin with): set them from the
    training data with :meth:`standardise_inputs`, or to known values with
    :meth:`set_input_scaling`. An offset shared by all inputs would otherwise
    couple the weights to the bias and slow training.
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

    @torch.no_grad()
    def set_input_scaling(self, shift=0.0, scale=1.0):
        """Inputs enter the network as ``(x - shift) / scale``; numbers or ``(D,)`` tensors. Returns self.

        For a fixed, data-free scaling, e.g. ``scale=16`` maps pixel counts 0..16 to [0, 1].
        """
        self.shift.copy_(torch.as_tensor(shift))
        self.scale.copy_(torch.as_tensor(scale))
        return self

    def standardise_inputs(self, x_train):
        """Set ``shift`` and ``scale`` to the training data's mean and standard deviation per input; returns self."""
        return self.set_input_scaling(x_train.mean(0), x_train.std(0).clamp_min(1e-6))

    def features(self, x):
        r"""The trunk's hidden representation :math:`h_\phi(x)` of the standardised inputs, ``(..., H)``.

        ``H`` is the last hidden width (``D`` itself when ``hidden=()``). :meth:`heads` maps it to the output.
        """
        return self.net[:-1]((x - self.shift) / self.scale)

    def heads(self, h):
        """The output layer on features ``h (..., H)``: ``mean (..., L)``, ``log_scale (..., L)``."""
        out = self.net[-1](h)
        return out[..., : self.L], out[..., self.L :]

    def forward(self, x):
        return self.heads(self.features(x))
