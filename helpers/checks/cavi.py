"""Checkers for the coordinate-ascent (CAVI) exercises (lesson 02).

References: :class:`helpers.normal_gamma.NormalGamma` (Bishop 10.1.3) and
:mod:`helpers.mixture` (Blei, Kucukelbir & McAuliffe 2017). Each mistake in
the tables below is a value the learner's answer is compared with, so the
message can name it.
"""

import torch

from .. import mixture
from ..normal_gamma import NormalGamma
from ._core import (
    as_tensor_result,
    as_tensor_tuple,
    call_learner,
    checker,
    diagnose,
    expect_finite,
    expect_shape,
    fail,
    flat,
)

__all__ = [
    "check_update_q_mu",
    "check_update_q_tau",
    "check_cavi",
    "check_responsibilities",
    "check_component_update",
]

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


@checker("2.3", "the CAVI loop")
def check_cavi(cavi):
    """Run the learner's loop with the reference updates (counted) from two starts; compare with
    :meth:`NormalGamma.cavi`, and name the mistakes a loop makes: E[tau] inverted or missing, the updates in the
    wrong number of times, a sweep too few or too many, the start or the given updates ignored."""
    model, x = _normal_gamma_problem()
    calls = {"mu": 0, "tau": 0}

    def update_q_mu(x_, E_tau, model_):
        calls["mu"] += 1
        return model.update_q_mu(x_, E_tau)

    def update_q_tau(x_, mu_N, lambda_N, model_):
        calls["tau"] += 1
        return model.update_q_tau(x_, mu_N, lambda_N)

    sweeps = 6
    starts = [(torch.tensor(a, dtype=_F64), torch.tensor(b, dtype=_F64)) for a, b in ((1.0, 20.0), (3.0, 0.5))]
    for index, (a0, b0) in enumerate(starts):
        calls.update(mu=0, tau=0)
        context = f" (from q(tau) = Gamma({float(a0):g}, {float(b0):g}), {sweeps} sweeps)"
        out = call_learner(cavi, x, model, update_q_mu, update_q_tau, a0.clone(), b0.clone(), sweeps)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            fail("return ((mu_N, lambda_N, a_N, b_N), trace): the final factors and the list of ELBOs")
        params = as_tensor_tuple(out[0], ("mu_N", "lambda_N", "a_N", "b_N"), what="the first element")
        try:
            trace = torch.tensor([float(v) for v in out[1]], dtype=_F64)
        except (TypeError, ValueError):
            fail("the trace must be a list of ELBO values, one per sweep (floats or 0-d tensors)")
        if calls["mu"] == 0 or calls["tau"] == 0:
            fail(
                "call the update functions passed in (update_q_mu, update_q_tau), not other ones: the check "
                "passes its own to see what your loop does"
            )
        if calls["mu"] != calls["tau"]:
            fail(
                f"one sweep updates each factor once; your loop called update_q_mu {calls['mu']} times and "
                f"update_q_tau {calls['tau']} times{context}"
            )
        if len(trace) != calls["mu"]:
            fail(f"record one ELBO per sweep, after both updates: {len(trace)} values for {calls['mu']} sweeps")
        if calls["mu"] != sweeps:
            fail(f"ran {calls['mu']} sweeps instead of {sweeps}{context}: range(sweeps) runs exactly sweeps times")

        def reference(a_N, b_N):
            factors, values = model.cavi(x, a_N, b_N, sweeps)
            return flat(*factors, torch.tensor(values, dtype=_F64))

        def variant(E_tau_of, a_N=a0, b_N=b0):  # the reference loop with E[tau] computed wrongly
            values = []
            for _ in range(sweeps):
                mu_N, lambda_N = model.update_q_mu(x, E_tau_of(a_N, b_N))
                a_N, b_N = model.update_q_tau(x, mu_N, lambda_N)
                values.append(float(model.mean_field_elbo(x, mu_N, lambda_N, a_N, b_N)))
            return flat(mu_N, lambda_N, a_N, b_N, torch.tensor(values, dtype=_F64))

        diagnose(
            flat(*params, trace),
            reference(a0, b0),
            {
                "E[tau] under Gamma(a_N, b_N) (shape, rate) is a_N / b_N, not b_N / a_N": variant(lambda a, b: b / a),
                "pass E[tau] = a_N / b_N to update_q_mu, not a_N alone": variant(lambda a, b: a),
                "the loop ignores its starting point a_N, b_N": reference(*starts[1 - index]),
            },
            context=context,
            labels=["mu_N", "lambda_N", "a_N", "b_N"] + [f"the ELBO of sweep {i + 1}" for i in range(sweeps)],
        )
    return "matches the reference loop from two starts: one ELBO per sweep, each factor updated from the latest other."


def _mixture_problem():
    # D = 3, so that sigma^D, D sigma and sigma^2 all differ; K = 4 components, so a transposed m cannot pass
    x = torch.tensor(
        [[0.5, 1.0, -0.2], [-2.0, 0.3, 1.1], [3.1, -1.2, 0.4], [0.0, 0.0, 0.0], [1.5, 2.5, -1.0]], dtype=_F64
    )
    m = torch.tensor([[0.0, 1.0, 0.3], [2.5, -1.0, -0.5], [-1.5, 0.5, 1.0], [1.0, 1.5, -0.5]], dtype=_F64)
    s2 = torch.tensor([0.1, 0.6, 2.0, 0.3], dtype=_F64)  # unequal, so the D s_k^2 term matters
    return x, m, s2


