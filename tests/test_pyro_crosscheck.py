"""Cross-checks against Pyro: the course's ELBO and IWAE estimators agree with Pyro's Trace_ELBO,
TraceMeanField_ELBO and RenyiELBO(alpha=0) on the course's models, within a tolerance derived from the
Monte Carlo error of both estimates; the closed-form KL terms agree with torch.distributions.kl_divergence.
(RenyiELBO with alpha = 0 is the IWAE bound per entry of a plate that holds every latent, as in the VAE, and of
the whole data set when a latent is global, as the weights of logistic regression are.)

Pyro's models and guides are in helpers/pyro_bridge.py; they are written from the model definitions,
not from the course's estimators, so agreement is a real check of both."""

import math

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from helpers import pyro_bridge
from helpers.conjugate import NormalNormal
from helpers.estimators import elbo, iwae_bound, log_weights
from helpers.families import FullRankGaussian, MeanFieldGaussian
from helpers.gaussian import kl_normal
from helpers.logistic_regression import BayesianLogisticRegression
from helpers.vae import VAE, kl_standard_normal

F64 = torch.float64


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def pyro_estimates(loss, model, guide, *args, reps=20, **kwargs):
    """Mean and standard error of Pyro's ELBO estimate (minus its loss) over ``reps`` evaluations."""
    with torch.no_grad():
        values = torch.tensor([-loss.loss(model, guide, *args, **kwargs) for _ in range(reps)], dtype=F64)
    return values.mean().item(), values.std().item() / math.sqrt(reps)


def set_mean_field(q):
    """Start Pyro's mean-field guide at the course family's parameters."""
    pyro.param("mean", q.mean.detach().clone())
    pyro.param("log_scale", q.log_scale.detach().clone())


def agree(course, course_se, pyro_value, pyro_se, slack=0.0):
    return abs(course - pyro_value) < 4 * math.hypot(course_se, pyro_se) + slack


# ------------------------------------------------------------ lesson 01: the Normal-Normal model


def test_pyro_trace_elbo_matches_on_the_normal_normal_model():
    torch.manual_seed(0)
    model = NormalNormal(prior_mean=0.5, prior_std=2.0, noise_std=1.5)
    _, x = model.sample(20)
    x = x.to(F64)
    m, log_s = torch.tensor(0.3, dtype=F64), torch.tensor(-1.0, dtype=F64)
    exact = model.gaussian_elbo(m, log_s.exp(), x).item()  # the ELBO in closed form
    with torch.no_grad():
        q = Independent(Normal(m.unsqueeze(0), log_s.exp()), 1)  # one log q per draw, (S,)
        lw = log_weights(lambda z: model.log_joint(x, z.squeeze(-1)), q, 20000)
    course, course_se = lw.mean().item(), lw.std().item() / math.sqrt(len(lw))
    pyro.param("q_mean", m)
    pyro.param("q_log_scale", log_s)
    value, se = pyro_estimates(
        Trace_ELBO(num_particles=1000, vectorize_particles=True, max_plate_nesting=1),
        pyro_bridge.normal_normal_model,
        pyro_bridge.normal_guide,
        x,
        prior_mean=0.5,
        prior_std=2.0,
        noise_std=1.5,
    )
    assert agree(course, course_se, value, se), (course, value)
    assert agree(exact, 0.0, value, se) and agree(exact, 0.0, course, course_se)


# ------------------------------------------------------------ lesson 03: Bayesian logistic regression


def _blr_problem():
    torch.manual_seed(1)
    N, D = 60, 4
    X = torch.cat([torch.ones(N, 1, dtype=F64), torch.randn(N, D - 1, dtype=F64)], 1)
    y = (torch.rand(N, dtype=F64) < torch.sigmoid(X @ torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=F64))).to(F64)
    return X, y, BayesianLogisticRegression(X, y, prior_std=1.5)


def _course_estimate(log_joint, q):
    with torch.no_grad():
        lw = log_weights(log_joint, q.distribution(), 20000)
    return lw.mean().item(), lw.std().item() / math.sqrt(len(lw))


def _mean_field_estimates(pyro_prior_std):
    """The course's and Pyro's ELBO of one mean-field q; Pyro's model is given ``pyro_prior_std`` (truth: 1.5)."""
    X, y, blr = _blr_problem()
    q = MeanFieldGaussian(4, mean=torch.tensor([0.4, -0.8, 1.5, 0.2]), log_scale=-1.0, dtype=F64)
    set_mean_field(q)
    value, se = pyro_estimates(
        Trace_ELBO(num_particles=1000, vectorize_particles=True, max_plate_nesting=1),
        pyro_bridge.logistic_regression_model,
        pyro_bridge.mean_field_guide,
        X,
        y,
        prior_std=pyro_prior_std,
    )
    return (*_course_estimate(blr.log_joint, q), value, se)


