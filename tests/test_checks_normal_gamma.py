"""The checkers of lesson 02's CAVI on the Normal-Gamma model (2.1 to 2.3, helpers.checks.normal_gamma) accept
correct answers written in different ways and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, reads_not_attempted, rejects

from helpers.checks import check_cavi, check_update_q_mu, check_update_q_tau

# ------------------------------------------------------------ exercise 2.1


def q_mu_ref(x, E_tau, model):
    return model.update_q_mu(x, E_tau)


def q_mu_loop(x, E_tau, model):
    total = torch.zeros((), dtype=x.dtype)
    for xi in x:
        total = total + xi
    n = len(x)
    return (model.lambda0 * model.mu0 + total) / (model.lambda0 + n), E_tau * (n + model.lambda0)


def q_mu_precision_weighted(x, E_tau, model):
    # mean as a precision-weighted average, with E[tau] cancelling
    prior_prec, data_prec = model.lambda0 * E_tau, len(x) * E_tau
    lam = prior_prec + data_prec
    return [(prior_prec * model.mu0 + data_prec * x.mean()) / lam, lam]


@pytest.mark.parametrize("fn", [q_mu_ref, q_mu_loop, q_mu_precision_weighted])
def test_q_mu_accepts(fn, capsys):
    accepts(check_update_q_mu, fn, capsys)


def test_q_mu_names_mistakes(capsys):
    rejects(
        check_update_q_mu,
        lambda x, E, model: (model.update_q_mu(x, E)[0], torch.tensor(model.lambda0 + len(x))),
        capsys,
        "must include E[tau]",
    )
    rejects(check_update_q_mu, lambda x, E, model: (x.mean(), model.update_q_mu(x, E)[1]), capsys, "ignores the prior")
    rejects(
        check_update_q_mu,
        lambda x, E, model: (model.update_q_mu(x, E)[0], 1 / model.update_q_mu(x, E)[1]),
        capsys,
        "variance 1/lambda_N",
    )
    rejects(
        check_update_q_mu,
        lambda x, E, model: (model.update_q_mu(x, E)[0], len(x) * E),
        capsys,
        "misses the prior's lambda0",
    )
    rejects(check_update_q_mu, lambda x, E, model: model.update_q_mu(x, E)[0], capsys, "return the tuple")


# ------------------------------------------------------------ exercise 2.2


def q_tau_ref(x, mu_N, lambda_N, model):
    return model.update_q_tau(x, mu_N, lambda_N)


def q_tau_expanded(x, mu_N, lambda_N, model):
    N = x.numel()
    E_sq_data = (x**2).sum() - 2 * mu_N * x.sum() + N * (mu_N**2 + 1 / lambda_N)
    E_sq_prior = mu_N**2 + 1 / lambda_N - 2 * mu_N * model.mu0 + model.mu0**2
    b = model.b0 + 0.5 * (E_sq_data + model.lambda0 * E_sq_prior)
    return torch.tensor(model.a0 + 0.5 * N + 0.5, dtype=x.dtype), b


def q_tau_python_sum(x, mu_N, lambda_N, model):
    var = lambda_N.reciprocal()
    b = model.b0 + sum(0.5 * ((xi - mu_N) ** 2 + var) for xi in x)
    b = b + 0.5 * model.lambda0 * ((mu_N - model.mu0) ** 2 + var)
    return (model.a0 + (len(x) + 1) / 2) * torch.ones((), dtype=x.dtype), b


@pytest.mark.parametrize("fn", [q_tau_ref, q_tau_expanded, q_tau_python_sum])
def test_q_tau_accepts(fn, capsys):
    accepts(check_update_q_tau, fn, capsys)


def test_q_tau_names_mistakes(capsys):
    def shift(da=0.0, db=None):
        def fn(x, mu_N, lambda_N, model):
            a, b = model.update_q_tau(x, mu_N, lambda_N)
            return a + da, (b if db is None else db(b, x, mu_N, lambda_N, model))

        return fn

    rejects(check_update_q_tau, shift(da=-0.5), capsys, "another 1/2")
    rejects(
        check_update_q_tau,
        shift(db=lambda b, x, m, l, model: b - 0.5 * (len(x) + model.lambda0) / l),
        capsys,
        "misses the spread of q(mu)",
    )
    rejects(check_update_q_tau, shift(db=lambda b, x, m, l, model: b - model.b0), capsys, "prior rate b0")
    rejects(check_update_q_tau, shift(db=lambda b, x, m, l, model: 2 * b - model.b0), capsys, "factor 1/2")
    rejects(
        check_update_q_tau,
        shift(db=lambda b, x, m, l, model: b - 0.5 * model.lambda0 * ((m - model.mu0) ** 2 + 1 / l)),
        capsys,
        "prior term lambda0",
    )


@pytest.mark.parametrize("checker", [check_update_q_mu, check_update_q_tau])
def test_stub_reads_not_attempted(checker, capsys):
    reads_not_attempted(checker, capsys)


def test_review_mistakes_are_named(capsys):
    def ref_mu(x, E, model):
        return model.update_q_mu(x, E)

    rejects(
        check_update_q_mu,
        lambda x, E, model: (ref_mu(x, E, model)[0], model.lambda0 + len(x) * E),
        capsys,
        "lambda0 tau",
    )
    rejects(
        check_update_q_mu,
        lambda x, E, model: (ref_mu(x, E, model)[0], ref_mu(x, E, model)[1] + 0.3),
        capsys,
        "for lambda_N",
    )  # a plain mismatch names the output
    rejects(
        check_update_q_tau,
        lambda x, m, l, model: (float(model.a0 + (len(x) + 1) / 2), model.update_q_tau(x, m, l)[1]),
        capsys,
        "a_N is a float",
        "return tensors",
    )
    rejects(
        check_update_q_tau,
        lambda x, m, l, model: (
            model.update_q_tau(x, m, l)[0],
            model.update_q_tau(x, m, l)[1] - 0.5 * (model.lambda0 - 1) / l,
        ),
        capsys,
        "needs the factor lambda0",
    )
    rejects(
        check_update_q_tau,
        lambda x, m, l, model: (model.update_q_tau(x, m, l)[0], 1 / model.update_q_tau(x, m, l)[1]),
        capsys,
        "rate b_N",
    )


def _q_tau_mean_over_data(x, mu_N, lam_N, model):  # the expected squares averaged instead of summed
    N = len(x)
    a_N = torch.tensor(model.a0 + (N + 1) / 2, dtype=x.dtype)
    squares = ((x - mu_N) ** 2 + 1 / lam_N).mean()
    return a_N, model.b0 + 0.5 * (squares + model.lambda0 * ((mu_N - model.mu0) ** 2 + 1 / lam_N))


@pytest.mark.parametrize(
    "checker, fn, words",
    [
        (check_update_q_mu, lambda x, E, model: model.update_q_mu(x, E)[::-1], "the tuple is swapped"),
        (
            check_update_q_mu,
            lambda x, E, model: (
                (model.lambda0 * model.mu0 + x.mean()) / (model.lambda0 + len(x)),
                model.update_q_mu(x, E)[1],
            ),
            "not the mean xbar",
        ),
        (check_update_q_tau, lambda x, m, lam, model: model.update_q_tau(x, m, lam)[::-1], "the tuple is swapped"),
        (check_update_q_tau, _q_tau_mean_over_data, "summed over the N data points, not averaged"),
    ],
)
def test_common_slips_are_named(checker, fn, words, capsys):
    rejects(checker, fn, capsys, words)


# ------------------------------------------------------------ exercise 2.3 (the loop)


def cavi_reference(x, model, update_q_mu, update_q_tau, a_N, b_N, sweeps):
    trace = []
    for _ in range(sweeps):
        mu_N, lambda_N = update_q_mu(x, a_N / b_N, model)
        a_N, b_N = update_q_tau(x, mu_N, lambda_N, model)
        trace.append(model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N))
    return (mu_N, lambda_N, a_N, b_N), trace


def cavi_while_loop(x, model, update_q_mu, update_q_tau, a_N, b_N, sweeps):
    # a while loop, a tuple for the factors, float ELBOs
    q_tau, trace, sweep = (a_N, b_N), [], 0
    while sweep < sweeps:
        q_mu = update_q_mu(x, q_tau[0] / q_tau[1], model)
        q_tau = update_q_tau(x, *q_mu, model)
        trace.append(float(model.mean_field_elbo(x, *q_mu, *q_tau)))
        sweep += 1
    return (*q_mu, *q_tau), trace


def cavi_with_expectation_named(x, model, update_q_mu, update_q_tau, a_N, b_N, sweeps):
    # E[tau] kept as its own variable, the trace as a tensor
    E_tau, values = a_N / b_N, []
    for _ in range(sweeps):
        mu_N, lambda_N = update_q_mu(x, E_tau, model)
        a_N, b_N = update_q_tau(x, mu_N, lambda_N, model)
        E_tau = a_N / b_N
        values.append(model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N))
    return (mu_N, lambda_N, a_N, b_N), torch.stack(values)


@pytest.mark.parametrize("fn", [cavi_reference, cavi_while_loop, cavi_with_expectation_named])
def test_cavi_accepts_correct_loops(fn, capsys):
    accepts(check_cavi, fn, capsys)


def _inverted(x, model, um, ut, a_N, b_N, sweeps):
    return cavi_reference(x, model, lambda x_, e, m: um(x_, 1 / e, m), ut, a_N, b_N, sweeps)


def _shape_only(x, model, um, ut, a_N, b_N, sweeps):
    trace = []
    for _ in range(sweeps):
        mu_N, lambda_N = um(x, a_N, model)  # the shape, not the mean a_N / b_N
        a_N, b_N = ut(x, mu_N, lambda_N, model)
        trace.append(model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N))
    return (mu_N, lambda_N, a_N, b_N), trace


def _one_short(x, model, um, ut, a_N, b_N, sweeps):
    return cavi_reference(x, model, um, ut, a_N, b_N, sweeps - 1)


def _fixed_start(x, model, um, ut, a_N, b_N, sweeps):
    return cavi_reference(
        x, model, um, ut, torch.tensor(1.0, dtype=a_N.dtype), torch.tensor(20.0, dtype=a_N.dtype), sweeps
    )


def _own_updates(x, model, um, ut, a_N, b_N, sweeps):
    return cavi_reference(
        x,
        model,
        lambda x_, e, m: m.update_q_mu(x_, e),
        lambda x_, mu, lam, m: m.update_q_tau(x_, mu, lam),
        a_N,
        b_N,
        sweeps,
    )


def _trace_of_last_only(x, model, um, ut, a_N, b_N, sweeps):
    params, trace = cavi_reference(x, model, um, ut, a_N, b_N, sweeps)
    return params, trace[-1:]


def _mu_twice(x, model, um, ut, a_N, b_N, sweeps):
    trace = []
    for _ in range(sweeps):
        mu_N, lambda_N = um(x, a_N / b_N, model)
        mu_N, lambda_N = um(x, a_N / b_N, model)
        a_N, b_N = ut(x, mu_N, lambda_N, model)
        trace.append(model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N))
    return (mu_N, lambda_N, a_N, b_N), trace


def _only_trace(x, model, um, ut, a_N, b_N, sweeps):
    return cavi_reference(x, model, um, ut, a_N, b_N, sweeps)[1]


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_inverted, "not b_N / a_N"),
        (_shape_only, "not a_N alone"),
        (_one_short, "instead of 6"),
        (_fixed_start, "ignores its starting point"),
        (_own_updates, "call the update functions passed in"),
        (_trace_of_last_only, "one ELBO per sweep"),
        (_mu_twice, "updates each factor once"),
        (_only_trace, "return ((mu_N, lambda_N, a_N, b_N), trace)"),
    ],
)
def test_cavi_names_mistakes(fn, words, capsys):
    rejects(check_cavi, fn, capsys, words)


# ------------------------------------------------------------ exercise 2.3: the loop's slips, named from its calls


def _hand_elbo(x, model, mu_N, lambda_N, a_N, b_N, skip=None):
    # the five terms of the mean-field ELBO written out (Bishop 10.1.3); `skip` leaves one out
    N, log_2pi = x.numel(), math.log(2 * math.pi)
    E_tau, E_log_tau = a_N / b_N, torch.digamma(a_N) - torch.log(b_N)
    terms = {
        "lik": 0.5 * N * (E_log_tau - log_2pi) - 0.5 * E_tau * (((x - mu_N) ** 2).sum() + N / lambda_N),
        "mu": 0.5 * (math.log(model.lambda0) + E_log_tau - log_2pi)
        - 0.5 * model.lambda0 * E_tau * ((mu_N - model.mu0) ** 2 + 1 / lambda_N),
        "tau": model.a0 * math.log(model.b0) - math.lgamma(model.a0) + (model.a0 - 1) * E_log_tau - model.b0 * E_tau,
        "h_mu": 0.5 * (1 + log_2pi - torch.log(lambda_N)),
        "h_tau": a_N - torch.log(b_N) + torch.lgamma(a_N) + (1 - a_N) * torch.digamma(a_N),
    }
    return sum(v for k, v in terms.items() if k != skip)


def cavi_hand_written_elbo(x, model, update_q_mu, update_q_tau, a_N, b_N, sweeps):
    # the ELBO written out term by term instead of model.mean_field_elbo
    trace = []
    for _ in range(sweeps):
        mu_N, lambda_N = update_q_mu(x, a_N / b_N, model)
        a_N, b_N = update_q_tau(x, mu_N, lambda_N, model)
        trace.append(_hand_elbo(x, model, mu_N, lambda_N, a_N, b_N))
    return (mu_N, lambda_N, a_N, b_N), trace


def cavi_dict_state(x, model, update_q_mu, update_q_tau, a_N, b_N, sweeps):
    # the factors kept in a dict, keyword arguments, a list comprehension-free loop over sweeps
    q = {"a_N": a_N, "b_N": b_N}
    trace = []
    for _sweep in range(sweeps):
        q["mu_N"], q["lambda_N"] = update_q_mu(x=x, E_tau=q["a_N"] / q["b_N"], model=model)
        q["a_N"], q["b_N"] = update_q_tau(x, q["mu_N"], q["lambda_N"], model)
        trace.append(model.mean_field_elbo(x, q["mu_N"], q["lambda_N"], q["a_N"], q["b_N"]).item())
    return (q["mu_N"], q["lambda_N"], q["a_N"], q["b_N"]), trace


@pytest.mark.parametrize("fn", [cavi_hand_written_elbo, cavi_dict_state])
def test_cavi_accepts_more_correct_loops(fn, capsys):
    accepts(check_cavi, fn, capsys)


def _loop(order="mu-tau", e_tau=None, stale_mu=False, swap_tau_args=False, record="after", elbo=None, ret=None):
    """A CAVI loop with one slip; the defaults give the correct loop."""

    def fn(x, model, um, ut, a_N, b_N, sweeps):
        start, trace = (a_N, b_N), []
        E_tau0 = a_N / b_N
        mu_N, lambda_N = um(x, E_tau0, model) if order == "tau-mu" else (None, None)
        first = None
        for k in range(sweeps):
            if order == "tau-mu":  # q(tau) first, from the previous q(mu)
                a_N, b_N = ut(x, mu_N, lambda_N, model)
                mu_N, lambda_N = um(x, a_N / b_N, model)
                trace.append(model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N))
                continue
            before = (mu_N, lambda_N, a_N, b_N)
            E_tau = a_N / b_N if e_tau is None else e_tau(a_N, b_N, E_tau0)
            old_mu = (mu_N, lambda_N)
            mu_N, lambda_N = um(x, E_tau, model)
            if record == "between":
                trace.append(model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N))
            if record == "before":  # at the top of the sweep, from a guess of q(mu) in the first
                guess = (x.mean(), torch.ones((), dtype=x.dtype)) if k == 0 else before[:2]
                trace.append(model.mean_field_elbo(x, *guess, *before[2:]))
            given = old_mu if (stale_mu and k > 0) else (mu_N, lambda_N)
            if swap_tau_args:
                given = given[::-1]
            a_N, b_N = ut(x, *given, model)
            if record == "after":
                value = model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)
                trace.append(value if elbo is None else elbo(x, model, mu_N, lambda_N, a_N, b_N))
            if record == "each":
                trace += [
                    model.mean_field_elbo(x, mu_N, lambda_N, *start),
                    model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N),
                ]
            if first is None:
                first = (mu_N, lambda_N, a_N, b_N)
        params = (mu_N, lambda_N, a_N, b_N)
        if ret == "tau-first":
            params = (a_N, b_N, mu_N, lambda_N)
        elif ret == "start":
            params = (mu_N, lambda_N, *start)
        elif ret == "first":
            params = first
        return params, trace

    return fn


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_loop(order="tau-mu"), "wrong order: each sweep updates q(mu) first"),
        (_loop(e_tau=lambda a, b, e0: e0), "stale E[tau]"),
        (_loop(e_tau=lambda a, b, e0: 1 / b), "not 1 / b_N"),
        (_loop(stale_mu=True), "stale q(mu)"),
        (_loop(swap_tau_args=True), "mu_N and lambda_N are swapped"),
        (_loop(record="between"), "yours was taken between them"),
        (_loop(record="before"), "recorded before the sweep's updates"),
        (_loop(record="each"), "not one after each update"),
        (_loop(elbo=lambda x, model, *q: -model.mean_field_elbo(x, *q)), "the negative ELBO"),
        (_loop(elbo=lambda x, model, m, l, a, b: model.mean_field_elbo(x, m, l, b, a)), "a_N and b_N are swapped"),
        (_loop(elbo=lambda x, model, m, l, a, b: model.mean_field_elbo(x, m, 1 / l, a, b)), "not the variance"),
        (_loop(elbo=lambda x, model, *q: model.log_evidence(x) - model.mean_field_elbo(x, *q)), "the gap"),
        (
            _loop(elbo=lambda x, model, *q: _hand_elbo(x, model, *q, skip="h_tau")),
            "misses the term the entropy H[q(tau)]",
        ),
        (
            _loop(elbo=lambda x, model, *q: _hand_elbo(x, model, *q, skip="h_mu")),
            "misses the term the entropy H[q(mu)]",
        ),
        (_loop(elbo=lambda x, model, *q: _hand_elbo(x, model, *q, skip="tau")), "misses the term E[log p(tau)]"),
        (_loop(elbo=lambda x, model, *q: _hand_elbo(x, model, *q, skip="mu")), "misses the term E[log p(mu | tau)]"),
        (_loop(ret="tau-first"), "in the order (mu_N, lambda_N, a_N, b_N)"),
        (_loop(ret="start"), "are the start's"),
        (_loop(ret="first"), "the last sweep, not of the first"),
    ],
)
def test_cavi_names_the_loops_slips(fn, words, capsys):
    rejects(check_cavi, fn, capsys, words)


def test_cavi_loop_helper_is_correct_by_default(capsys):
    accepts(check_cavi, _loop(), capsys)
