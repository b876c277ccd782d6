r"""Checkers whose reference is in :mod:`helpers.pyro_bridge` (lesson 09, the Pyro appendix).

A Pyro model or guide is a program, so the checker runs it under ``pyro.poutine.trace`` and inspects the
recorded sample sites: their names, distributions, event shapes, observed values and plates, and the total log
density against the course's own :class:`helpers.logistic_regression.BayesianLogisticRegression` (9.1, 9.2)
and against :mod:`helpers.pyro_bridge`'s VAE programs (9.4, 9.5), where it also looks for the network
registered by ``pyro.module`` among the trace's parameter sites. The slips of a program are named from the
trace: a site inside or outside the wrong plate, a plate of the wrong size or a subsampled one (its log
densities rescaled), an event shape that counts the likelihood N times, a latent declared as a parameter, a
guide with per-image parameters instead of the encoder, logits passed through a sigmoid or given as ``probs``.
9.3, the SVI loop, is run on lesson 01's Normal-Normal model, with one batch per step and a parameter store
holding an earlier fit's values, and compared with :func:`helpers.pyro_bridge.train_svi` on the same random
numbers; the plausible loops that go wrong (no ``pyro.clear_param_store()``, ``evaluate_loss``, the same batch
every step, ...) are run the same way and named when the answer matches one of them. Pyro is imported inside
the checkers, so importing :mod:`helpers.checks` stays fast for the other lessons.
"""

import functools
import math
import re

import torch

from ..logistic_regression import BayesianLogisticRegression
from ._core import (
    Mistake,
    call_learner,
    checker,
    close,
    expect_gradient,
    fail,
    fmt,
    learner_backward,
    learner_grad,
)

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


_CRASH_HINTS = {
    "Expected parameter scale": "a Normal's scale must be positive: log_scale is log sigma (the encoder's second "
    "output is too), so the scale is exp(log_scale)",
    "Expected parameter probs": "probs= takes probabilities in [0, 1], and a logit (x . w, or the decoder's "
    "output) is any real number: pass it as logits=...",
    "support": "the images hold counts from 0 to vae.n_trials: score them with a Binomial of vae.n_trials trials "
    "whose logits are the decoder's output",
}
_PLATE_MISMATCH = re.compile(r"Shape mismatch inside plate\('[^']*'\) at site (\S+) dim -?\d+, (\d+) vs (\d+)")


def _crash_hint(text, size, size_name):
    """A hint for a crash a Pyro program typically has, or None. ``size``: the number of data points the data
    plate must hold, ``size_name`` how the lesson writes it (``"N = X.shape[0]"``)."""
    mismatch = _PLATE_MISMATCH.search(text)
    if mismatch:
        site, plate_size, batch = mismatch.group(1), int(mismatch.group(2)), int(mismatch.group(3))
        if plate_size != size and batch == size:
            return (
                f"the data plate has size {plate_size}, but there are {size_name} = {size} data points: the plate's "
                f"size is the number of data points, pyro.plate('data', {size_name.split(' = ')[1]})"
            )
        return (
            f"inside pyro.plate('data', {size_name.split(' = ')[1]}) the batch shape of '{site}' must be "
            f"({size_name.split(' = ')[0]},), one entry per data point; the coordinates of one draw (the L of z, "
            "the D pixels of x) are one vector-valued draw, so add .to_event(1)"
        )
    for words, hint in _CRASH_HINTS.items():
        if words in text:
            return hint
    return None


def _log_prob_sum(trace):
    """``trace.log_prob_sum()``, its error on one line (Pyro puts the cause on the second, after the site's name)."""
    try:
        return trace.log_prob_sum()
    except ValueError as exc:
        lines = str(exc).strip().splitlines()
        raise ValueError(" ".join(lines[:2]).split(", but found")[0]) from None


def _traced(fn, *args, data=None, log_prob=False, size=None):
    """``_trace`` (and the trace's log density), with a hint added to the crashes a Pyro program typically has.
    ``size``: ``(number of data points, how the lesson writes it)``, for the plate's size in the hint."""
    try:
        trace = _trace(fn, *args, data=data)
        return trace, (call_learner(_log_prob_sum, trace) if log_prob else None)
    except Mistake as exc:
        text = str(exc).split(", but found")[0]
        hint = _crash_hint(text, *(size or (0, "B = x.shape[0]")))
        if hint:
            fail(f"{text}; {hint}")
        raise


