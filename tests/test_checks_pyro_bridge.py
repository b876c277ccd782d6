"""The Pyro appendix's checkers (lesson 09) accept correct models and guides written in different ways
and name the mistake in plausible wrong ones."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from checker_assertions import accepts, rejects
from pyro.infer import SVI, Trace_ELBO

from helpers import pyro_bridge
from helpers.checks import (
    check_pyro_logistic_model,
    check_pyro_mean_field_guide,
    check_pyro_vae_guide,
    check_pyro_vae_model,
    check_train_svi,
)


def model_with(
    prior=lambda D, s, X: dist.Normal(X.new_zeros(D), s).to_event(1),
    logits=lambda w, X: (w * X).sum(-1),
    obs=True,
    plate=True,
):
    def model(X, y, prior_std=1.0):
        w = pyro.sample("w", prior(X.shape[-1], prior_std, X))
        if plate:
            with pyro.plate("data", X.shape[0]):
                pyro.sample("y", dist.Bernoulli(logits=logits(w, X)), obs=y if obs else None)
        else:
            pyro.sample("y", dist.Bernoulli(logits=logits(w, X)).to_event(1), obs=y if obs else None)

    return model


@pytest.mark.parametrize(
    "model",
    [
        pyro_bridge.logistic_regression_model,
        model_with(prior=lambda D, s, X: dist.Normal(torch.tensor(0.0, dtype=X.dtype), s).expand([D]).to_event(1)),
        model_with(
            logits=lambda w, X: (
                torch.einsum("...d,nd->...n", w.squeeze(-2) if w.dim() > 1 else w, X)
                if w.dim() < 3
                else torch.einsum("pod,nd->pn", w, X)
            )
        ),
    ],
)
def test_pyro_model_accepts(model, capsys):
    accepts(check_pyro_logistic_model, model, capsys)


@pytest.mark.parametrize(
    "model, words",
    [
        (model_with(obs=False), "obs=y"),
        (model_with(prior=lambda D, s, X: dist.Normal(X.new_zeros(D), s)), ".to_event(1)"),
        (model_with(plate=False), "pyro.plate"),
        (model_with(prior=lambda D, s, X: dist.Normal(X.new_zeros(D), 1.0).to_event(1)), "prior_std"),
        (model_with(logits=lambda w, X: -(w * X).sum(-1)), "wrong sign"),
        (model_with(logits=lambda w, X: (w.unsqueeze(-2) @ X.T).squeeze(-2)), "broadcast"),
    ],
)
def test_pyro_model_names_mistakes(model, words, capsys):
    rejects(check_pyro_logistic_model, model, capsys, words)


def guide_with(scale=lambda ls: ls.exp(), names=("mean", "log_scale"), start=-2.0, event=True):
    def guide(X, y, prior_std=1.0):
        D = X.shape[-1]
        m = pyro.param(names[0], X.new_zeros(D))
        ls = pyro.param(names[1], X.new_full((D,), start))
        d = dist.Normal(m, scale(ls))
        pyro.sample("w", d.to_event(1) if event else d)

    return guide


@pytest.mark.parametrize("guide", [pyro_bridge.mean_field_guide, guide_with(scale=lambda ls: torch.exp(ls) + 0.0)])
def test_pyro_guide_accepts(guide, capsys):
    accepts(check_pyro_mean_field_guide, guide, capsys)


@pytest.mark.parametrize(
    "guide, words",
    [
        (guide_with(scale=lambda ls: (2 * ls).exp()), "variance"),
        (guide_with(scale=lambda ls: (0.5 * ls).exp()), "log sigma^2"),
        (guide_with(names=("loc", "log_scale")), "'mean'"),
        (guide_with(start=0.0), "lesson 03 did"),
        (guide_with(event=False), ".to_event(1)"),
    ],
)
def test_pyro_guide_names_mistakes(guide, words, capsys):
    rejects(check_pyro_mean_field_guide, guide, capsys, words)


# ------------------------------------------------------------ from the lesson 09 review


def test_pyro_model_names_the_reviewed_mistakes(capsys):
    rejects(check_pyro_logistic_model, model_with(logits=lambda w, X: X @ w), capsys, "(P, 1, D)")
    rejects(
        check_pyro_logistic_model,
        model_with(prior=lambda D, s, X: dist.Normal(X.new_zeros(D), s**2).to_event(1)),
        capsys,
        "variance",
    )

    def other_plate(X, y, prior_std=1.0):
        w = pyro.sample("w", dist.Normal(X.new_zeros(X.shape[-1]), prior_std).to_event(1))
        with pyro.plate("N", X.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=(w * X).sum(-1)), obs=y)

    rejects(check_pyro_logistic_model, other_plate, capsys, "name it 'data'")


def test_pyro_guide_rejects_the_reviewed_mistakes(capsys):
    def in_plate(X, y, prior_std=1.0):
        m = pyro.param("mean", X.new_zeros(X.shape[-1]))
        ls = pyro.param("log_scale", X.new_full((X.shape[-1],), -2.0))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("w", dist.Normal(m, ls.exp()).to_event(1))

    rejects(check_pyro_mean_field_guide, in_plate, capsys, "plate")
    rejects(check_pyro_mean_field_guide, guide_with(scale=lambda ls: ls.exp().detach()), capsys, "gradient")

    def detached_mean(X, y, prior_std=1.0):
        m = pyro.param("mean", X.new_zeros(X.shape[-1]))
        ls = pyro.param("log_scale", X.new_full((X.shape[-1],), -2.0))
        pyro.sample("w", dist.Normal(m.detach(), ls.exp()).to_event(1))

    rejects(check_pyro_mean_field_guide, detached_mean, capsys, "gradient")


# ------------------------------------------------------------ 9.3: the SVI training loop


def svi_loop(clear="start", unpack=True, sign=1.0, steps=None, evaluate=False, loss_of=None, optimizer_of=None):
    def train(model, guide, optimizer, loss, data):
        if clear != "never":
            pyro.clear_param_store()
        svi = SVI(
            model, guide, optimizer_of(optimizer) if optimizer_of else optimizer, loss_of(loss) if loss_of else loss
        )
        losses = []
        for args in data[: steps or len(data)]:
            if clear == "each":
                pyro.clear_param_store()
            value = (svi.evaluate_loss if evaluate else svi.step)(*args) if unpack else svi.step(args)
            losses.append(sign * value)
        if clear == "end":
            pyro.clear_param_store()
        return losses

    return train


def svi_indexed(model, guide, optimizer, loss, data):
    pyro.clear_param_store()
    svi = SVI(model, guide, optimizer, loss)
    losses = []
    for t in range(len(data)):
        losses.append(float(svi.step(*data[t])))
    return losses


def svi_new_object_each_step(model, guide, optimizer, loss, data):
    pyro.clear_param_store()  # a new SVI per step is the same: the optimiser keeps the state per parameter
    return torch.tensor([SVI(model, guide, optimizer, loss).step(*args) for args in data])


@pytest.mark.parametrize("train", [pyro_bridge.train_svi, svi_indexed, svi_new_object_each_step])
def test_train_svi_accepts(train, capsys):
    accepts(check_train_svi, train, capsys)


def svi_twice(model, guide, optimizer, loss, data):
    pyro.clear_param_store()
    svi = SVI(model, guide, optimizer, loss)
    losses = []
    for args in data:
        svi.step(*args)
        losses.append(svi.step(*args))
    return losses


def svi_first_batch(model, guide, optimizer, loss, data):
    pyro.clear_param_store()
    svi = SVI(model, guide, optimizer, loss)
    return [svi.step(*data[0]) for _ in data]


def svi_swapped(model, guide, optimizer, loss, data):
    return svi_loop()(guide, model, optimizer, loss, data)


def svi_last_only(model, guide, optimizer, loss, data):
    return svi_loop()(model, guide, optimizer, loss, data)[-1]


def svi_no_return(model, guide, optimizer, loss, data):
    svi_loop()(model, guide, optimizer, loss, data)


@pytest.mark.parametrize(
    "train, words",
    [
        (svi_loop(sign=-1.0), "svi.step returns the loss, minus the ELBO"),
        (svi_loop(clear="never"), "pyro.clear_param_store()"),
        (svi_loop(clear="each"), "at every step"),
        (svi_loop(clear="end"), "leave the trained parameters in the store"),
        (svi_first_batch, "data[0]"),
        (svi_loop(evaluate=True), "svi.evaluate_loss only estimates"),
        (svi_twice, "twice"),
        (svi_loop(loss_of=lambda loss: Trace_ELBO()), "pass `loss` to SVI"),
        (svi_loop(optimizer_of=lambda opt: pyro.optim.Adam({"lr": 0.01})), "with the optimizer you are given"),
        (svi_swapped, "swapped"),
        (svi_loop(steps=5), "5 losses for 6 steps"),
        (svi_last_only, "one number"),
        (svi_no_return, "returned None"),
        (svi_loop(unpack=False), "svi.step(*args)"),
    ],
)
def test_train_svi_names_mistakes(train, words, capsys):
    rejects(check_train_svi, train, capsys, words)


# ------------------------------------------------------------ 9.4: the VAE's model


def vae_model_with(
    register=lambda vae: pyro.module("decoder", vae.decoder),
    prior=lambda vae, x: dist.Normal(x.new_zeros(x.shape[0], vae.L), 1.0).to_event(1),
    likelihood=lambda vae, decoder, z: dist.Binomial(vae.n_trials, logits=decoder(z)).to_event(1),
    plate=lambda x: pyro.plate("data", x.shape[0]),
    obs=True,
    z_name="z",
):
    def model(vae, x):
        registered = register(vae)
        decoder = registered.decoder if hasattr(registered, "decoder") else vae.decoder
        with plate(x):
            z = pyro.sample(z_name, prior(vae, x))
            pyro.sample("x", likelihood(vae, decoder, z), obs=x if obs else None)

    return model


def vae_model_without_plate(vae, x):
    pyro.module("decoder", vae.decoder)
    z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], vae.L), 1.0).to_event(2))
    pyro.sample("x", dist.Binomial(vae.n_trials, logits=vae.decoder(z)).to_event(2), obs=x)


@pytest.mark.parametrize(
    "model",
    [
        pyro_bridge.vae_model,
        vae_model_with(  # the plate broadcasts an unbatched prior; another module name; the returned module
            register=lambda vae: pyro.module("dec", vae.decoder),
            prior=lambda vae, x: dist.Normal(torch.zeros(vae.L), 1.0).to_event(1),
        ),
        vae_model_with(
            prior=lambda vae, x: dist.Independent(dist.Normal(0.0, 1.0).expand([x.shape[0], vae.L]), 1),
            likelihood=lambda vae, decoder, z: dist.Binomial(
                total_count=vae.n_trials, probs=torch.sigmoid(decoder(z))
            ).to_event(1),
        ),
    ],
)
def test_pyro_vae_model_accepts(model, capsys):
    accepts(check_pyro_vae_model, model, capsys)


@pytest.mark.parametrize(
    "model, words",
    [
        (vae_model_with(register=lambda vae: None), "decoder would never be trained"),
        (vae_model_with(register=lambda vae: pyro.module("vae", vae)), "registers the encoder's weights too"),
        (vae_model_with(register=lambda vae: pyro.module("encoder", vae.decoder)), "its own name"),
        (vae_model_with(obs=False), "obs=x"),
        (vae_model_without_plate, "pyro.plate('data', B)"),
        (vae_model_with(plate=lambda x: pyro.plate("batch", x.shape[0])), "name it 'data'"),
        (vae_model_with(plate=lambda x: pyro.plate("data", x.shape[0], dim=-2)), "dim -2"),
        (vae_model_with(prior=lambda vae, x: dist.Normal(x.new_zeros(x.shape[0], vae.L), 1.0)), ".to_event(1)"),
        (vae_model_with(z_name="latent"), "the guide draws 'z'"),
        (vae_model_with(likelihood=lambda vae, d, z: dist.Bernoulli(logits=d(z)).to_event(1)), "Binomial"),
        (vae_model_with(likelihood=lambda vae, d, z: dist.Binomial(16, logits=d(z)).to_event(1)), "vae.n_trials"),
        (
            vae_model_with(likelihood=lambda vae, d, z: dist.Binomial(vae.n_trials, logits=d(z).detach()).to_event(1)),
            "gradient",
        ),
        (
            vae_model_with(
                likelihood=lambda vae, d, z: dist.Binomial(
                    vae.n_trials, logits=d(z.reshape(-1, vae.L)).reshape(z.shape[-2], -1)
                ).to_event(1)
            ),
            "vectorize_particles=True",
        ),
    ],
)
def test_pyro_vae_model_names_mistakes(model, words, capsys):
    rejects(check_pyro_vae_model, model, capsys, words)


# ------------------------------------------------------------ 9.5: the VAE's amortized guide


def vae_guide_with(
    register=lambda vae: pyro.module("encoder", vae.encoder),
    q=lambda mean, log_scale: dist.Normal(mean, log_scale.exp()).to_event(1),
    plate=lambda x: pyro.plate("data", x.shape[0]),
    z_name="z",
    observe=False,
):
    def guide(vae, x):
        register(vae)
        with plate(x):
            mean, log_scale = vae.encoder(x)
            pyro.sample(z_name, q(mean, log_scale))
            if observe:
                pyro.sample("x", dist.Binomial(vae.n_trials, logits=vae.decoder(mean)).to_event(1), obs=x)

    return guide


def vae_guide_outside(vae, x):
    encoder = pyro.module("enc", vae.encoder)  # pyro.module returns the module
    mean, log_scale = encoder(x)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Independent(dist.Normal(mean, torch.exp(log_scale)), 1))


def vae_guide_without_plate(vae, x):
    pyro.module("encoder", vae.encoder)
    mean, log_scale = vae.encoder(x)
    pyro.sample("z", dist.Normal(mean, log_scale.exp()).to_event(2))


@pytest.mark.parametrize(
    "guide",
    [
        pyro_bridge.vae_guide,
        vae_guide_outside,
        vae_guide_with(q=lambda m, ls: dist.MultivariateNormal(m, scale_tril=torch.diag_embed(ls.exp()))),
    ],
)
def test_pyro_vae_guide_accepts(guide, capsys):
    accepts(check_pyro_vae_guide, guide, capsys)


@pytest.mark.parametrize(
    "guide, words",
    [
        (vae_guide_with(register=lambda vae: None), "encoder's weights are not in Pyro's parameter store"),
        (vae_guide_with(register=lambda vae: pyro.module("vae", vae)), "registers the decoder's weights too"),
        (vae_guide_with(register=lambda vae: pyro.module("decoder", vae.encoder)), "its own name"),
        (vae_guide_without_plate, "not inside a plate"),
        (vae_guide_with(plate=lambda x: pyro.plate("batch", x.shape[0])), "name it 'data'"),
        (vae_guide_with(plate=lambda x: pyro.plate("data", 128)), "B = x.shape[0]"),
        (vae_guide_with(q=lambda m, ls: dist.Normal(m, ls.exp())), ".to_event(1)"),
        (vae_guide_with(q=lambda m, ls: dist.Normal(m, ls).to_event(1)), "exp(log_scale)"),
        (vae_guide_with(q=lambda m, ls: dist.Normal(m, (2 * ls).exp()).to_event(1)), "variance"),
        (vae_guide_with(q=lambda m, ls: dist.Normal(ls, m.exp()).to_event(1)), "swapped"),
        (vae_guide_with(q=lambda m, ls: dist.Normal(m.detach(), ls.exp()).to_event(1)), "gradient"),
        (vae_guide_with(z_name="latent"), "the same name, 'z'"),
        (vae_guide_with(observe=True), "draws only the latent 'z'"),
    ],
)
def test_pyro_vae_guide_names_mistakes(guide, words, capsys):
    rejects(check_pyro_vae_guide, guide, capsys, words)


# ------------------------------------------------------------ slips of plates, sites and parameterisations (issue 29)


def model_in_plate(prior_in_plate=False, y_event=False, plate_size=None):
    def model(X, y, prior_std=1.0):
        prior = dist.Normal(X.new_zeros(X.shape[-1]), prior_std).to_event(1)
        w = None if prior_in_plate else pyro.sample("w", prior)
        with pyro.plate("data", plate_size(X) if plate_size else X.shape[0]):
            w = pyro.sample("w", prior) if prior_in_plate else w
            likelihood = dist.Bernoulli(logits=(w * X).sum(-1))
            pyro.sample("y", likelihood.to_event(1) if y_event else likelihood, obs=y)

    return model


def model_w_as_param(X, y, prior_std=1.0):
    w = pyro.param("w", X.new_zeros(X.shape[-1]))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(w * X).sum(-1)), obs=y)


def model_float32_probs(X, y, prior_std=1.0):  # float32 zeros as in the lesson's data; probs from the sigmoid
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1]), prior_std).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Bernoulli(probs=torch.sigmoid((X * w).sum(-1))), obs=y)


def test_pyro_model_accepts_probs_and_float32_prior(capsys):
    accepts(check_pyro_logistic_model, model_float32_probs, capsys)


@pytest.mark.parametrize(
    "model, words",
    [
        (model_in_plate(prior_in_plate=True), "inside the data plate"),
        (model_in_plate(y_event=True), "counts N times"),
        (model_in_plate(plate_size=lambda X: X.shape[1]), "the data plate has size 3, but there are N = X.shape[0]"),
        (model_w_as_param, "is a pyro.param"),
        (model_with(logits=lambda w, X: torch.sigmoid((w * X).sum(-1))), "went through a sigmoid"),
    ],
)
def test_pyro_model_names_plate_and_site_mistakes(model, words, capsys):
    rejects(check_pyro_logistic_model, model, capsys, words)


def test_pyro_model_names_probs_given_logits(capsys):
    def probs_given_logits(X, y, prior_std=1.0):
        w = pyro.sample("w", dist.Normal(X.new_zeros(X.shape[-1]), prior_std).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Bernoulli(probs=(w * X).sum(-1)), obs=y)

    rejects(check_pyro_logistic_model, probs_given_logits, capsys, "pass it as logits=")


def guide_mvn_float32(X, y, prior_std=1.0):
    D = X.shape[-1]
    m = pyro.param("mean", torch.zeros(D))
    ls = pyro.param("log_scale", -2.0 * torch.ones(D))
    pyro.sample("w", dist.MultivariateNormal(m, scale_tril=torch.diag(ls.exp())))


def guide_renamed(X, y, prior_std=1.0):
    m = pyro.param("mean", X.new_zeros(X.shape[-1]))
    ls = pyro.param("log_scale", X.new_full((X.shape[-1],), -2.0))
    pyro.sample("weights", dist.Normal(m, ls.exp()).to_event(1))


def test_pyro_guide_accepts_a_full_covariance_written_diagonal(capsys):
    accepts(check_pyro_mean_field_guide, guide_mvn_float32, capsys)


@pytest.mark.parametrize(
    "guide, words",
    [
        (guide_with(scale=torch.nn.functional.softplus), "AutoNormal's"),
        (guide_with(scale=lambda ls: ls), "scale must be positive"),
        (guide_renamed, "pairs the guide's draws with the model's by name"),
    ],
)
def test_pyro_guide_names_parameterisation_and_name_mistakes(guide, words, capsys):
    rejects(check_pyro_mean_field_guide, guide, capsys, words)


def vae_model_subsampled(vae, x):
    pyro.module("decoder", vae.decoder)
    with pyro.plate("data", 1000, subsample_size=x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], vae.L), 1.0).to_event(1))
        pyro.sample("x", dist.Binomial(vae.n_trials, logits=vae.decoder(z)).to_event(1), obs=x)


@pytest.mark.parametrize(
    "model, words",
    [
        (
            vae_model_with(
                likelihood=lambda vae, d, z: dist.Binomial(vae.n_trials, logits=torch.sigmoid(d(z))).to_event(1)
            ),
            "went through a sigmoid",
        ),
        (vae_model_with(likelihood=lambda vae, d, z: dist.Binomial(vae.n_trials, probs=d(z)).to_event(1)), "logits="),
        (vae_model_with(likelihood=lambda vae, d, z: dist.Normal(d(z), 1.0).to_event(1)), "scored with a Normal"),
        (
            vae_model_with(prior=lambda vae, x: dist.Normal(x.new_zeros(x.shape[0], vae.L), 2.0).to_event(1)),
            "standard deviation 2",
        ),
        (vae_model_with(plate=lambda x: pyro.plate("data", 128)), "the data plate has size 128"),
        (vae_model_with(likelihood=lambda vae, d, z: dist.Binomial(vae.n_trials, logits=d(z))), "batch shape of 'x'"),
        (vae_model_subsampled, "your plate subsamples"),
    ],
)
def test_pyro_vae_model_names_likelihood_and_plate_mistakes(model, words, capsys):
    rejects(check_pyro_vae_model, model, capsys, words)


def vae_guide_non_amortized(vae, x):
    pyro.module("encoder", vae.encoder)
    loc = pyro.param("z_loc", x.new_zeros(x.shape[0], vae.L))
    log_scale = pyro.param("z_log_scale", x.new_zeros(x.shape[0], vae.L))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def vae_guide_subsampled(vae, x):
    pyro.module("encoder", vae.encoder)
    with pyro.plate("data", 1000, subsample_size=x.shape[0]):
        mean, log_scale = vae.encoder(x)
        pyro.sample("z", dist.Normal(mean, log_scale.exp()).to_event(1))


@pytest.mark.parametrize(
    "guide, words",
    [
        (vae_guide_non_amortized, "non-amortized"),
        (vae_guide_subsampled, "your plate subsamples"),
        (vae_guide_with(q=lambda m, ls: dist.Normal(m, torch.nn.functional.softplus(ls)).to_event(1)), "softplus"),
        (vae_guide_with(q=lambda m, ls: dist.Normal(m, torch.ones_like(m)).to_event(1)), "fixed at 1"),
    ],
)
def test_pyro_vae_guide_names_amortization_and_scale_mistakes(guide, words, capsys):
    rejects(check_pyro_vae_guide, guide, capsys, words)
