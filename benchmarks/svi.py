r"""Course code against Pyro, side by side on the same data, model, optimiser and number of steps.

Two rows, each timed in one process with the same thread count:

- **Bayesian logistic regression, mean field** (lesson 03): Adam at a constant learning rate on the
  reparameterized ELBO with ``S`` draws per step. Course: the loop of :func:`helpers.training.maximize` on
  :func:`helpers.estimators.elbo`, without its learning-rate schedule (Pyro's Adam has none). Pyro: ``SVI`` with
  ``Trace_ELBO(num_particles=S, vectorize_particles=True)`` and the hand-written guide of
  :mod:`helpers.pyro_bridge`. Both start at mean 0, log-scale -2.
- **Digits VAE** (lesson 05): lesson 05's training, 150 epochs of mini-batches of 128, closed-form KL, and the
  same fused Adam on both sides (``torch.optim.Adam(..., fused=True)``; Pyro passes the option through
  ``pyro.optim.Adam``). Course: lesson 05's loop on :meth:`helpers.vae.VAE.elbo`. Pyro: ``SVI`` with
  ``TraceMeanField_ELBO`` (the analytic KL) and ``pyro.module``. Both start from the same weights and see the
  same batches.

Time per step is the average over all steps, after both implementations have run a warm-up of their own
(the first few hundred steps in a process are markedly slower, whoever runs them). The two are timed in
alternating chunks of steps, each with its own random-number stream, so that a change in the machine's speed
during the run (other work on a shared machine) falls on both alike: timed one after the other, the ratio of
the logistic-regression row ranged from 0.30 to 0.47 between runs. The final ELBO of both
is measured by the same course estimator (many draws), so "equal final ELBO" compares like with like.
The two trainings draw the same random numbers, but float rounding makes them drift apart within a few
dozen steps, after which they are two runs of the same training: their final ELBOs differ by about as much
as two seeds of one implementation do (``ELBO_TOLERANCE``).
"""

import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from helpers import pyro_bridge
from helpers.datasets import load_breast_cancer, load_digits
from helpers.estimators import elbo
from helpers.families import MeanFieldGaussian
from helpers.logistic_regression import BayesianLogisticRegression
from helpers.training import maximize
from helpers.vae import VAE

__all__ = ["logistic_regression_row", "vae_row", "matrix_products", "ELBO_TOLERANCE"]

# How far apart "equal" final ELBOs may be, per row. Logistic regression: both follow the same path to the
# same optimum, and the final estimate's Monte Carlo error is about 0.01. VAE: the training's own spread.
# This row with seeds 0, 1, 2 ended at test ELBOs -97.83, -98.49, -96.16 (course) and -97.90, -97.00, -96.95
# (Pyro): course minus Pyro +0.07, -1.49, +0.79 at equal seed, while the course's own seeds spread over 2.3.
ELBO_TOLERANCE = {"logistic regression": 0.1, "digits VAE": 2.0}


def _alternate(sides, steps, chunk=100):
    """Seconds per step of each ``sides[name](i)``, ``i = 0..steps-1``, timed in alternating chunks.

    Each side keeps its own state of torch's (CPU) random-number generator, the one it would have had running
    alone from the current state, so the alternation changes the timing and nothing else. Returns a ``dict``
    with the same keys as ``sides``.
    """
    states = {name: torch.get_rng_state() for name in sides}
    seconds = dict.fromkeys(sides, 0.0)
    for first in range(0, steps, chunk):
        for name, step in sides.items():
            torch.set_rng_state(states[name])
            start = time.perf_counter()
            for i in range(first, min(first + chunk, steps)):
                step(i)
            seconds[name] += time.perf_counter() - start
            states[name] = torch.get_rng_state()
    return {name: total / steps for name, total in seconds.items()}


def _pyro_svi(X, y, S, lr):
    return SVI(
        pyro_bridge.logistic_regression_model,
        pyro_bridge.mean_field_guide,
        pyro.optim.Adam({"lr": lr}),
        Trace_ELBO(num_particles=S, vectorize_particles=True, max_plate_nesting=1),
    )