def _expect_unscaled(site, name):
    """A subsampled plate (``subsample_size=``) multiplies the site's log density by its full size over the
    subsample's: wrong where the program is given exactly the data points it scores."""
    scale = float(site["scale"])
    if scale != 1.0:
        fail(
            f"the log density of '{name}' is multiplied by {fmt(scale)}: your plate subsamples (subsample_size=), "
            "which rescales each term by the full size over the subsample's; this program is given exactly the "
            "data points it scores, so the plate's size is their number, with no subsample_size"
        )


def _base_name(fn):
    """The name of the distribution under ``.to_event`` / ``Independent`` / ``.expand``."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__


@checker("9.1", "Bayesian logistic regression as a Pyro model")
def check_pyro_logistic_model(model):
    import pyro
    from pyro.infer import Trace_ELBO

    from ..pyro_bridge import logistic_regression_model, mean_field_guide

    X, y, prior_std = _problem()
    N = X.shape[0]
    w = torch.tensor([0.4, -1.1, 0.7], dtype=_F64)
    pyro.clear_param_store()
    trace, value = _traced(model, X, y, prior_std, data={"w": w}, log_prob=True, size=(N, "N = X.shape[0]"))
    pyro.clear_param_store()
    sites = _sample_sites(trace)
    if "w" not in sites:
        if trace.nodes.get("w", {}).get("type") == "param":
            fail(
                "'w' is a pyro.param: a parameter is fitted without a prior, as a point; the weights are a latent "
                "variable with the prior N(0, prior_std^2 I), drawn with pyro.sample('w', ...)"
            )
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
    if sites["w"]["cond_indep_stack"]:
        fail(
            "'w' is drawn inside the data plate: the weights are one draw shared by all N labels (a global latent), "
            "but inside pyro.plate('data', N) its prior counts once per label, N times; draw w before the plate"
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
    if tuple(sites["y"]["fn"].event_shape):
        fail(
            f"'y' has event shape {tuple(sites['y']['fn'].event_shape)} inside the plate: each entry of "
            "pyro.plate('data', N) is one label, so the labels' distribution has batch shape (N,) and no "
            ".to_event; with .to_event(1) every entry scores all N labels, and the log-likelihood counts N times"
        )
    _expect_unscaled(sites["y"], "y")
    value = value.item()
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
        squashed = torch.distributions.Bernoulli(logits=torch.sigmoid(X @ w)).log_prob(y).sum()
        if math.isclose(value, blr.log_prior(w).item() + squashed.item(), rel_tol=1e-6):
            fail(
                "the logits went through a sigmoid: logits=sigmoid(x . w) is P(y = 1) passed as a logit; the "
                "logit is x . w itself, Bernoulli(logits=...) applies the sigmoid"
            )
        fail(
            f"log p(y, w) at a test w is {fmt(value)}, expected {fmt(exact)} (the course's BayesianLogisticRegression)"
        )
    # vectorized particles: the same ELBO estimate as the reference model, on the same guide draws
    broadcast_hint = (
        "right for one draw of w, but not for a batch of particles: with vectorized particles w has "
        "shape (P, 1, D); compute the logits so that they broadcast: x_n . w as the sum over the last axis of "
        "an elementwise product works for w of shape (D,) and (P, 1, D) (a matrix-vector product X @ w works only "
        "for the first)"
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


@checker("9.2", "a mean-field guide in Pyro")
def check_pyro_mean_field_guide(guide):
    import pyro

    X, y, prior_std = _problem()
    pyro.clear_param_store()
    sites = _sample_sites(_traced(guide, X, y, prior_std, size=(X.shape[0], "N = X.shape[0]"))[0])
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
            f"no sample site named 'w' (found {sorted(sites) or 'none'}): Pyro pairs the guide's draws with the "
            "model's by name, so the guide must draw the model's site, pyro.sample('w', ...)"
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
    fn = _sample_sites(_traced(guide, X, y, prior_std, size=(X.shape[0], "N = X.shape[0]"))[0])["w"]["fn"]
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
    if torch.allclose(sd, torch.nn.functional.softplus(log_scale)):
        fail(
            "softplus(log_scale) is another parameterisation (AutoNormal's); this guide's parameter is log sigma, "
            "as in lesson 03, so the scale is exp(log_scale)"
        )
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


# ------------------------------------------------------------ 9.3: the SVI training loop


def _svi_problem():
    """Six steps of SVI on lesson 01's Normal-Normal model, a new batch of 5 (float32) at each step."""
    x = torch.tensor(
        [
            [1.9, -0.4, 0.8, 2.6, 0.1],
            [0.3, 1.2, -1.1, 0.9, 1.7],
            [2.2, 0.5, 1.4, -0.2, 0.6],
            [-0.8, 1.0, 2.9, 1.3, 0.4],
            [0.7, 1.8, 0.2, -0.5, 2.1],
            [1.1, 0.0, 1.6, 0.8, -0.3],
        ]
    )
    return [(batch, 0.5, 2.0, 1.5) for batch in x]  # (x, prior_mean, prior_std, noise_std)


