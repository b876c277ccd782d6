"""The Pyro appendix's checkers (lesson 08) accept correct models and guides written in different ways
and name the mistake in plausible wrong ones."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from checker_assertions import accepts, rejects

from helpers import pyro_bridge
from helpers.checks import check_pyro_logistic_model, check_pyro_mean_field_guide


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


# ------------------------------------------------------------ from the lesson 08 review


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