def logistic_regression_row(steps=2000, S=16, lr=0.02, seed=0, warmup=500):
    """``dict`` with seconds per step and final ELBO for the course and for Pyro."""
    data = load_breast_cancer(dtype=torch.float32)
    X, y = data.X_train, data.y_train
    blr = BayesianLogisticRegression(X, y, prior_std=1.0)
    D = X.shape[1]

    q = MeanFieldGaussian(D, log_scale=-2.0)  # warm-up, thrown away
    maximize(lambda: elbo(blr.log_joint, q.distribution(), S), q.parameters(), warmup, lr, final_lr_factor=1.0)
    pyro.clear_param_store()
    svi = _pyro_svi(X, y, S, lr)
    for _ in range(warmup):
        svi.step(X, y)

    q = MeanFieldGaussian(D, log_scale=-2.0)
    optimizer = torch.optim.Adam(q.parameters(), lr=lr)

    def course_step(_):  # maximize's step, at a constant rate like Pyro's Adam
        optimizer.zero_grad()
        value = elbo(blr.log_joint, q.distribution(), S)
        (-value).backward()
        optimizer.step()
        return value.item()

    pyro.clear_param_store()
    svi = _pyro_svi(X, y, S, lr)
    torch.manual_seed(seed)
    seconds = _alternate({"course": course_step, "pyro": lambda _: svi.step(X, y)}, steps)
    q_pyro = MeanFieldGaussian(D)
    with torch.no_grad():
        q_pyro.mean.copy_(pyro.param("mean"))
        q_pyro.log_scale.copy_(pyro.param("log_scale"))
        torch.manual_seed(seed + 1)
        course_elbo = elbo(blr.log_joint, q.distribution(), 20000).item()
        torch.manual_seed(seed + 1)
        pyro_elbo = elbo(blr.log_joint, q_pyro.distribution(), 20000).item()
    pyro.clear_param_store()
    return {
        "name": f"logistic regression, mean field ({steps} steps, S = {S})",
        "kind": "logistic regression",
        "course_seconds": seconds["course"],
        "pyro_seconds": seconds["pyro"],
        "course_elbo": course_elbo,
        "pyro_elbo": pyro_elbo,
    }


def matrix_products(vae, batches):
    """A step function ``step(i)`` doing only ``vae``'s matrix products for ``batches[i]``, forward and backward.

    The same products as a training step: the encoder's on ``x (B, D)``, the decoder's on ``z (B, L)``, and in
    the backward pass the gradient of every weight and of ``z`` (the reparameterized draw passes its gradient on
    to the encoder), but no biases, activations, sampling, likelihood or optimiser. It is arithmetic that the
    course and Pyro must both do, so a floor under either one's time per step.
    """
    weights = [
        [layer.weight.detach().clone().requires_grad_(True) for layer in net if isinstance(layer, nn.Linear)]
        for net in (vae.encoder.net, vae.decoder)
    ]

    def step(i):
        z = torch.randn(len(batches[i]), vae.L, requires_grad=True)
        total = 0.0
        for h, layers in zip((batches[i], z), weights, strict=True):
            for weight in layers:
                h = h @ weight.T
            total = total + h.sum()
        torch.autograd.grad(total, [w for layers in weights for w in layers] + [z])

    return step


def vae_row(epochs=150, batch_size=128, lr=1e-3, seed=0, warmup=30):
    """``dict`` with seconds per step and final test ELBO (per image) for the course and for Pyro."""
    digits = load_digits(dtype=torch.float32)
    x_train, x_test = digits.x_train, digits.x_test
    torch.manual_seed(seed)
    course_vae = VAE(D=64, L=8, hidden=(256, 256))
    pyro_vae = VAE(D=64, L=8, hidden=(256, 256))
    pyro_vae.load_state_dict(course_vae.state_dict())  # the same starting weights
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(x_train), generator=generator) for _ in range(epochs)]  # the same batches
    batches = [x_train[order[i : i + batch_size]] for order in orders for i in range(0, len(x_train), batch_size)]

    scratch = VAE(D=64, L=8, hidden=(256, 256))  # warm-up, thrown away
    scratch_optimizer = torch.optim.Adam(scratch.parameters(), lr=lr, fused=True)
    pyro.clear_param_store()
    scratch_svi = SVI(
        lambda x: pyro_bridge.vae_model(scratch, x),
        lambda x: pyro_bridge.vae_guide(scratch, x),
        pyro.optim.Adam({"lr": lr, "fused": True}),
        TraceMeanField_ELBO(),
    )
    floor_step = matrix_products(scratch, batches)
    for i, batch in enumerate(batches[:warmup]):
        loss = -scratch.elbo(batch).mean()
        scratch_optimizer.zero_grad()
        loss.backward()
        scratch_optimizer.step()
        scratch_svi.step(batch)
        floor_step(i)

    optimizer = torch.optim.Adam(course_vae.parameters(), lr=lr, fused=True)

    def course_step(i):  # lesson 05's loop
        loss = -course_vae.elbo(batches[i]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    pyro.clear_param_store()
    svi = SVI(
        lambda x: pyro_bridge.vae_model(pyro_vae, x),
        lambda x: pyro_bridge.vae_guide(pyro_vae, x),
        pyro.optim.Adam({"lr": lr, "fused": True}),
        TraceMeanField_ELBO(),
    )
    torch.manual_seed(seed)
    seconds = _alternate(
        {"course": course_step, "pyro": lambda i: svi.step(batches[i]), "floor": floor_step}, len(batches)
    )

    with torch.no_grad():
        torch.manual_seed(seed + 1)
        course_elbo = course_vae.elbo(x_test, S=100).mean().item()
        torch.manual_seed(seed + 1)
        pyro_elbo = pyro_vae.elbo(x_test, S=100).mean().item()
    return {
        "name": f"digits VAE ({epochs} epochs, {len(batches)} steps)",
        "kind": "digits VAE",
        "course_seconds": seconds["course"],
        "pyro_seconds": seconds["pyro"],
        "course_elbo": course_elbo,
        "pyro_elbo": pyro_elbo,
        "floor_seconds": seconds["floor"],
    }