def _trained(train, *args):
    """Run ``train(*args)`` and read what it leaves: ``(its output, Pyro's parameter store, swapped)``.

    The checker reads the parameter store and Pyro's warnings through this function's return value, never
    directly: called through :func:`call_learner`, all of it is recorded in the grading kernel and answered
    from the record in the grader's replay, where the learner's loop never runs and the store holds only
    the checker's own values. ``swapped``: Pyro warned that the guide has a site the model lacks (the
    model and the guide were passed the other way round).
    """
    import warnings

    import pyro

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = train(*args)
    store = {name: value.detach().clone() for name, value in pyro.get_param_store().items()}
    return out, store, any("in guide but not model" in str(w.message) for w in caught)


def _svi_fit(train, stale=True):
    """Run ``train(model, guide, optimizer, loss, data)`` on the checker's problem, from a store holding an
    earlier fit's values (``stale``); whatever ``train`` returns (``_trained``'s triple)."""
    import pyro
    from pyro.infer import Trace_ELBO

    from ..pyro_bridge import normal_guide, normal_normal_model

    pyro.clear_param_store()
    if stale:  # what an earlier fit would leave in the store
        pyro.param("q_mean", torch.tensor(3.0))
        pyro.param("q_log_scale", torch.tensor(-1.0))
    torch.manual_seed(5)
    optimizer = pyro.optim.Adam({"lr": 0.1})  # fresh: a pyro.optim optimiser keeps its state per parameter
    loss = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    try:
        return train(normal_normal_model, normal_guide, optimizer, loss, _svi_problem())
    finally:
        pyro.clear_param_store()


def _svi_run(train):
    """``(losses, store, swapped)`` of ``train`` (the reference or a plausible mistake), run like the answer."""
    return _svi_fit(functools.partial(_trained, train))


def _svi_variants():
    """The losses of the plausible mistakes, each run like the answer (same seed, same stale store)."""
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    def loop(clear=True, clear_each=False, first_only=False, evaluate=False, twice=False, default_loss=False):
        def train(model, guide, optimizer, loss, data):
            if clear:
                pyro.clear_param_store()
            svi = SVI(model, guide, optimizer, Trace_ELBO() if default_loss else loss)
            losses = []
            for args in data:
                if clear_each:
                    pyro.clear_param_store()
                args = data[0] if first_only else args
                if twice:
                    svi.step(*args)
                losses.append(svi.evaluate_loss(*args) if evaluate else svi.step(*args))
            return losses

        return train

    return {
        "the first losses come from parameters left in Pyro's store by an earlier fit: start with "
        "pyro.clear_param_store(), so that every fit starts from the guide's initial values": loop(clear=False),
        "you clear the parameter store at every step, so each step starts again from the initial values: "
        "clear it once, before the loop": loop(clear_each=True),
        "every step uses the arguments data[0]: step t must use data[t] (for the VAE, a new batch at each step)": loop(
            first_only=True
        ),
        "svi.evaluate_loss only estimates the loss; svi.step estimates it, takes its gradient and updates the "
        "parameters": loop(evaluate=True),
        "you call svi.step twice per element of data: one step per element, and return the loss that step "
        "returns": loop(twice=True),
        "the losses are not those of the loss you are given (here Trace_ELBO with 2 vectorized particles): pass "
        "`loss` to SVI, not a new estimator": loop(default_loss=True),
    }


