r"""Checkers for the Pyro appendix (lesson 08).

A Pyro model or guide is a program, so the checker runs it under ``pyro.poutine.trace`` and inspects the
recorded sample sites: their names, distributions, event shapes, observed values and plates, and the
total log density against the course's own :class:`helpers.logistic_regression.BayesianLogisticRegression`.
Pyro is imported inside the checkers, so importing :mod:`helpers.checks` stays fast for the other lessons.
"""

import math

import torch

from ..logistic_regression import BayesianLogisticRegression
from ._core import call_learner, checker, fail, fmt, learner_backward

__all__ = ["check_pyro_logistic_model", "check_pyro_mean_field_guide"]

_F64 = torch.float64


def _problem():
    X = torch.tensor(
        [[1.0, 0.5, -1.0], [1.0, -0.3, 0.8], [1.0, 1.2, 0.1], [1.0, -2.0, -0.4], [1.0, 0.0, 1.5]], dtype=_F64
    )
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=_F64)
    return X, y, 1.5


def _trace(fn, *args, data=None):
    from pyro import poutine

    program = poutine.condition(fn, data=data) if data else fn
    return call_learner(lambda: poutine.trace(program).get_trace(*args))


def _sample_sites(trace):
    """The sample sites of a trace, without the bookkeeping sites that ``pyro.plate`` records."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and type(site["fn"]).__name__ != "_Subsample"
    }


@checker("8.1", "Bayesian logistic regression as a Pyro model")
def check_pyro_logistic_model(model):
    import pyro
    from pyro.infer import Trace_ELBO

    from ..pyro_bridge import logistic_regression_model, mean_field_guide

    X, y, prior_std = _problem()
    w = torch.tensor([0.4, -1.1, 0.7], dtype=_F64)
    pyro.clear_param_store()
    sites = _sample_sites(_trace(model, X, y, prior_std, data={"w": w}))
    if "w" not in sites:
        fail(f"no sample site named 'w' (found {sorted(sites) or 'none'}): draw the weights with pyro.sample('w', ...)")
    if "y" not in sites:
        fail(f"no sample site named 'y' (found {sorted(sites)}): pyro.sample('y', ..., obs=y)")
    if not sites["y"]["is_observed"]:
        fail("the labels are not observed: pass obs=y to pyro.sample('y', ...)")
    if tuple(sites["w"]["fn"].event_shape) != (3,):
        fail(
            f"the prior's event shape is {tuple(sites['w']['fn'].event_shape)}, not (D,): the D weights are one "
            "vector-valued draw; add .to_event(1) to the Normal"
        )
    frames = [frame.name for frame in sites["y"]["cond_indep_stack"]]
    if frames and "data" not in frames:
        fail(
            f"the labels are in a plate named {frames[0]!r}; name it 'data', as the guides and tests expect: "
            "pyro.plate('data', N)"
        )
    if not frames:
        fail(
            "the likelihood is not inside pyro.plate('data', N): the labels are independent given w, "
            "and the plate tells Pyro so (and lets it vectorize over particles)"
        )
    trace = _trace(model, X, y, prior_std, data={"w": w})
    value = trace.log_prob_sum().item()
    blr = BayesianLogisticRegression(X, y, prior_std)
    exact = blr.log_joint(w).item()
    if not math.isclose(value, exact, rel_tol=1e-6, abs_tol=1e-8):
        wrong_prior = BayesianLogisticRegression(X, y, 1.0).log_joint(w).item()
        flipped = BayesianLogisticRegression(X, 1 - y, prior_std).log_joint(w).item()
        if math.isclose(value, wrong_prior, rel_tol=1e-6):
            fail("the prior ignores prior_std: w ~ Normal(0, prior_std), one per weight")
        if math.isclose(value, BayesianLogisticRegression(X, y, prior_std**2).log_joint(w).item(), rel_tol=1e-6):
            fail("prior_std**2 is the variance; Normal takes the standard deviation: Normal(0, prior_std)")
        negated = blr.log_prior(w).item() + blr.log_likelihood(-w).item()
        if math.isclose(value, flipped, rel_tol=1e-6) or math.isclose(value, negated, rel_tol=1e-6):
            fail("the logits have the wrong sign: P(y = 1) = sigmoid(x . w), so Bernoulli(logits=X w)")
        fail(
            f"log p(y, w) at a test w is {fmt(value)}, expected {fmt(exact)} (the course's BayesianLogisticRegression)"
        )
    # vectorized particles: the same ELBO estimate as the reference model, on the same guide draws
    broadcast_hint = (
        "right for one draw of w, but not for a batch of particles: with vectorized particles w has "
        "shape (P, 1, D); compute the logits so that they broadcast, e.g. (w * X).sum(-1), which works "
        "for w of shape (D,) and (P, 1, D) (X @ w works only for the first)"
    )
    estimates = []
    for fn in (model, logistic_regression_model):
        pyro.clear_param_store()
        torch.manual_seed(0)
        loss = Trace_ELBO(num_particles=50, vectorize_particles=True, max_plate_nesting=1)
        try:
            estimates.append(loss.loss(fn, mean_field_guide, X, y, prior_std))
        except NotImplementedError:
            raise
        except Exception:
            pyro.clear_param_store()
            fail(broadcast_hint)
    pyro.clear_param_store()
    if not math.isclose(estimates[0], estimates[1], rel_tol=1e-6):
        fail(broadcast_hint)
    return "the same log p(y, w) as the course's model, with a plate, and it vectorizes over particles."


@checker("8.2", "a mean-field guide in Pyro")
def check_pyro_mean_field_guide(guide):
    import pyro

    X, y, prior_std = _problem()
    pyro.clear_param_store()
    sites = _sample_sites(_trace(guide, X, y, prior_std))
    store = pyro.get_param_store()
    missing = {"mean", "log_scale"} - set(store.keys())
    if missing:
        fail(
            f"no parameter named {sorted(missing)} in Pyro's store (found {sorted(store.keys()) or 'none'}): "
            "create them with pyro.param('mean', ...) and pyro.param('log_scale', ...)"
        )
    start_mean, start_log_scale = store["mean"].detach(), store["log_scale"].detach()
    if start_mean.shape != (3,) or start_log_scale.shape != (3,):
        fail(
            f"the parameters need one entry per weight, shape (D,) = (3,); got {tuple(start_mean.shape)} and "
            f"{tuple(start_log_scale.shape)}"
        )
    if not (torch.all(start_mean == 0) and torch.allclose(start_log_scale, torch.full_like(start_log_scale, -2.0))):
        fail("start the parameters where lesson 03 did: mean zeros(D), log_scale full((D,), -2.0)")
    if "w" not in sites:
        fail(
            f"no sample site named 'w' (found {sorted(sites) or 'none'}): the guide must draw the same site as the "
            "model, pyro.sample('w', ...)"
        )
    if set(sites) != {"w"} or sites["w"]["is_observed"]:
        fail("the guide draws only the latent site 'w' (no obs=, and no site for the data, which the model observes)")
    if sites["w"]["cond_indep_stack"]:
        fail(
            "'w' is drawn inside a plate in the guide but not in the model: the weights are one draw shared by all "
            "data points, so sample them outside any plate, as the model does"
        )
    # set the parameters to test values and look at the guide's distribution
    pyro.clear_param_store()
    mean, log_scale = torch.tensor([0.3, -1.0, 0.8], dtype=_F64), torch.tensor([-0.5, 0.2, -1.2], dtype=_F64)
    pyro.param("mean", mean.clone())
    pyro.param("log_scale", log_scale.clone())
    fn = _sample_sites(_trace(guide, X, y, prior_std))["w"]["fn"]
    pyro.clear_param_store()
    if tuple(fn.event_shape) != (3,):
        fail(f"the guide's event shape is {tuple(fn.event_shape)}, not (D,) as in the model: add .to_event(1)")
    if not torch.allclose(fn.mean.to(_F64), mean):
        fail(f"the guide's mean is {fn.mean.tolist()}, expected the parameter 'mean' {mean.tolist()}")
    sd = fn.stddev.to(_F64)
    if torch.allclose(sd, (2 * log_scale).exp()):
        fail("that standard deviation is exp(2 log_scale), the variance; the scale is exp(log_scale)")
    if torch.allclose(sd, (0.5 * log_scale).exp()):
        fail("log_scale is log sigma, not log sigma^2: the scale is exp(log_scale)")
    if not torch.allclose(sd, log_scale.exp()):
        fail(f"the guide's standard deviation is {[round(v, 4) for v in sd.tolist()]}, expected exp(log_scale)")
    if not fn.has_rsample:
        fail("the guide's distribution cannot be reparameterized; use a Normal")
    pyro.clear_param_store()
    pyro.param("mean", mean.clone())
    pyro.param("log_scale", log_scale.clone())
    fn = _sample_sites(_trace(guide, X, y, prior_std))["w"]["fn"]
    learner_backward(call_learner(fn.rsample).sum())
    store = pyro.get_param_store()
    grads = [store.get_param(name).grad for name in ("mean", "log_scale")]
    pyro.clear_param_store()
    if any(g is None or not torch.isfinite(g).all() or g.abs().sum() == 0 for g in grads):
        fail(
            "no gradient reaches the parameters 'mean' and 'log_scale' through the guide's draw: build the "
            "distribution from the pyro.param values themselves, without .detach()"
        )
    return (
        "q(w) = Normal(mean, exp(log_scale)).to_event(1), with parameters 'mean' and 'log_scale' at lesson 03's start."
    )
