"""KL by quadrature against the closed form for Gaussians (torch.distributions), in both directions."""

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from helpers.quadrature import grid_2d, kl_on_grid

F64 = torch.float64


def test_grid_layout_is_image_like():
    points, (xs, ys) = grid_2d(((0.0, 2.0), (-1.0, 1.0)), 4, dtype=F64)
    assert points.shape == (16, 2)
    image = points.reshape(4, 4, 2)
    assert torch.equal(image[1, 2], torch.stack([xs[2], ys[1]]))
    torch.testing.assert_close(xs, torch.tensor([0.25, 0.75, 1.25, 1.75], dtype=F64))


def test_kl_on_grid_matches_the_gaussian_closed_form_both_ways():
    p = MultivariateNormal(torch.tensor([0.5, -0.3], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=F64))
    q = MultivariateNormal(torch.tensor([-0.2, 0.4], dtype=F64), torch.tensor([[0.7, -0.2], [-0.2, 1.2]], dtype=F64))
    grid, _ = grid_2d(((-9.0, 9.0), (-10.0, 10.0)), 400, dtype=F64)
    lq, lp = q.log_prob(grid), p.log_prob(grid)
    assert kl_on_grid(lq, lp).item() == pytest.approx(kl_divergence(q, p).item(), abs=1e-5)
    assert kl_on_grid(lp, lq).item() == pytest.approx(kl_divergence(p, q).item(), abs=1e-5)
    assert kl_on_grid(lq + 7.0, lp - 3.0).item() == pytest.approx(kl_divergence(q, p).item(), abs=1e-5)  # unnormalised
    assert kl_on_grid(lq, lq).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_on_grid_survives_float32_tails():
    grid, _ = grid_2d(((-30.0, 30.0), (-30.0, 30.0)), 200)
    lq = -0.5 * (grid**2).sum(-1)
    lp = -0.5 * ((grid - 1) ** 2).sum(-1) / 4
    assert torch.isfinite(kl_on_grid(lq, lp)) and torch.isfinite(kl_on_grid(lp, lq))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: grid_2d(((0, 1), (0, 1)), 1), "n must be"),
        (lambda: grid_2d(((1, 0), (0, 1)), 5), "low < high"),
        (lambda: kl_on_grid(torch.zeros(3), torch.zeros(4)), "one shape"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
