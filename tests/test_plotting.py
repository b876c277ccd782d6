"""Plotting helpers draw on the axes they are given and return them; contour levels follow the density."""

import matplotlib

matplotlib.use("Agg")  # tests only; notebooks keep the inline backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers.plotting import plot_density_contours, plot_landscape, plot_target_and_fits  # noqa: E402


def standard_normal(z):
    return -0.5 * (z**2).sum(-1)


def test_density_contours_are_circles_of_the_right_radius():
    fig, ax = plt.subplots()
    out = plot_density_contours(standard_normal, ax=ax, xlim=(-3, 3), ylim=(-3, 3), n=201, levels=(0.5,), label="N")
    assert out is ax and ax.get_xlim() == (-3, 3)
    # the level 1/2 of the maximum of exp(-r^2 / 2) is the circle r = sqrt(2 log 2)
    vertices = np.concatenate([path.vertices for c in ax.collections for path in c.get_paths()])
    radius = np.sqrt((vertices**2).sum(1))
    np.testing.assert_allclose(radius, np.sqrt(2 * np.log(2)), atol=0.02)
    assert [t.get_text() for t in ax.legend().get_texts()] == ["N"]
    plt.close(fig)


def test_density_contours_filled_and_on_the_current_axes():
    fig, ax = plt.subplots()
    assert plot_density_contours(lambda z: torch.zeros(len(z)) + standard_normal(z), filled=True) is ax
    plt.close(fig)


def test_landscape_and_fits_return_their_axes():
    fig, (a, b) = plt.subplots(1, 2)
    x, y = np.linspace(0, 1, 4), np.linspace(0, 1, 3)
    assert plot_landscape(x, y, np.zeros((3, 4)) + x, ax=a, marker=(0.5, 0.5), marker_label="max") is a
    z = np.linspace(-1, 1, 5)
    assert plot_target_and_fits(z, np.exp(-(z**2)), {"fit": np.exp(-(z**2) / 2)}, ax=b) is b
    plt.close(fig)
