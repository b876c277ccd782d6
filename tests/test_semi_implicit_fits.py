"""The method comparison's fits: every method trains, is reproducible from its seed, reports its time, and
gives samples and a log density of the right shapes; the schedules follow the authors' counts."""

import math

import pytest
import torch

from helpers.flows import RealNVP
from helpers.semi_implicit_fits import (
    METHODS,
    Fit,
    TitsiasRMSprop,
    _anneal_factor,
    _decay_every,
    annealed,
    fit,
    mode_weight,
)
from helpers.targets import gaussian_mixture


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_a_few_steps(method):
    seen = []
    options = {"batch": 8} if method == "UIVI" else {}  # not 50000 / 4 draws a step
    result = fit(method, gaussian_mixture, 4, seed=0, checkpoint=(2, seen.append), **options)
    assert isinstance(result, Fit) and result.seconds > 0 and len(seen) == 1
    z = result.sample(50)
    assert z.shape == (50, 2) and torch.isfinite(z).all()
    lq = result.log_density(z[:7], K=100)
    assert lq.shape == (7,) and torch.isfinite(lq).all()
    if method == "KSIVI":
        fit(method, gaussian_mixture, 1, seed=0, kernel="imq", anneal=True)


def test_a_fit_is_reproducible_from_its_seed():
    a = fit("SIVI", gaussian_mixture, 3, seed=5).family.mixing[0].weight
    b = fit("SIVI", gaussian_mixture, 3, seed=5).family.mixing[0].weight
    torch.testing.assert_close(a, b)


def test_schedules_and_annealing_follow_the_authors_counts():
    assert _decay_every(1000) == 1000 and _decay_every(3000) == 3000  # in updates, whatever the run's length
    assert _decay_every(1000, "logistic regression") == 3000
    assert _anneal_factor(0, 5000, True) == pytest.approx(0.1)
    assert _anneal_factor(1250, 5000, True) == pytest.approx(0.6)
    assert _anneal_factor(2500, 5000, True) == 1.0 and _anneal_factor(0, 5000, False) == 1.0
    z = torch.tensor([[1.0, 2.0]], requires_grad=True)
    (g,) = torch.autograd.grad(annealed(gaussian_mixture, 0.3)(z).sum(), z)
    (g1,) = torch.autograd.grad(gaussian_mixture(z).sum(), z)
    torch.testing.assert_close(g, 0.3 * g1)


def test_mode_weight_and_flow_density():
    assert mode_weight(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])) == 0.75
    flow_fit = Fit("RealNVP", RealNVP(), 0.0)
    z = flow_fit.sample(10)
    torch.testing.assert_close(flow_fit.log_density(z), -0.5 * (z**2).sum(-1) - math.log(2 * math.pi))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown method"):
        fit("SVGD", gaussian_mixture, 3, 0)
    with pytest.raises(ValueError, match="steps"):
        fit("SIVI", gaussian_mixture, 0, 0)


def test_fit_knows_its_problems():
    with pytest.raises(ValueError, match="unknown problem"):
        fit("SIVI", lambda z: -(z**2).sum(-1), 1, 0, problem="3-D")
    result = fit("SIVI-SM", lambda z: -(z**2).sum(-1), 1, 0, problem="logistic regression")
    assert result.sample(5).shape == (5, 31)  # the regression's 31 weights


def test_titsias_rmsprop_starts_its_average_at_the_first_squared_gradient():
    """Two steps by hand (main_demo.m: kappa = 1 at the first iteration, then 0.1; tau = 1)."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = TitsiasRMSprop([p], lr=0.5)
    g1, g2 = torch.tensor([3.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64)
    expected, G = p.detach().clone(), g1**2
    expected -= 0.5 * g1 / (1 + G.sqrt())
    G = 0.1 * g2**2 + 0.9 * G
    expected -= 0.5 * g2 / (1 + G.sqrt())
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), expected)
    with pytest.raises(ValueError, match="kappa"):
        TitsiasRMSprop([p], lr=0.1, kappa=0.0)


@pytest.mark.parametrize("method, learned, start", [("UIVI", "sigma", 0.5), ("SIVI-SM", "log sigma^2", 0.0)])
def test_each_family_learns_sigma_as_its_authors_do(method, learned, start):
    """UIVI learns sigma itself, SIVI-SM and KSIVI log sigma^2; the family still reads log sigma."""
    options = {"batch": 4} if method == "UIVI" else {}
    q = fit(method, gaussian_mixture, 1, seed=0, **options).family
    original = q.parametrizations.log_sigma.original
    assert original.requires_grad and original.shape == (2,)
    expected_log_sigma = original.log() if learned == "sigma" else original / 2
    torch.testing.assert_close(q.log_sigma, expected_log_sigma)
    fresh = fit(method, gaussian_mixture, 1, seed=0, **options).family  # one update moved it only a little
    assert abs(fresh.parametrizations.log_sigma.original.detach()[0].item() - start) < 0.05