def test_pyro_trace_elbo_matches_on_logistic_regression_with_mean_field():
    course, course_se, value, se = _mean_field_estimates(1.5)
    assert agree(course, course_se, value, se), (course, value)


def test_pyro_trace_elbo_matches_on_logistic_regression_with_full_rank():
    X, y, blr = _blr_problem()
    q = FullRankGaussian(4, mean=torch.tensor([0.4, -0.8, 1.5, 0.2]), log_scale=-1.0, dtype=F64)
    with torch.no_grad():
        q.off_diag.copy_(0.2 * torch.randn(4, 4, dtype=F64))
    course, course_se = _course_estimate(blr.log_joint, q)
    pyro.param("mean", q.mean.detach().clone())
    pyro.param("scale_tril", q.scale_tril().detach().clone(), constraint=torch.distributions.constraints.lower_cholesky)
    value, se = pyro_estimates(
        Trace_ELBO(num_particles=1000, vectorize_particles=True, max_plate_nesting=1),
        pyro_bridge.logistic_regression_model,
        pyro_bridge.full_rank_guide,
        X,
        y,
        prior_std=1.5,
    )
    assert agree(course, course_se, value, se), (course, value)


def test_pyro_elbo_detects_a_wrong_prior():
    # the comparison has power: a prior scale of 1.0 instead of 1.5 is seen, at this Monte Carlo error
    assert not agree(*_mean_field_estimates(1.0))


# ------------------------------------------------------------ lesson 05: the VAE


def _vae_problem():
    torch.manual_seed(2)
    vae = VAE(D=6, L=2, hidden=(8,), n_trials=16).to(F64)
    torch.nn.init.normal_(vae.encoder.net[-1].weight, std=0.4)  # away from the prior
    x = torch.tensor([[0, 3, 16, 8, 1, 12], [5, 0, 2, 16, 9, 7], [16, 16, 0, 0, 4, 2]], dtype=F64)
    return vae, x


def test_pyro_trace_elbos_match_the_vae_elbo():
    vae, x = _vae_problem()
    with torch.no_grad():
        draws = torch.stack([vae.elbo(x, S=1).sum() for _ in range(4000)])  # closed-form KL, one draw each
    course, course_se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    for loss in (
        Trace_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1),
        TraceMeanField_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1),
    ):
        value, se = pyro_estimates(loss, pyro_bridge.vae_model, pyro_bridge.vae_guide, vae, x)
        assert agree(course, course_se, value, se), (type(loss).__name__, course, value)


def test_pyro_renyi_elbo_at_alpha_zero_matches_the_iwae_bound():
    # Every latent of the VAE is inside the data plate, so Pyro keeps the images apart: RenyiELBO(alpha=0) on a
    # batch is the sum of the per-image IWAE bounds, which is what the course's iwae_bound gives image by image.
    vae, x = _vae_problem()
    with torch.no_grad():
        draws = torch.stack([vae.iwae_bound(x, 10).sum() for _ in range(800)])
    course, course_se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    value, se = pyro_estimates(
        RenyiELBO(alpha=0, num_particles=10, vectorize_particles=True, max_plate_nesting=1),
        pyro_bridge.vae_model,
        pyro_bridge.vae_guide,
        vae,
        x,
        reps=800,
    )
    assert agree(course, course_se, value, se), (course, value)
    elbo_value = torch.stack([vae.elbo(x).sum().detach() for _ in range(800)]).mean().item()
    assert value > elbo_value  # and the bound is above the ELBO, as IWAE with K = 10 must be


def test_course_iwae_estimator_matches_pyro_renyi_on_logistic_regression():
    X, y, blr = _blr_problem()
    q = MeanFieldGaussian(4, mean=torch.tensor([0.4, -0.8, 1.5, 0.2]), log_scale=-1.0, dtype=F64)
    with torch.no_grad():
        draws = torch.stack([iwae_bound(blr.log_joint, q.distribution(), 20) for _ in range(2000)])
    course, course_se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    set_mean_field(q)
    value, se = pyro_estimates(
        RenyiELBO(alpha=0, num_particles=20, vectorize_particles=True, max_plate_nesting=1),
        pyro_bridge.logistic_regression_model,
        pyro_bridge.mean_field_guide,
        X,
        y,
        prior_std=1.5,
        reps=2000,
    )
    assert agree(course, course_se, value, se), (course, value)
    assert course > elbo(blr.log_joint, q.distribution(), 20000).item()