@checker("2.4", "CAVI update of the responsibilities")
def check_responsibilities(update_responsibilities):
    x, m, s2 = _mixture_problem()
    N, K, D = x.shape[0], m.shape[0], x.shape[1]
    phi = as_tensor_result(call_learner(update_responsibilities, x, m, s2))
    if phi.shape == (K, N):
        fail(f"phi is transposed: shape ({K}, {N}); return one row per data point and one column per component")
    expect_shape(phi, (N, K), " (one row per data point, one column per component)")
    expect_finite(phi)
    ref = mixture.update_responsibilities(x, m, s2)
    logits = x @ m.T - 0.5 * ((m**2).sum(-1) + D * s2)
    diagnose(
        phi,
        ref,
        {
            "missing the variance term: E[||mu_k||^2] = ||m_k||^2 + D s_k^2": torch.softmax(
                x @ m.T - 0.5 * (m**2).sum(-1), -1
            ),
            (
                "normalised over the data points; each row (one data point) must sum to 1 over the K components"
            ): torch.softmax(logits, 0),
            "not normalised: each row must sum to 1 (use torch.softmax or subtract logsumexp)": logits.exp(),
            "returns log phi; return the probabilities phi": torch.log_softmax(logits, -1),
            "sign error: phi_ik is proportional to exp(x_i . m_k - E[||mu_k||^2] / 2)": torch.softmax(-logits, -1),
            "missing the 1/2 in front of E[||mu_k||^2]": torch.softmax(x @ m.T - ((m**2).sum(-1) + D * s2), -1),
            "E[||mu_k||^2] = ||m_k||^2 + D s_k^2: the variance counts once per dimension (the factor D)": torch.softmax(
                x @ m.T - 0.5 * ((m**2).sum(-1) + s2), -1
            ),
            "s2 holds variances s_k^2; use it as it is, not its square root": torch.softmax(
                x @ m.T - 0.5 * ((m**2).sum(-1) + D * s2.sqrt()), -1
            ),
        },
    )
    far = as_tensor_result(call_learner(update_responsibilities, x * 1e3, m, s2))
    expect_finite(far, " for data far from the means: normalise in log space (torch.softmax, or logsumexp)")
    diagnose(far, mixture.update_responsibilities(x * 1e3, m, s2), {}, context=" (for data far from the means)")
    return "rows sum to 1, match the update, and stay finite far from the means."


@checker("2.5", "CAVI update of the component means")
def check_component_update(update_components):
    x, _, _ = _mixture_problem()
    phi = torch.tensor(  # K = 4 components for D = 3 dimensions, so that m (K, D) cannot be transposed unnoticed
        [
            [0.6, 0.2, 0.1, 0.1],
            [0.1, 0.1, 0.7, 0.1],
            [0.2, 0.6, 0.1, 0.1],
            [0.3, 0.2, 0.4, 0.1],
            [0.8, 0.05, 0.05, 0.1],
        ],
        dtype=_F64,
    )
    prior_std = 3.0
    m, s2 = as_tensor_tuple(call_learner(update_components, x, phi, prior_std), ("m", "s2"))
    K, D = phi.shape[1], x.shape[1]
    if m.shape == (K,) and s2.shape == (K, D):
        fail("the tuple is swapped: return (m, s2), the means (K, D) first, then the variances (K,)")
    if m.shape == (D, K):
        fail(f"m is transposed: shape ({D}, {K}); return one row per component, shape (K, D) = ({K}, {D})")
    expect_shape(m, (phi.shape[1], x.shape[1]), " (for m: one row per component)")
    expect_shape(s2, (phi.shape[1],), " (for s2: one variance per component)")
    expect_finite(flat(m, s2))
    ref_m, ref_s2 = mixture.update_components(x, phi, prior_std)
    counts, weighted = phi.sum(0), phi.T @ x
    mle_s2 = 1 / counts
    diagnose(
        flat(m, s2),
        flat(ref_m, ref_s2),
        {
            "missing the prior precision: s_k^2 = 1 / (1/sigma^2 + sum_i phi_ik)": flat(
                mle_s2.unsqueeze(-1) * weighted, mle_s2
            ),
            "the prior precision is 1/sigma^2, not 1/sigma": flat(
                (1 / (1 / prior_std + counts)).unsqueeze(-1) * weighted, 1 / (1 / prior_std + counts)
            ),
            "returns s_k, the standard deviation; return the variance s_k^2": flat(ref_m, ref_s2.sqrt()),
            "m_k must weight each x_i by phi_ik": flat(ref_s2.unsqueeze(-1) * x.sum(0), ref_s2),
            "m_k must be multiplied by s_k^2: m_k = s_k^2 sum_i phi_ik x_i": flat(weighted, ref_s2),
            "m_k = s_k^2 sum_i phi_ik x_i is shrunk towards the prior mean 0; sum(phi x) / sum(phi) is the "
            "EM (maximum-likelihood) mean": flat(weighted / counts.unsqueeze(-1), ref_s2),
            "returns the precision 1/s_k^2; return the variance s_k^2": flat(ref_m, 1 / ref_s2),
            "the prior on mu_k has variance sigma^2 (isotropic), not sigma^D": flat(
                (1 / (prior_std ** -x.shape[1] + counts)).unsqueeze(-1) * weighted,
                1 / (prior_std ** -x.shape[1] + counts),
            ),
        },
        labels=["m"] * ref_m.numel() + ["s2"] * ref_s2.numel(),
    )
    return "matches the update of q(mu_k) for every component."
