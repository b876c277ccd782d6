"""`maximize` finds the maximum of a known concave function and reports its trace."""

import pytest
import torch

from helpers.training import maximize


def test_maximize_reaches_the_maximum_of_a_concave_quadratic():
    x = torch.zeros(3, requires_grad=True)
    target = torch.tensor([1.0, -2.0, 0.5])
    trace = maximize(lambda: -((x - target) ** 2).sum(), [x], steps=500, lr=0.05)
    assert len(trace) == 500 and trace[0] == pytest.approx(-5.25)
    torch.testing.assert_close(x.detach(), target, atol=1e-3, rtol=0)
    assert trace[-1] > -1e-5


def test_maximize_names_bad_input():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="0-d tensor"):
        maximize(lambda: -(x**2), [x], steps=2, lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        maximize(lambda: -(x**2).sum(), [x], steps=0, lr=0.1)
