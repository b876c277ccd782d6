"""Checkers for lesson 02's CAVI on the Normal-Gamma model (2.1 to 2.3).

Reference: :class:`helpers.normal_gamma.NormalGamma` (Bishop 10.1.3). Each mistake in the tables below is a
value the learner's answer is compared with, so the message can name it.
"""

import math

import torch

from ..normal_gamma import NormalGamma
from ._core import (
    as_tensor_tuple,
    call_learner,
    checker,
    close,
    diagnose,
    expect_finite,
    expect_shape,
    fail,
    flat,
    fmt,
)

_F64 = torch.float64


def _normal_gamma_problem():
    model = NormalGamma(mu0=0.5, lambda0=2.0, a0=2.0, b0=1.5)
    x = torch.tensor([1.2, -0.3, 2.2, 0.9, 1.5, 0.1, 1.1], dtype=_F64)
    return model, x


@checker("2.1", "CAVI update of q(mu)")
def check_update_q_mu(update_q_mu):
    model, x = _normal_gamma_problem()
    N, xbar = x.numel(), x.mean()
    for E_tau in (torch.tensor(0.8, dtype=_F64), torch.tensor(3.0, dtype=_F64)):
        mu_N, lam_N = as_tensor_tuple(call_learner(update_q_mu, x, E_tau, model), ("mu_N", "lambda_N"))
        for value, name in ((mu_N, "mu_N"), (lam_N, "lambda_N")):
            expect_shape(value, (), f" (for {name}: return 0-d tensors)")
            expect_finite(value)
        ref_mu, ref_lam = model.update_q_mu(x, E_tau)
        diagnose(
            flat(mu_N, lam_N),
            flat(ref_mu, ref_lam),
            {
                "lambda_N must include E[tau]: lambda_N = (lambda0 + N) E[tau]": flat(ref_mu, model.lambda0 + N),
                "lambda_N misses the prior's lambda0: lambda_N = (lambda0 + N) E[tau]": flat(ref_mu, N * E_tau),
                "mu_N ignores the prior: mu_N = (lambda0 mu0 + N xbar) / (lambda0 + N)": flat(xbar, ref_lam),
                "returns the variance 1/lambda_N; return the precision lambda_N": flat(ref_mu, 1 / ref_lam),
                "mu_N should not depend on E[tau]; it is (lambda0 mu0 + N xbar) / (lambda0 + N)": flat(
                    (model.lambda0 * model.mu0 + N * xbar) / ((model.lambda0 + N) * E_tau), ref_lam
                ),
                (
                    "the prior precision is lambda0 tau, so E[tau] "
                    "multiplies lambda0 too: lambda_N = (lambda0 + N) E[tau]"
                ): flat(ref_mu, model.lambda0 + N * E_tau),
                "the tuple is swapped: return (mu_N, lambda_N), the mean first": flat(ref_lam, ref_mu),
                "mu_N needs the sum N xbar = sum_i x_i, not the mean xbar: mu_N = (lambda0 mu0 + N xbar) / "
                "(lambda0 + N)": flat((model.lambda0 * model.mu0 + xbar) / (model.lambda0 + N), ref_lam),
            },
            context=f" (at E[tau] = {float(E_tau):g})",
            labels=["mu_N", "lambda_N"],
        )
    return "matches the update of q(mu) for two values of E[tau]."


