"""The semi-implicit VAE: its surrogate against an explicit loop, the Gaussian VAE recovered at
initialisation, and its importance-weighted bound below log p(x) computed by quadrature."""

import math

import torch
from torch.distributions import Binomial, Normal

from helpers.semi_implicit_vae import SemiImplicitVAE, semi_implicit_elbo_terms
from helpers.vae import VAE

F64 = torch.float64


def joint(x, z):  # a toy log p(x, z) for B = 3 data points
    return -0.5 * ((x[:, :2] - z) ** 2).sum(-1) - 0.1 * (z**2).sum(-1)


def test_elbo_terms_match_an_explicit_loop():
    torch.manual_seed(0)
    x, z = torch.randn(3, 4, dtype=F64), torch.randn(3, 2, dtype=F64)
    psi, log_scale = torch.randn(6, 3, 2, dtype=F64), 0.3 * torch.randn(3, 2, dtype=F64)
    out = semi_implicit_elbo_terms(x, z, psi, log_scale, joint)
    for b in range(3):
        densities = [Normal(psi[k, b], log_scale[b].exp()).log_prob(z[b]).sum().exp() for k in range(6)]
        expected = joint(x, z)[b] - math.log(sum(densities) / 6)
        assert abs(out[b].item() - expected.item()) < 1e-10


def _pair():
    torch.manual_seed(1)
    si = SemiImplicitVAE(D=5, L=2, hidden=(6,), n_trials=4, noise_dim=3, noise_hidden=7).to(F64)
    gauss = VAE(D=5, L=2, hidden=(6,), n_trials=4).to(F64)
    gauss.encoder.load_state_dict(si.encoder.gaussian.state_dict())
    gauss.decoder.load_state_dict(si.decoder.state_dict())
    torch.nn.init.normal_(si.encoder.gaussian.net[-1].weight, std=0.5)  # leave the prior
    gauss.encoder.net[-1].weight.data.copy_(si.encoder.gaussian.net[-1].weight.data)
    x = torch.tensor([[0, 1, 4, 2, 3], [4, 4, 0, 1, 0]], dtype=F64)
    return si, gauss, x


def test_at_initialisation_the_encoder_is_the_gaussian_one():
    si, gauss, x = _pair()
    torch.manual_seed(2)
    a = si.iw_bound(x, K=50, K_psi=10)
    torch.manual_seed(2)
    h, mean, log_scale = si.encoder(x)
    m, ls = gauss.encoder(x)
    torch.testing.assert_close((mean, log_scale), (m, ls))
    psi = si.encoder.sample_psi(h, mean, 4)
    assert torch.equal(psi, mean.expand_as(psi))  # the noise network starts at zero
    torch.manual_seed(3)
    repeated = x.repeat(4000, 1)  # 4000 independent estimates per image, in one batch
    surrogate = si.surrogate_elbo(repeated, K=5).reshape(4000, 2).mean(0)
    exact = gauss.elbo(repeated).reshape(4000, 2).mean(0)
    torch.testing.assert_close(surrogate, exact, atol=0.1, rtol=0)
    assert a.shape == (2,)


def test_surrogate_elbo_runs_on_the_elbo_terms_it_is_given():
    si, _, x = _pair()
    seen = []

    def recording(x, z, psi, log_scale, log_joint):  # a learner's exercise 7.1, say
        seen.append((z.shape, psi.shape, log_scale.shape))
        return semi_implicit_elbo_terms(x, z, psi, log_scale, log_joint)

    torch.manual_seed(5)
    default = si.surrogate_elbo(x, K=4)
    torch.manual_seed(5)
    given = si.surrogate_elbo(x, K=4, elbo_terms=recording)
    assert torch.equal(given, default)  # the same draws, the same surrogate: the same numbers
    assert seen == [((2, 2), (5, 2, 2), (2, 2))]  # z (B, L), psi (K + 1, B, L), log_scale (B, L)


def _log_evidence_by_quadrature(model, x):
    grid = torch.linspace(-8, 8, 801, dtype=F64)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)  # (G, 1, 2)
    log_joint = model.log_joint(x, z)  # (G, B)
    return torch.logsumexp(log_joint, 0) + 2 * math.log(grid[1] - grid[0])


def test_iw_bound_is_below_the_log_evidence_and_tightens():
    si, _, x = _pair()
    torch.nn.init.normal_(si.encoder.noise_net[-1].weight, std=0.8)  # a genuinely semi-implicit encoder
    exact = _log_evidence_by_quadrature(si, x)
    torch.manual_seed(4)
    loose = torch.stack([si.iw_bound(x, K=1, K_psi=1) for _ in range(400)])
    tight = torch.stack([si.iw_bound(x, K=200, K_psi=100) for _ in range(40)])
    for bound in (loose, tight):
        assert (bound.mean(0) < exact + 3 * bound.std(0) / math.sqrt(len(bound))).all()
    assert (tight.mean(0) > loose.mean(0)).all()
    assert (exact - tight.mean(0) < 0.05).all(), (exact, tight.mean(0))


def test_binomial_likelihood_is_shared_with_the_vae():
    si, _, x = _pair()
    z = torch.randn(3, 2, 2, dtype=F64)
    expected = Binomial(4, logits=si.decoder(z)).log_prob(x).sum(-1)
    torch.testing.assert_close(si.log_likelihood(x, z), expected)
