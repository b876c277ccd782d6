r"""One optimisation loop for the lessons that are not about the loop.

Lesson 03 writes its training loop out; from lesson 06 on, a lesson fits many
variational families to many targets, and the loop is the same each time:
Adam on ``loss = -bound``, with a learning rate that decays geometrically.
"""

import torch
from tqdm.auto import trange

__all__ = ["maximize"]


def maximize(bound, parameters, steps, lr, final_lr_factor=0.05, desc=None):
    r"""Maximise ``bound()`` by Adam on ``loss = -bound()``; return the trace of its values.

    The learning rate decays geometrically from ``lr`` to ``lr * final_lr_factor``:
    :math:`\eta_t = \eta_0\,f^{t/T}`. A progress bar is shown when ``desc`` is given.

    Parameters
    ----------
    bound : callable with no arguments returning a 0-d tensor (a fresh Monte Carlo estimate each call).
    parameters : iterable of tensors to optimise.
    steps : int, positive. lr : float, positive.

    Returns
    -------
    list of ``steps`` floats: the estimate at each step, before that step's update.
    """
    if not (isinstance(steps, int) and steps > 0):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    parameters = list(parameters)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: final_lr_factor ** (t / steps))
    trace = []
    for _ in trange(steps, desc=desc, leave=False, disable=desc is None):
        optimizer.zero_grad()
        value = bound()
        if value.dim() != 0:
            raise ValueError(f"bound() must return a 0-d tensor, got shape {tuple(value.shape)}")
        loss = -value  # optimisers minimise; we maximise the bound
        loss.backward()
        optimizer.step()
        schedule.step()
        trace.append(value.item())
    return trace