def _same_store(store, other):
    return set(store) == set(other) and all(close(store[k], other[k], rtol=1e-5, atol=1e-6) for k in store)


def _as_losses(out, T):
    """The learner's losses as a float64 vector of length T, or a diagnosis."""
    if out is None:
        fail("your function returned None; return the list of the losses that svi.step returns, one per step")
    if isinstance(out, (int, float)) or (isinstance(out, torch.Tensor) and out.dim() == 0):
        fail(f"your function returned one number; return the list of all {T} losses, one per step")
    try:
        values = torch.as_tensor([float(v) for v in out], dtype=_F64)
    except Exception:
        fail(f"your function returned a {type(out).__name__}; return a list of {T} floats, the losses of the steps")
    if len(values) != T:
        fail(f"your function returned {len(values)} losses for {T} steps: one svi.step for each element of data")
    return values


@checker("9.3", "the SVI training loop")
def check_train_svi(train_svi):
    import warnings

    from ..pyro_bridge import train_svi as reference

    T = len(_svi_problem())
    try:
        # the learner's loop and everything the checker reads after it (the store, Pyro's warnings) cross in one
        # call, so the grader's replay sees what the loop left (see _trained)
        out, store, swapped = _svi_fit(lambda *args: call_learner(functools.partial(_trained, train_svi), *args))
    except Mistake as exc:
        if "'tuple' object" in str(exc):
            fail(f"{exc}; each element of data is a tuple of arguments: svi.step(*args) passes them one by one")
        raise
    if swapped:
        fail(
            "the model and the guide are swapped: SVI(model, guide, optimizer, loss) takes the model first "
            "(yours runs the guide as the model)"
        )
    losses = _as_losses(out, T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, want_store, _ = _svi_run(reference)
        want = torch.tensor(want, dtype=_F64)
        if not close(losses, want, rtol=1e-5, atol=1e-6):
            if close(losses, -want, rtol=1e-5, atol=1e-6):
                fail(
                    "these are ELBO estimates; svi.step returns the loss, minus the ELBO estimate: return it as "
                    "it is (the notebook negates it where it needs the ELBO)"
                )
            for message, variant in _svi_variants().items():
                wrong, wrong_store, _ = _svi_run(variant)
                if close(losses, torch.tensor(wrong, dtype=_F64), rtol=1e-5, atol=1e-6) and _same_store(
                    store, wrong_store
                ):
                    fail(message)
            if math.isclose(losses[0], want[0], rel_tol=1e-5):
                fail(
                    f"the first loss is right but the later ones are not (step 2: expected {fmt(want[1])}, got "
                    f"{fmt(losses[1])}): the updates differ; let SVI update the parameters with the optimizer you "
                    "are given"
                )
            fail(
                f"the losses do not match SVI's (step 1: expected {fmt(want[0])}, got {fmt(losses[0])}): one "
                "svi.step(*args) per element of data, with the model, guide, optimizer and loss you are given"
            )
    if set(store) != set(want_store):
        fail(
            f"the parameters in Pyro's store after training are {sorted(store) or 'none'}, expected "
            f"{sorted(want_store)}: leave the trained parameters in the store (later cells read them with pyro.param)"
        )
    for name, value in want_store.items():
        if not close(store[name], value, rtol=1e-5, atol=1e-6):
            fail(f"the losses are right but the trained parameter {name!r} is not: leave the store as SVI left it")
    return f"the same {T} losses and trained parameters as SVI, from a fresh parameter store, one step per batch."


# ------------------------------------------------------------ 9.4 and 9.5: the VAE's model and guide


def _vae_problems():
    """Two small VAEs (float32, as in the lesson) with batches of counts: (vae, x), with other D, L, n and B."""
    from ..vae import VAE

    problems = []
    for D, L, n, B in ((6, 2, 16, 3), (4, 3, 5, 5)):
        vae = VAE(D=D, L=L, hidden=(8,), n_trials=n)
        torch.nn.init.normal_(vae.encoder.net[-1].weight, std=0.4)  # away from the prior, so mistakes show
        torch.nn.init.normal_(vae.encoder.net[-1].bias, std=0.4)
        problems.append((vae, torch.randint(0, n + 1, (B, D)).float()))
    return problems


def _registered(trace, module):
    """The names under which ``module``'s parameters were registered (param sites holding them)."""
    mine = {id(p) for p in module.parameters()}
    return [name for name, site in trace.nodes.items() if site["type"] == "param" and id(site["value"]) in mine]


def _expect_data_plate(site, name, B):
    frames = site["cond_indep_stack"]
    if not frames:
        fail(
            f"'{name}' is not inside a plate: each image has its own {name} and the images are independent, so "
            f"draw it inside pyro.plate('data', B), B = x.shape[0]"
        )
    frame = frames[0]
    if frame.name != "data":
        fail(f"'{name}' is in a plate named {frame.name!r}; name it 'data', the same plate in the model and the guide")
    if frame.size != B:
        fail(f"the data plate has size {frame.size}, but the batch has B = x.shape[0] = {B} images")
    if frame.dim != -1:
        fail(
            f"the data plate is at dim {frame.dim}: the images are the last batch axis, since the {name} of one "
            "image is one vector-valued draw; use pyro.plate('data', B) (dim -1) and .to_event(1)"
        )
    _expect_unscaled(site, name)


def _expect_networks(trace, vae, own, other, role):
    registered = _registered(trace, getattr(vae, own))
    if not registered:
        fail(
            f"the {own}'s weights are not in Pyro's parameter store: register the {own} with pyro.module(...) in "
            f"the {role}; SVI trains only what the store holds, so the {own} would never be trained"
        )
    if _registered(trace, getattr(vae, other)):
        fail(
            f"the {role} registers the {other}'s weights too: the {role} uses only the {own} (pyro.module of "
            f"vae.{own}, not of the whole vae), the {'guide' if role == 'model' else 'model'} registers the {other}"
        )
    prefix = registered[0].split("$$$")[0]
    if prefix == other:
        fail(
            f"the {own} is registered under the name {other!r}, the name of the {other}'s registration: give it its "
            f"own name, pyro.module({own!r}, vae.{own}), or the two networks share parameter names in the store"
        )


def _elbo_loss(model, guide, vae, x):
    import pyro
    from pyro.infer import Trace_ELBO

    pyro.clear_param_store()
    torch.manual_seed(11)
    with torch.no_grad():
        value = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, vae, x)
    pyro.clear_param_store()
    return value


