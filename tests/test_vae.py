"""The VAE's pieces against torch.distributions, naive formulas and, for L = 2, quadrature."""

import math

import pytest
import torch
from torch.distributions import Binomial, Normal, kl_divergence

from helpers import vae

F64 = torch.float64


def small_vae(L=2):
    torch.manual_seed(0)
    model = vae.VAE(D=5, L=L, hidden=(6,), n_trials=16).to(F64)
    torch.nn.init.normal_(model.encoder.net[-1].weight, std=0.3)
    return model


def test_kl_and_log_mean_exp_against_references():
    mean, log_scale = torch.randn(4, 3, dtype=F64), 0.5 * torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(
        vae.kl_standard_normal(mean, log_scale), kl_divergence(Normal(mean, log_scale.exp()), Normal(0.0, 1.0)).sum(-1)
    )
    log_w = torch.randn(7, 3, dtype=F64)
    torch.testing.assert_close(vae.log_mean_exp(log_w), log_w.exp().mean(0).log())
    assert torch.isfinite(vae.log_mean_exp(log_w - 5000.0)).all()


def test_binomial_log_likelihood_by_hand():
    model = small_vae()
    x = torch.tensor([[0, 3, 16, 8, 1]], dtype=F64)
    z = torch.randn(1, 2, dtype=F64)
    p = torch.sigmoid(model.decoder(z))
    log_choose = torch.lgamma(torch.tensor(17.0, dtype=F64)) - torch.lgamma(x + 1) - torch.lgamma(17 - x)
    expected = (log_choose + x * p.log() + (16 - x) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, z), expected)


def test_binomial_log_prob_against_torch_distributions_including_extreme_logits():
    x = torch.arange(17, dtype=F64).repeat(3, 1)  # every count 0..16
    logits = torch.cat([torch.linspace(-60, 60, 17), torch.randn(17), torch.zeros(17)]).reshape(3, 17).to(F64)
    logits.requires_grad_(True)
    ours = vae.binomial_log_prob(x, 16, logits)
    reference = Binomial(16, logits=logits).log_prob(x)
    torch.testing.assert_close(ours, reference)
    assert torch.isfinite(ours).all()
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_ref,) = torch.autograd.grad(reference.sum(), logits)
    torch.testing.assert_close(g_ours, g_ref)  # d/dl = x - n sigmoid(l)
    torch.testing.assert_close(g_ours, x - 16 * torch.sigmoid(logits.detach()))
    # broadcasting as the VAE uses it: x (B, D) against logits (S, B, D)
    many = torch.randn(5, 3, 17, dtype=F64)
    torch.testing.assert_close(vae.binomial_log_prob(x, 16, many), Binomial(16, logits=many).log_prob(x))


@pytest.mark.parametrize(
    "bad", [[0.5, 1.0], [-1.0, 2.0], [3.0, 17.0], [float("nan"), 2.0]], ids=["fraction", "negative", "above n", "NaN"]
)
def test_binomial_log_prob_names_counts_that_are_not_counts(bad):
    with pytest.raises(ValueError, match="whole counts between 0 and 16"):
        vae.binomial_log_prob(torch.tensor(bad), 16, torch.zeros(2))


def test_closed_form_kl_elbo_is_unbiased_for_the_monte_carlo_elbo():
    model = small_vae()
    x = torch.tensor([[0, 3, 16, 8, 1], [5, 5, 5, 5, 5]], dtype=F64)
    with torch.no_grad():
        closed = torch.stack([model.elbo(x) for _ in range(3000)])
        mean, log_scale = model.encoder(x)
        z = mean + log_scale.exp() * torch.randn(3000, 2, 2, dtype=F64)
        mc = model.log_joint(x, z) - Normal(mean, log_scale.exp()).log_prob(z).sum(-1)
    se = (closed.var(0) / 3000 + mc.var(0) / 3000).sqrt()
    assert ((closed.mean(0) - mc.mean(0)).abs() < 4 * se).all()


def test_iwae_approaches_the_evidence_from_below():
    # L = 2: log p(x) by quadrature on a grid
    model = small_vae()
    x = torch.tensor([[0, 3, 16, 8, 1], [12, 0, 2, 15, 6]], dtype=F64)
    h, n = 0.04, 300
    axis = -6 + h * (torch.arange(n, dtype=F64) + 0.5)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 1, 2)  # (n^2, 1, 2)
    with torch.no_grad():
        log_px = torch.logsumexp(model.log_joint(x, grid), 0) + 2 * math.log(h)
        elbo = torch.stack([model.elbo(x, S=100) for _ in range(20)]).mean(0)
        iwae = torch.stack([model.iwae_bound(x, 5000) for _ in range(4)]).mean(0)
    assert (elbo < log_px).all()
    assert (iwae <= log_px + 0.01).all() and (iwae > elbo).all()
    assert (log_px - iwae).max() < 0.2 * (log_px - elbo).min()