@checker("2.2", "CAVI update of q(tau)")
def check_update_q_tau(update_q_tau):
    model, x = _normal_gamma_problem()
    N, xbar = x.numel(), x.mean()
    for mu_N, lam_N in ((1.1, 12.0), (-0.4, 2.5)):
        mu_N, lam_N = torch.tensor(mu_N, dtype=_F64), torch.tensor(lam_N, dtype=_F64)
        a_N, b_N = as_tensor_tuple(call_learner(update_q_tau, x, mu_N, lam_N, model), ("a_N", "b_N"))
        for value, name in ((a_N, "a_N"), (b_N, "b_N")):
            expect_shape(value, (), f" (for {name}: return 0-d tensors)")
            expect_finite(value)
        ref_a, ref_b = model.update_q_tau(x, mu_N, lam_N)
        prior_term = 0.5 * model.lambda0 * ((mu_N - model.mu0) ** 2 + 1 / lam_N)
        diagnose(
            flat(a_N, b_N),
            flat(ref_a, ref_b),
            {
                "a_N = a0 + (N + 1)/2: the prior on mu contributes another 1/2": flat(model.a0 + N / 2, ref_b),
                "b_N misses the spread of q(mu): E[(x_i - mu)^2] = (x_i - mu_N)^2 + 1/lambda_N, and likewise "
                "for (mu - mu0)^2": flat(ref_a, ref_b - 0.5 * (N + model.lambda0) / lam_N),
                (
                    "b_N misses the spread of q(mu) in the likelihood "
                    "term: E[(x_i - mu)^2] = (x_i - mu_N)^2 + 1/lambda_N"
                ): flat(ref_a, ref_b - 0.5 * N / lam_N),
                "b_N misses the prior term lambda0 E[(mu - mu0)^2]": flat(ref_a, ref_b - prior_term),
                "b_N misses the factor 1/2 in front of the expected squares": flat(ref_a, 2 * ref_b - model.b0),
                "b_N misses the prior rate b0": flat(ref_a, ref_b - model.b0),
                "the prior's term is lambda0 E[(mu - mu0)^2] = lambda0 ((mu_N - mu0)^2 + 1/lambda_N): "
                "its 1/lambda_N needs the factor lambda0 too": flat(ref_a, ref_b - 0.5 * (model.lambda0 - 1) / lam_N),
                "the prior's squared term needs its factor lambda0: lambda0 E[(mu - mu0)^2]": flat(
                    ref_a, ref_b - 0.5 * (model.lambda0 - 1) * ((mu_N - model.mu0) ** 2 + 1 / lam_N)
                ),
                "returns 1/b_N; torch's Gamma(a, b) and this update use the rate b_N": flat(ref_a, 1 / ref_b),
                "use mu_N, the mean of q(mu), in the expected squares (x_i - mu_N)^2, not the data mean xbar": flat(
                    ref_a, ref_b + 0.5 * (((x - xbar) ** 2).sum() - ((x - mu_N) ** 2).sum())
                ),
                "the tuple is swapped: return (a_N, b_N), the shape first": flat(ref_b, ref_a),
                "the likelihood's expected squares are summed over the N data points, not averaged": flat(
                    ref_a, ref_b - 0.5 * (1 - 1 / N) * (((x - mu_N) ** 2).sum() + N / lam_N)
                ),
            },
            context=f" (at mu_N = {float(mu_N):g}, lambda_N = {float(lam_N):g})",
            labels=["a_N", "b_N"],
        )
    return "matches the update of q(tau) for two settings of q(mu)."


def _elbo_terms(model, x, mu_N, lambda_N, a_N, b_N):
    """The five terms of :meth:`NormalGamma.mean_field_elbo` (its docstring's sum), for naming a missing one."""
    N = x.numel()
    E_tau, E_log_tau = a_N / b_N, torch.digamma(a_N) - torch.log(b_N)
    log_2pi = math.log(2 * math.pi)
    return {
        "E[log p(x | mu, tau)]": 0.5 * N * (E_log_tau - log_2pi)
        - 0.5 * E_tau * (((x - mu_N) ** 2).sum() + N / lambda_N),
        "E[log p(mu | tau)]": 0.5 * (math.log(model.lambda0) + E_log_tau - log_2pi)
        - 0.5 * model.lambda0 * E_tau * ((mu_N - model.mu0) ** 2 + 1 / lambda_N),
        "E[log p(tau)]": model.a0 * math.log(model.b0)
        - math.lgamma(model.a0)
        + (model.a0 - 1) * E_log_tau
        - model.b0 * E_tau,
        "the entropy H[q(mu)]": 0.5 * (1 + log_2pi - torch.log(lambda_N)),
        "the entropy H[q(tau)]": a_N - torch.log(b_N) + torch.lgamma(a_N) + (1 - a_N) * torch.digamma(a_N),
    }


def _same(a, b):
    return close(torch.as_tensor(a, dtype=_F64), torch.as_tensor(b, dtype=_F64), rtol=1e-9, atol=1e-12)