def _expect_vectorized(model, guide, vae, x, which):
    from ..pyro_bridge import vae_guide, vae_model

    try:
        got = call_learner(_elbo_loss, model, guide, vae, x)
    except Mistake:
        fail(
            f"the {which} is right for one draw of z, but Trace_ELBO(vectorize_particles=True) fails on it: with "
            "P particles z has shape (P, B, L); build the distributions from shapes that broadcast (the data plate "
            "supplies the batch axis)"
        )
    want = _elbo_loss(vae_model, vae_guide, vae, x)
    if not math.isclose(got, want, rel_tol=1e-4):
        fail(
            f"the {which} is right for one draw of z, but not with vectorized particles (z of shape (P, B, L)): "
            f"Trace_ELBO gives {fmt(got)}, expected {fmt(want)}"
        )


@checker("9.4", "the VAE's model in Pyro")
def check_pyro_vae_model(vae_model):
    import pyro
    from pyro import poutine

    from ..pyro_bridge import vae_guide
    from ..pyro_bridge import vae_model as reference

    for k, (vae, x) in enumerate(_vae_problems()):
        B, L, D = x.shape[0], vae.L, vae.D
        z = torch.randn(B, L)
        pyro.clear_param_store()
        trace, value = _traced(vae_model, vae, x, data={"z": z}, log_prob=True, size=(B, "B = x.shape[0]"))
        pyro.clear_param_store()
        sites = _sample_sites(trace)
        if "z" not in sites:
            fail(
                f"no sample site named 'z' (found {sorted(sites) or 'none'}): the guide draws 'z', and the model "
                "must use the same name"
            )
        if "x" not in sites:
            fail(
                f"no sample site named 'x' (found {sorted(sites)}): score the images with pyro.sample('x', ..., obs=x)"
            )
        if not sites["x"]["is_observed"]:
            fail("the images are not observed: pass obs=x to pyro.sample('x', ...)")
        if not torch.equal(torch.as_tensor(sites["x"]["value"]).float(), x):
            fail("the observed value of 'x' is not the batch x: pass obs=x")
        for name in ("z", "x"):
            _expect_data_plate(sites[name], name, B)
        for name, size in (("z", L), ("x", D)):
            shape = tuple(sites[name]["fn"].event_shape)
            if shape != (size,):
                fail(
                    f"'{name}' has event shape {shape}, not ({'L' if name == 'z' else 'D'},) = ({size},): the "
                    f"{size} {'coordinates of z' if name == 'z' else 'pixels of an image'} are one vector-valued "
                    "draw; add .to_event(1)"
                )
        _expect_networks(trace, vae, "decoder", "encoder", "model")
        prior_mean, prior_sd = call_learner(lambda fn=sites["z"]["fn"]: (fn.mean.detach(), fn.stddev.detach()))
        if not (torch.all(prior_mean == 0) and torch.allclose(prior_sd, torch.ones_like(prior_sd))):
            fail(
                f"the prior of z has mean {fmt(prior_mean.flatten()[0])} and standard deviation "
                f"{fmt(prior_sd.flatten()[0])} (first coordinate): the VAE's prior is N(0, I_L), mean 0 and "
                "standard deviation 1"
            )
        family = _base_name(sites["x"]["fn"])
        if family != "Binomial":
            fail(
                f"the images are scored with a {family}: they hold counts from 0 to vae.n_trials, lesson 05's "
                "likelihood is a Binomial of vae.n_trials trials whose logits are the decoder's output"
            )
        want_trace = poutine.trace(poutine.condition(reference, data={"z": z})).get_trace(vae, x)
        pyro.clear_param_store()
        want = want_trace.log_prob_sum()
        if not math.isclose(value.item(), want.item(), rel_tol=1e-5):
            with torch.no_grad():
                fixed_n = torch.distributions.Binomial(16, logits=vae.decoder(z)).log_prob(x).sum()
                fixed_n = fixed_n + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
                squashed = torch.distributions.Binomial(vae.n_trials, logits=torch.sigmoid(vae.decoder(z)))
                squashed = squashed.log_prob(x).sum() + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
            if vae.n_trials != 16 and math.isclose(value.item(), fixed_n.item(), rel_tol=1e-5):
                fail(f"the number of trials is vae.n_trials (here {vae.n_trials}), not 16")
            if math.isclose(value.item(), squashed.item(), rel_tol=1e-5):
                fail(
                    "the logits went through a sigmoid: the decoder's output is already the logit, and "
                    "Binomial(..., logits=...) applies the sigmoid itself"
                )
            fail(
                f"log p(x, z) at a test z is {fmt(value.item())}, expected {fmt(want)}: z ~ N(0, I_L) and "
                "x_d | z ~ Binomial(vae.n_trials, logits = decoder(z)_d)"
            )
        params = list(vae.decoder.parameters())
        if not value.requires_grad:
            fail(
                "log p(x, z) is right but no gradient reaches the decoder's weights: compute the logits with "
                "vae.decoder(z), without .detach(), so that SVI can train the decoder"
            )
        got_grads = learner_grad(value, params)
        want_grads = torch.autograd.grad(want, params, allow_unused=True)
        for g, w in zip(got_grads, want_grads, strict=True):
            if g is None or not close(g, w, rtol=1e-4, atol=1e-5):
                fail(
                    "the value is right but no (or the wrong) gradient reaches the decoder's weights: compute the "
                    "logits with vae.decoder(z), without .detach()"
                )
        if k == 0:
            _expect_vectorized(vae_model, vae_guide, vae, x, "model")
    return "the same log p(x, z) as the course's VAE, the decoder in the parameter store, vectorizes over particles."