# ------------------------------------------------------------ closed-form KL terms


def test_pyro_and_course_closed_form_kl_terms_match_torch_distributions():
    torch.manual_seed(3)
    mean, log_scale = torch.randn(5, 3, dtype=F64), 0.5 * torch.randn(5, 3, dtype=F64)
    reference = kl_divergence(Normal(mean, log_scale.exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_standard_normal(mean, log_scale), reference)
    mu_q, s_q, mu_p, s_p = (torch.tensor(v, dtype=F64) for v in (0.3, 0.7, -1.0, 2.0))
    torch.testing.assert_close(kl_normal(mu_q, s_q, mu_p, s_p), kl_divergence(Normal(mu_q, s_q), Normal(mu_p, s_p)))
    q = FullRankGaussian(3, mean=torch.randn(3), log_scale=-0.5, dtype=F64)
    p = MultivariateNormal(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    with torch.no_grad():
        z = q.distribution().sample((200000,))
        mc = (q.distribution().log_prob(z) - p.log_prob(z)).mean()
    assert abs(mc.item() - kl_divergence(q.distribution(), p).item()) < 0.01


# ------------------------------------------------------------ the SVI training loop (lesson 09's train_svi)


def test_train_svi_is_adam_on_minus_the_elbo_with_one_batch_per_step():
    # An independent loop: torch.optim.Adam on -(log p(x_t, z) - log q(z)), z = m + s eps, written from the model
    # (helpers.conjugate.NormalNormal) and torch.distributions; the same eps, since both draw it with Normal.rsample.
    model = NormalNormal(prior_mean=0.5, prior_std=2.0, noise_std=1.5)
    torch.manual_seed(4)
    batches = [model.sample(5)[1].to(F64) for _ in range(30)]
    torch.manual_seed(5)
    losses = pyro_bridge.train_svi(
        pyro_bridge.normal_normal_model,
        pyro_bridge.normal_guide,
        pyro.optim.Adam({"lr": 0.05}),
        Trace_ELBO(),
        [(x, 0.5, 2.0, 1.5) for x in batches],
    )
    m, log_s = torch.zeros((), dtype=F64, requires_grad=True), torch.zeros((), dtype=F64, requires_grad=True)
    optimizer = torch.optim.Adam([m, log_s], lr=0.05)
    torch.manual_seed(5)
    reference = []
    for x in batches:
        q = Normal(m, log_s.exp())
        z = q.rsample()
        loss = -(model.log_joint(x, z) - q.log_prob(z))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        reference.append(loss.item())
    assert isinstance(losses, list) and all(isinstance(v, float) for v in losses)
    torch.testing.assert_close(torch.tensor(losses, dtype=F64), torch.tensor(reference, dtype=F64))
    torch.testing.assert_close(pyro.param("q_mean").detach(), m.detach())
    torch.testing.assert_close(pyro.param("q_log_scale").detach(), log_s.detach())


def test_train_svi_starts_afresh_and_its_losses_reach_minus_the_log_evidence():
    # q is the family of the exact posterior, so at the optimum log p(x, z) - log q(z) = log p(x) for every z:
    # the loss svi.step returns is then -log p(x), with no Monte Carlo error. SVI ends within its own noise of the
    # optimum (a few per cent of the posterior's sd, seen over seeds), hence the tolerances.
    model = NormalNormal(prior_mean=0.5, prior_std=2.0, noise_std=1.5)
    torch.manual_seed(6)
    x = model.sample(20)[1].to(F64)
    pyro.param("q_mean", torch.tensor(30.0, dtype=F64))  # left by an earlier fit: train_svi must not start there
    torch.manual_seed(7)
    losses = pyro_bridge.train_svi(
        pyro_bridge.normal_normal_model,
        pyro_bridge.normal_guide,
        pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.001 ** (1 / 600)}),
        Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1),
        [(x, 0.5, 2.0, 1.5)] * 600,
    )
    start = model.gaussian_elbo(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64), x).item()  # q = N(0, 1)
    assert len(losses) == 600 and abs(losses[0] + start) < 30  # from q_mean = 30, -ELBO would be about 5000
    mean, sd = model.posterior(x)
    assert abs(pyro.param("q_mean").item() - mean.item()) < 0.1 * sd.item()
    assert abs(pyro.param("q_log_scale").exp().item() / sd.item() - 1) < 0.05
    assert abs(losses[-1] + model.log_evidence(x).item()) < 0.1