def _sweeps_from_log(log, x, model, a0, b0, context):
    """Replay the order and the arguments of the learner's update calls; name a wrong order or a stale factor.

    ``log`` holds ``("mu", E_tau, (mu_N, lambda_N))`` and ``("tau", (mu_N, lambda_N), (a_N, b_N))`` in call order.
    Returns the factors after each sweep, ``[(mu_N, lambda_N, a_N, b_N), ...]``.
    """
    kinds = [event[0] for event in log]
    if kinds != ["mu", "tau"] * (len(kinds) // 2):
        fail(
            "the updates do not alternate: each sweep calls update_q_mu once, then update_q_tau once, in that order "
            f"(your loop called them in the order {', '.join(kinds[:6])}{', ...' if len(kinds) > 6 else ''})" + context
        )
    a_N, b_N = a0, b0
    previous_mu, previous_tau = None, [(a0, b0)]
    sweeps = []
    for k in range(len(log) // 2):
        (_, E_tau, (mu_N, lambda_N)), (_, given, (a_new, b_new)) = log[2 * k], log[2 * k + 1]
        sweep = f" in sweep {k + 1}{context}"
        if not _same(E_tau, a_N / b_N):
            if _same(E_tau, b_N / a_N):
                fail("E[tau] under Gamma(a_N, b_N) (shape, rate) is a_N / b_N, not b_N / a_N" + sweep)
            if _same(E_tau, a_N):
                fail("pass E[tau] = a_N / b_N to update_q_mu, not a_N alone" + sweep)
            if _same(E_tau, 1 / b_N):
                fail(
                    "pass E[tau] = a_N / b_N to update_q_mu, not 1 / b_N (the mean of a Gamma has the shape on top)"
                    + sweep
                )
            if any(_same(E_tau, a / b) for a, b in previous_tau[:-1]):
                fail(
                    "stale E[tau]: update_q_mu got E[tau] of an earlier q(tau), not of the one just updated; "
                    "compute E[tau] = a_N / b_N from the latest (a_N, b_N) inside the loop, in every sweep" + sweep
                )
            if k == 0:
                fail(
                    f"the loop ignores its starting point a_N, b_N: the first update of q(mu) takes E[tau] = a_N / b_N "
                    f"= {fmt(a_N / b_N)} of the start it is given, yours got {fmt(E_tau)}" + sweep
                )
            fail(
                f"update_q_mu got E[tau] = {fmt(E_tau)}, but the current q(tau) = Gamma(a_N, b_N) has "
                f"E[tau] = a_N / b_N = {fmt(a_N / b_N)}" + sweep
            )
        if not (_same(given[0], mu_N) and _same(given[1], lambda_N)):
            if _same(given[0], lambda_N) and _same(given[1], mu_N):
                fail("update_q_tau takes (x, mu_N, lambda_N, model): mu_N and lambda_N are swapped" + sweep)
            if previous_mu is not None and _same(given[0], previous_mu[0]) and _same(given[1], previous_mu[1]):
                fail(
                    "stale q(mu): update_q_tau got the previous sweep's (mu_N, lambda_N); update q(tau) from the "
                    "q(mu) just computed in the same sweep (that is what makes each step a coordinate ascent step)"
                    + sweep
                )
            fail("update_q_tau must get the (mu_N, lambda_N) that update_q_mu just returned, unchanged" + sweep)
        previous_mu = (mu_N, lambda_N)
        a_N, b_N = a_new, b_new
        previous_tau.append((a_N, b_N))
        sweeps.append((mu_N, lambda_N, a_N, b_N))
    return sweeps


def _check_trace(trace, sweeps, x, model, a0, b0, context):
    """Each value of the trace must be the ELBO of the factors after its sweep; name what it is instead."""
    after = [model.mean_field_elbo(x, *factors) for factors in sweeps]
    if len(sweeps) > 1 and not _same(trace[-1], after[-1]) and _same(trace[1:], torch.stack(after[:-1])):
        fail(
            "the ELBO is recorded before the sweep's updates (the previous sweep's factors), so the last sweep's "
            "is missing; record it after both updates" + context
        )
    for k, (mu_N, lambda_N, a_N, b_N) in enumerate(sweeps):
        want = model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)
        got = trace[k]
        if _same(got, want):
            continue
        where = f" (the ELBO of sweep {k + 1}{context})"
        a_before, b_before = (a0, b0) if k == 0 else sweeps[k - 1][2:]
        terms = _elbo_terms(model, x, mu_N, lambda_N, a_N, b_N)
        wrong = {
            "record the ELBO after both updates of the sweep: yours was taken between them, with the new q(mu) and "
            "the previous q(tau)": model.mean_field_elbo(x, mu_N, lambda_N, a_before, b_before),
            "the trace holds the negative ELBO; record the ELBO itself (the cell below asserts it never "
            "decreases)": -want,
            "model.mean_field_elbo takes (x, mu_N, lambda_N, a_N, b_N): a_N and b_N are swapped": (
                model.mean_field_elbo(x, mu_N, lambda_N, b_N, a_N)
            ),
            "model.mean_field_elbo takes (x, mu_N, lambda_N, a_N, b_N): pass the precision lambda_N, not the "
            "variance 1 / lambda_N": model.mean_field_elbo(x, mu_N, 1 / lambda_N, a_N, b_N),
            "the trace holds the gap log p(x) - ELBO (the KL); record the ELBO itself": model.log_evidence(x) - want,
        }
        for name, term in terms.items():
            wrong[
                f"your ELBO misses the term {name}: the ELBO is E[log p(x | mu, tau)] + E[log p(mu | tau)] + "
                "E[log p(tau)] + H[q(mu)] + H[q(tau)] (model.mean_field_elbo computes it)"
            ] = want - term
        for message, value in wrong.items():
            if _same(got, value):
                fail(message + where)
        fail(
            f"the trace's value {fmt(got)} is not the ELBO of the factors after sweep {k + 1}, {fmt(want)}: append "
            "model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N) once per sweep, after both updates" + context
        )


@checker("2.3", "the CAVI loop")
def check_cavi(cavi):
    """Run the learner's loop with the reference updates (logged) from two starts; compare with
    :meth:`NormalGamma.cavi`, and name the mistakes a loop makes: E[tau] inverted, missing or stale, the updates
    in the wrong order or the wrong number of times, q(tau) updated from a stale q(mu), a sweep too few or too
    many, the ELBO recorded at the wrong moment, with a missing term or its arguments swapped, the factors
    returned in another order or not the last ones, the start or the given updates ignored."""
    model, x = _normal_gamma_problem()
    log = []

    reference_model = model

    def update_q_mu(x, E_tau, model):  # the lesson's names, so keyword calls work
        out = reference_model.update_q_mu(x, E_tau)
        log.append(("mu", E_tau, out))
        return out

    def update_q_tau(x, mu_N, lambda_N, model):
        out = reference_model.update_q_tau(x, mu_N, lambda_N)
        log.append(("tau", (mu_N, lambda_N), out))
        return out

    sweeps = 6
    starts = [(torch.tensor(a, dtype=_F64), torch.tensor(b, dtype=_F64)) for a, b in ((1.0, 20.0), (3.0, 0.5))]
    for index, (a0, b0) in enumerate(starts):
        log.clear()
        context = f" (from q(tau) = Gamma({float(a0):g}, {float(b0):g}), {sweeps} sweeps)"
        out = call_learner(cavi, x, model, update_q_mu, update_q_tau, a0.clone(), b0.clone(), sweeps)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            fail("return ((mu_N, lambda_N, a_N, b_N), trace): the final factors and the list of ELBOs")
        params = as_tensor_tuple(out[0], ("mu_N", "lambda_N", "a_N", "b_N"), what="the first element")
        try:
            trace = torch.tensor([float(v) for v in out[1]], dtype=_F64)
        except (TypeError, ValueError):
            fail("the trace must be a list of ELBO values, one per sweep (floats or 0-d tensors)")
        n_mu = sum(event[0] == "mu" for event in log)
        n_tau = len(log) - n_mu
        kinds = [event[0] for event in log]
        if kinds and (kinds[0] == "tau" or (n_tau and kinds == ["mu"] + ["tau", "mu"] * n_tau)):
            fail(
                "wrong order: each sweep updates q(mu) first, from E[tau] = a_N / b_N of the current q(tau) (the "
                "start needs nothing else), then q(tau) from the q(mu) just computed" + context
            )
        if n_mu == 0 or n_tau == 0:
            fail(
                "call the update functions passed in (update_q_mu, update_q_tau), not other ones: the check "
                "passes its own to see what your loop does"
            )
        if n_mu != n_tau:
            fail(
                f"one sweep updates each factor once; your loop called update_q_mu {n_mu} times and "
                f"update_q_tau {n_tau} times{context}"
            )
        done = _sweeps_from_log(log, x, model, a0, b0, context)
        if len(trace) != n_mu:
            if len(trace) == 2 * n_mu:
                fail(
                    f"record one ELBO per sweep, after both updates, not one after each update: {len(trace)} values "
                    f"for {n_mu} sweeps{context}"
                )
            fail(f"record one ELBO per sweep, after both updates: {len(trace)} values for {n_mu} sweeps")
        if n_mu != sweeps:
            fail(f"ran {n_mu} sweeps instead of {sweeps}{context}: range(sweeps) runs exactly sweeps times")
        _check_trace(trace, done, x, model, a0, b0, context)
        last = done[-1]
        if not all(_same(p, q) for p, q in zip(params, last, strict=True)):
            if all(_same(p, q) for p, q in zip(params, (last[2], last[3], last[0], last[1]), strict=True)):
                fail("return the factors in the order (mu_N, lambda_N, a_N, b_N): q(mu)'s first" + context)
            if _same(params[2], a0) and _same(params[3], b0):
                fail(
                    "the a_N, b_N returned are the start's: keep the result of update_q_tau in the variables "
                    "you return (a_N, b_N = update_q_tau(...))" + context
                )
            if all(_same(p, q) for p, q in zip(params, done[0], strict=True)):
                fail("return the factors of the last sweep, not of the first" + context)

        def reference(a_N, b_N):
            factors, values = model.cavi(x, a_N, b_N, sweeps)
            return flat(*factors, torch.tensor(values, dtype=_F64))

        diagnose(
            flat(*params, trace),
            reference(a0, b0),
            {"the loop ignores its starting point a_N, b_N": reference(*starts[1 - index])},
            context=context,
            labels=["mu_N", "lambda_N", "a_N", "b_N"] + [f"the ELBO of sweep {i + 1}" for i in range(sweeps)],
        )
    return "matches the reference loop from two starts: one ELBO per sweep, each factor updated from the latest other."