@checker("9.5", "the VAE's amortized guide in Pyro")
def check_pyro_vae_guide(vae_guide):
    import pyro
    from pyro import poutine

    from ..pyro_bridge import vae_guide as reference
    from ..pyro_bridge import vae_model

    for k, (vae, x) in enumerate(_vae_problems()):
        B, L = x.shape[0], vae.L
        pyro.clear_param_store()
        torch.manual_seed(3)
        trace, _ = _traced(vae_guide, vae, x, size=(B, "B = x.shape[0]"))
        pyro.clear_param_store()
        sites = _sample_sites(trace)
        if "z" not in sites:
            fail(
                f"no sample site named 'z' (found {sorted(sites) or 'none'}): the guide draws the model's latent "
                "site, by the same name, 'z'"
            )
        if set(sites) != {"z"} or sites["z"]["is_observed"]:
            fail(
                f"the guide draws only the latent 'z' (found {sorted(sites)}): no obs=, and no site for the "
                "images, which the model observes"
            )
        _expect_data_plate(sites["z"], "z", B)
        fn = sites["z"]["fn"]
        if tuple(fn.event_shape) != (L,):
            fail(
                f"'z' has event shape {tuple(fn.event_shape)}, not (L,) = ({L},) as in the model: the L coordinates "
                "are one vector-valued draw; add .to_event(1)"
            )
        networks = {id(p) for p in vae.parameters()}
        own = [n for n, site in trace.nodes.items() if site["type"] == "param" and id(site["value"]) not in networks]
        if own:
            fail(
                f"the guide has variational parameters of its own, {sorted(own)}: one mean and scale per image is "
                "lesson 03's non-amortized guide, which needs new parameters for every new image; amortized, "
                "q(z_b | x_b) comes from the encoder, mean, log_scale = vae.encoder(x)"
            )
        _expect_networks(trace, vae, "encoder", "decoder", "guide")
        with torch.no_grad():
            mean, log_scale = vae.encoder(x)
        got_mean, got_sd = call_learner(lambda fn=fn: (fn.mean.detach(), fn.stddev.detach()))
        if close(got_mean, log_scale, rtol=1e-5, atol=1e-6) and close(got_sd, mean.exp(), rtol=1e-5, atol=1e-6):
            fail("the mean and the scale are swapped: the encoder returns (mean, log_scale), in that order")
        if not close(got_mean, mean, rtol=1e-5, atol=1e-6):
            fail("the mean of q(z | x) is not the encoder's first output: mean, log_scale = vae.encoder(x)")
        for wrong, message in (
            (log_scale, "the scale is log_scale itself; the encoder returns log sigma, so the scale is exp(log_scale)"),
            ((2 * log_scale).exp(), "that scale is exp(2 log_scale), the variance; the scale is exp(log_scale)"),
            ((0.5 * log_scale).exp(), "the encoder returns log sigma, not log sigma^2: the scale is exp(log_scale)"),
            (
                torch.nn.functional.softplus(log_scale),
                "softplus(log_scale) is another parameterisation; the encoder's second output is log sigma, "
                "so the scale is exp(log_scale)",
            ),
            (
                torch.ones_like(log_scale),
                "the scale is fixed at 1: q(z | x)'s standard deviations come from the encoder too, exp(log_scale)",
            ),
        ):
            if close(got_sd, wrong, rtol=1e-5, atol=1e-6):
                fail(message)
        if not close(got_sd, log_scale.exp(), rtol=1e-5, atol=1e-6):
            fail(f"the standard deviations of q(z | x) are not exp(log_scale) (first: {fmt(got_sd.flatten()[0])})")
        if not fn.has_rsample:
            fail("q(z | x) cannot be reparameterized; use a Normal")
        # the draw is mean + sd * eps: the same as the reference's on the same noise, with its gradients
        pyro.clear_param_store()
        torch.manual_seed(3)
        want = poutine.trace(reference).get_trace(vae, x).nodes["z"]["value"]
        pyro.clear_param_store()
        got = sites["z"]["value"]
        if not close(got, want, rtol=1e-5, atol=1e-6):
            fail("the draw of z is not mean + exp(log_scale) * eps on the same noise eps: draw it with pyro.sample")
        params = list(vae.encoder.parameters())
        expect_gradient(got, params, want, [f"the encoder's {n}" for n, _ in vae.encoder.named_parameters()])
        if k == 0:
            _expect_vectorized(vae_model, vae_guide, vae, x, "guide")
    return "q(z | x) = Normal(mean, exp(log_scale)) from the encoder, in the data plate, the encoder in the store."
