"""Both gradient estimators are unbiased for the exact ELBO gradient of the
Normal-Normal model, and the reparameterization one has far lower variance."""

import math

import torch
from torch.distributions import Normal

from helpers.conjugate import NormalNormal
from helpers.gradient_estimators import reparameterization_surrogate, score_function_surrogate

F64 = torch.float64


def setup():
    model = NormalNormal(prior_mean=0.0, prior_std=2.0, noise_std=1.0)
    x = torch.tensor([1.5, 0.7, 2.2, 1.1], dtype=F64)
    m = torch.tensor([0.3], dtype=F64, requires_grad=True)
    log_s = torch.tensor([math.log(0.8)], dtype=F64, requires_grad=True)
    exact = torch.autograd.grad(model.gaussian_elbo(m[0], log_s.exp()[0], x), (m, log_s))
    return model, x, m, log_s, torch.cat(exact)


def per_draw_gradients(surrogate, make_input, m, log_s, log_joint, R):
    grads = []
    for _ in range(R):
        out = surrogate(log_joint, m, log_s, make_input())
        grads.append(torch.cat(torch.autograd.grad(out, (m, log_s))))
    return torch.stack(grads)


def test_unbiased_and_ordered_in_variance():
    torch.manual_seed(0)
    model, x, m, log_s, exact = setup()

    def log_joint(z):
        return model.log_joint(x, z[..., 0])

    score = per_draw_gradients(
        score_function_surrogate,
        lambda: (m + log_s.exp() * torch.randn(1, 1, dtype=F64)).detach(),
        m,
        log_s,
        log_joint,
        2000,
    )
    reparam = per_draw_gradients(
        reparameterization_surrogate, lambda: torch.randn(1, 1, dtype=F64), m, log_s, log_joint, 2000
    )
    for grads in (score, reparam):
        se = grads.std(0) / math.sqrt(grads.shape[0])
        assert ((grads.mean(0) - exact).abs() < 4 * se).all()
    assert (score.var(0) > 10 * reparam.var(0)).all()


def test_reparameterization_value_is_an_unbiased_elbo():
    torch.manual_seed(1)
    model, x, m, log_s, _ = setup()
    values = torch.stack(
        [
            reparameterization_surrogate(
                lambda z: model.log_joint(x, z[..., 0]), m, log_s, torch.randn(1, 1, dtype=F64)
            ).detach()
            for _ in range(4000)
        ]
    )
    exact = model.gaussian_elbo(m[0], log_s.exp()[0], x).detach()
    assert abs(float(values.mean() - exact)) < 4 * float(values.std()) / math.sqrt(4000)


def test_score_function_needs_no_gradient_of_the_log_joint():
    # it works for a log joint that autograd cannot differentiate (here: rounded)
    torch.manual_seed(2)
    m = torch.zeros(1, dtype=F64, requires_grad=True)
    log_s = torch.zeros(1, dtype=F64, requires_grad=True)
    z = torch.randn(50, 1, dtype=F64)
    out = score_function_surrogate(lambda z: Normal(1.0, 1.0).log_prob(z.round()).sum(-1), m, log_s, z)
    gm, gs = torch.autograd.grad(out, (m, log_s))
    assert torch.isfinite(gm).all() and gm.abs().sum() > 0
