"""Plotting helpers: ``ax=None`` in, ``ax`` out, and nothing read from notebook globals.

Conventions (see the course style): the target in black, approximations in
the accent colours of ``course.mplstyle``, perceptually uniform colormaps.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["plot_landscape", "plot_target_and_fits", "plot_density_contours"]


def _ax(ax):
    return plt.gca() if ax is None else ax


def _np(t):
    return np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float)


def plot_landscape(
    x, y, values, ax=None, levels=30, marker=None, marker_label=None, xlabel=None, ylabel=None, colorbar_label=None
):
    """Filled contours of ``values`` over a grid, optionally marking one point.

    Parameters
    ----------
    x, y : array-like of shape ``(nx,)`` and ``(ny,)``: the grid axes.
    values : array-like of shape ``(ny, nx)`` (``values[j, i]`` at ``(x[i], y[j])``).
    marker : ``(x0, y0)`` or None. Drawn as a white star with ``marker_label``.

    Returns
    -------
    The ``matplotlib`` axes.
    """
    ax = _ax(ax)
    values = _np(values)
    if values.shape != (len(y), len(x)):
        raise ValueError(f"values must have shape (len(y), len(x)) = {(len(y), len(x))}, got {values.shape}")
    cs = ax.contourf(_np(x), _np(y), values, levels=levels)
    ax.contour(_np(x), _np(y), values, levels=levels, colors="k", linewidths=0.3, alpha=0.4)
    if colorbar_label is not None:
        ax.figure.colorbar(cs, ax=ax, label=colorbar_label)
    if marker is not None:
        ax.plot(
            *(float(v) for v in marker),
            marker="*",
            color="white",
            markeredgecolor="k",
            markersize=14,
            linestyle="none",
            label=marker_label,
        )
        if marker_label:
            ax.legend(loc="upper right", frameon=True)
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")
    ax.grid(False)
    return ax


def plot_target_and_fits(z, target, fits, ax=None, target_label="target"):
    """A 1-D target density in black with fitted densities in accent colours.

    Parameters
    ----------
    z : array-like ``(G,)``: the evaluation grid.
    target : array-like ``(G,)``: the target density on the grid.
    fits : dict ``label -> (G,) density``: one line each, lightly filled.

    Returns
    -------
    The ``matplotlib`` axes.
    """
    ax = _ax(ax)
    z = _np(z)
    ax.plot(z, _np(target), color="k", lw=2, label=target_label)
    for label, density in fits.items():
        (line,) = ax.plot(z, _np(density), lw=2, label=label)
        ax.fill_between(z, _np(density), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("$z$")
    ax.set_ylabel("density")
    ax.legend()
    return ax


def plot_density_contours(
    log_prob,
    ax=None,
    xlim=(-5, 5),
    ylim=(-5, 5),
    n=121,
    levels=(0.05, 0.25, 0.5, 0.75),
    filled=False,
    color="k",
    label=None,
    **kwargs,
):
    """Contours of a 2-D density at fractions ``levels`` of its largest value on an ``n`` x ``n`` grid.

    Parameters
    ----------
    log_prob : callable ``(m, 2) -> (m,)`` tensor, a log density (normalised or not).
    filled : bool. Filled grey contours (for a target) instead of lines in ``color``.
    label : str or None. A legend entry for the lines.
    kwargs : passed to ``contour`` (``linestyles``, ``linewidths``, ...).

    Returns
    -------
    The ``matplotlib`` axes.
    """
    ax = _ax(ax)
    x, y = torch.linspace(*xlim, n), torch.linspace(*ylim, n)
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), -1).reshape(-1, 2)  # row j holds y[j]
    with torch.no_grad():
        log_values = torch.as_tensor(log_prob(grid.to(torch.get_default_dtype())))
    density = _np((log_values - log_values.max()).exp().reshape(n, n))
    levels = sorted(levels)
    if filled:
        ax.contourf(_np(x), _np(y), density, levels=[*levels, 1.0], cmap="Greys", alpha=0.6)
    else:
        ax.contour(_np(x), _np(y), density, levels=levels, colors=color, **kwargs)
        if label is not None:
            ax.plot([], [], color=color, label=label, linestyle=kwargs.get("linestyles", "-"))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    return ax