def test_sample_shape_and_range():
    images = small_vae().sample(4, generator=torch.Generator().manual_seed(1))
    assert images.shape == (4, 5) and images.min() >= 0 and images.max() <= 16


def test_log_weights_against_torch_distributions():
    model = small_vae()
    x = torch.tensor([[0, 3, 16, 8, 1], [5, 0, 2, 16, 9]], dtype=torch.float64)
    eps = torch.randn(7, 2, model.L, dtype=torch.float64)
    mean, log_scale = model.encoder(x)
    z = mean + log_scale.exp() * eps
    prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    q = Normal(mean, log_scale.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(model.log_weights(x, eps), model.log_likelihood(x, z) + prior - q)


def test_aggregate_log_density_is_the_mixture_of_the_encoders_gaussians():
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    from helpers.vae import aggregate_log_density

    g = torch.Generator().manual_seed(0)
    N, L = 37, 3
    mean = torch.randn(N, L, generator=g, dtype=torch.float64)
    log_scale = torch.randn(N, L, generator=g, dtype=torch.float64) * 0.3 - 1.5  # narrow, as a trained encoder's
    mixture = MixtureSameFamily(
        Categorical(torch.ones(N, dtype=torch.float64)), Independent(Normal(mean, log_scale.exp()), 1)
    )
    z = mixture.sample((300,))
    torch.testing.assert_close(aggregate_log_density(z, mean, log_scale, chunk=64), mixture.log_prob(z))
    # float32 at the lesson's widths: each component's density underflows, the log-space average does not
    far = aggregate_log_density(z.float() + 3, mean.float(), log_scale.float() - 2)
    assert torch.isfinite(far).all()
    # the KL estimate agrees with its definition, within its own standard error over independent draws
    prior = Independent(Normal(torch.zeros(L, dtype=torch.float64), 1.0), 1)
    draws = mixture.sample((4000,))
    terms = aggregate_log_density(draws, mean, log_scale) - prior.log_prob(draws)  # KL(q_bar || p) by Monte Carlo
    value, se = float(terms.mean()), float(terms.std()) / 4000**0.5
    big = mixture.sample((100_000,))
    exact = float((mixture.log_prob(big) - prior.log_prob(big)).mean())
    assert abs(value - exact) < 4 * se + 0.02


def test_mutual_information_matches_quadrature_and_its_limits():
    """I_q(i; z) of a mixture of N Gaussians in one dimension, against the integral on a grid (an independent
    reference); 0 when the encoders coincide, log N when they are far apart; never above log N."""
    from torch.distributions import Normal

    from helpers.vae import mutual_information

    g = torch.Generator().manual_seed(3)
    N = 5
    mean = torch.tensor([[-1.0], [-0.4], [0.1], [0.3], [1.5]], dtype=torch.float64)
    log_scale = torch.tensor([[-0.7], [-0.3], [-1.0], [-0.5], [-0.8]], dtype=torch.float64)
    grid = torch.linspace(-8, 8, 40_001, dtype=torch.float64)
    log_q = Normal(mean, log_scale.exp()).log_prob(grid)  # (N, G): each encoder's density on the grid
    log_q_bar = torch.logsumexp(log_q, 0) - math.log(N)
    exact = float(torch.trapezoid(log_q.exp() * (log_q - log_q_bar), grid).mean())
    assert 0.3 < exact < math.log(N) - 0.3  # the encoders overlap partly: far from both limits
    calls = torch.stack(
        [
            mutual_information(mean, log_scale, torch.randn(400, N, 1, generator=g, dtype=torch.float64))
            for _ in range(20)
        ]
    )
    assert abs(float(calls.mean()) - exact) < 4 * float(calls.std()) / 20**0.5 + 1e-3
    assert (calls <= math.log(N) + 1e-12).all()
    same = mutual_information(torch.zeros(N, 2), torch.zeros(N, 2), torch.randn(3, N, 2, generator=g))
    assert abs(float(same)) < 1e-6  # q_bar is every encoder: nothing is known about the index
    f64 = {"dtype": torch.float64}
    apart = mutual_information(
        10 * torch.arange(N, **f64)[:, None], torch.full((N, 1), -1.0, **f64), torch.randn(3, N, 1, generator=g, **f64)
    )
    assert abs(float(apart) - math.log(N)) < 1e-9  # the code says which encoder it came from
