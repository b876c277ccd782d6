r"""Checkers for the amortized-inference exercises (lesson 04).

References: :mod:`helpers.amortized` and :class:`helpers.linear_gaussian.LinearGaussianModel`.
4.1 is compared on fixed noise, value and encoder gradients; 4.4 exactly, on decoders whose posteriors are correlated
(so that the best diagonal Gaussian is not the posterior, and its variances are not the posterior's marginal
ones); 4.5 on a linear-Gaussian model whose best mean-field Gaussian is not its posterior (so that no two of the
three quantities coincide); 4.6, an optimiser, by what it must achieve on a model with a known posterior, and by
probes that show each argument and whether its draws are fresh at every step; 4.7 exactly. (4.0, 4.2, 4.3 and 4.8
are written questions.)
"""

import math
import numbers

import torch
from torch.distributions import Normal, kl_divergence

from .. import amortized
from ..encoders import GaussianEncoder
from ..linear_gaussian import LinearGaussianModel
from ._core import (
    _INPLACE,
    Mistake,
    as_tensor_result,
    as_tensor_tuple,
    call_learner,
    checker,
    diagnose,
    expect_finite,
    expect_shape,
    fail,
    flat,
    fmt,
    learner_grad,
)

_F64 = torch.float64


def _ppca():
    return LinearGaussianModel.random(D=5, L=2, scales=(2.0, 1.0), sigma=0.6, seed=3, dtype=_F64)


def _correlated_ppca(L=2):
    r"""A linear-Gaussian model whose decoder's columns are far from orthogonal, so that the posterior is correlated
    (its correlation is -0.75 for ``L = 2``) and the diagonal of the covariance differs from the inverse diagonal
    of the precision by a factor 2 and more: the best diagonal Gaussian is not the posterior."""
    W = torch.tensor(
        [[1.0, 0.8, 0.0], [-0.4, 0.2, 0.3], [0.3, 0.9, 1.0], [2.0, 1.1, -0.6], [0.2, 0.0, 0.7]], dtype=_F64
    )
    b = torch.tensor([0.5, -1.0, 0.2, 0.0, 0.3], dtype=_F64)
    if L == 2:
        return LinearGaussianModel(W[:4, :2], b[:4], 0.7)
    return LinearGaussianModel(W[:, :L], b, 1.3)


def _encoder_and_data():
    # L = 3, so that a mean of log q over the latent coordinates is not half their sum; S, B and L all differ
    model = LinearGaussianModel.random(D=5, L=3, scales=(2.0, 1.0, 1.5), sigma=0.6, seed=3, dtype=_F64)
    torch.manual_seed(0)
    encoder = GaussianEncoder(model.D, model.L, hidden=(8,)).to(_F64)
    torch.nn.init.normal_(encoder.net[-1].weight, std=0.3)  # not the zero start: every weight gets a gradient
    _, x = model.sample(4, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(5, 4, model.L, dtype=_F64)  # S = 5 draws for each of B = 4 data points
    return model, encoder, x, eps


def _value_and_grads(fn_out, encoder, learner=False):
    take = learner_grad if learner else torch.autograd.grad
    grads = take(fn_out.sum(), list(encoder.parameters()), allow_unused=True, retain_graph=True)
    if any(g is None for g in grads):
        fail(
            "no gradient reaches some of the encoder's weights: compute mean and log_scale with encoder(x) and "
            "build z from them with torch operations (no .detach())"
        )
    return flat(*grads)


def _variant(model, encoder, x, eps, z_of=None, log_q_of=None, reduce=lambda t: t.mean(0)):
    """The reparameterized ELBO with ``z``, ``log q`` or the average over draws built another way (right or wrong)."""
    mean, log_scale = encoder(x)
    scale = log_scale.exp()
    z = mean + scale * eps if z_of is None else z_of(mean, scale, log_scale, eps)
    log_q = Normal(mean, scale).log_prob(z).sum(-1) if log_q_of is None else log_q_of(mean, scale, z)
    return reduce(model.log_joint(x, z) - log_q)


@checker("4.1", "amortized ELBO per data point")
def check_amortized_elbo(amortized_elbo):
    model, encoder, x, eps = _encoder_and_data()
    S, B, L = eps.shape
    latent_sum = (
        f"log q(z | x) has one term per latent coordinate, shape (S, B, L) = ({S}, {B}, {L}), where log_joint gives "
        f"(S, B) = ({S}, {B}): sum log q over the latent axis (dim -1), since q is a product over the L coordinates"
    )
    try:
        out = as_tensor_result(call_learner(amortized_elbo, x, encoder, model.log_joint, eps))
    except Mistake as exc:  # the broadcasting error of (S, B) - (S, B, L) names the sizes B and L
        text = str(exc)
        if "must match the size of tensor" in text and f"({B})" in text and f"({L})" in text:
            fail(latent_sum + f" (your function raised: {text.split('raised ', 1)[-1]})")
        raise
    if out.dim() == 0:
        fail(
            f"returned one number; return one ELBO per data point, shape ({B},): average over the S draws (dim 0) only"
        )
    if out.shape == (S, B):
        fail(f"returned shape {tuple(out.shape)}, one value per draw; average over the S draws (dim 0)")
    if out.shape == (S,):
        fail(
            f"returned shape ({S},), one value per draw: that averaged over the B = {B} data points (dim 1); "
            f"average over the S = {S} draws (dim 0) instead, and keep one ELBO per data point, shape ({B},)"
        )
    if out.shape in ((B, L), (S, B, L)):
        fail(f"returned shape {tuple(out.shape)}: " + latent_sum)
    expect_shape(out, (B,), " (one ELBO per data point)")
    expect_finite(out)
    again = as_tensor_result(call_learner(amortized_elbo, x, encoder, model.log_joint, eps.clone()))
    if not torch.equal(again.detach(), out.detach()):
        fail(
            "two calls with the same eps gave different ELBOs: your function draws its own noise. Use the eps you "
            "are given, z = mean + exp(log_scale) * eps (the caller chooses the draws; training passes fresh ones "
            "at every step)"
        )
    if not out.requires_grad:
        fail(
            "no gradient reaches the encoder: build z = mean + exp(log_scale) * eps from encoder(x), without "
            ".detach() or torch.no_grad()"
        )
    grads = _value_and_grads(out, encoder, learner=True)
    value = out.detach()

    def entropy_log_q(mean, scale, z):  # exact entropy in place of -log q: also correct
        return -Normal(mean, scale).entropy().sum(-1).expand(z.shape[:-1])

    def sticking_the_landing(mean, scale, z):  # log q with its parameters held fixed: also correct
        return Normal(mean.detach(), scale.detach()).log_prob(z).sum(-1)

    accepted = [
        amortized.amortized_elbo(x, encoder, model.log_joint, eps),  # the reference answer
        _variant(model, encoder, x, eps, log_q_of=entropy_log_q),
        _variant(model, encoder, x, eps, log_q_of=sticking_the_landing),
    ]
    for ref in accepted:
        if torch.allclose(value, ref.detach(), rtol=1e-6, atol=1e-9) and torch.allclose(
            grads, _value_and_grads(ref, encoder), rtol=1e-6, atol=1e-9
        ):
            return "matches the reparameterised ELBO of every data point, and its gradients reach the encoder."
    ref = accepted[0]
    diagnose(
        value,
        ref.detach(),
        {
            "the scale is exp(log_scale): z = mean + exp(log_scale) * eps": _variant(
                model, encoder, x, eps, z_of=lambda m, s, ls, e: m + ls * e
            ).detach(),
            "log q uses exp(log_scale) as the standard deviation, not log_scale": _variant(
                model,
                encoder,
                x,
                eps,
                z_of=lambda m, s, ls, e: m + s * e,
                log_q_of=lambda m, s, z: Normal(m, torch.abs(s.log())).log_prob(z).sum(-1),
            ).detach(),
            f"log q(z | x) averages its L = {L} one-dimensional log densities: sum them over the latent axis "
            "(dim -1), since q(z | x) is a product over the L coordinates": _variant(
                model, encoder, x, eps, log_q_of=lambda m, s, z: Normal(m, s).log_prob(z).mean(-1)
            ).detach(),
            "missing the -log q(z | x) term: the ELBO is E_q[log p(x, z) - log q(z | x)]": _variant(
                model, encoder, x, eps, log_q_of=lambda m, s, z: torch.zeros(z.shape[:-1], dtype=z.dtype)
            ).detach(),
            "log_scale is the log of the standard deviation, not of the variance: scale = exp(log_scale)": _variant(
                model,
                encoder,
                x,
                eps,
                z_of=lambda m, s, ls, e: m + (0.5 * ls).exp() * e,
                log_q_of=lambda m, s, z: Normal(m, s.sqrt()).log_prob(z).sum(-1),
            ).detach(),
            "z must be a draw, mean + exp(log_scale) * eps, not the mean itself": _variant(
                model, encoder, x, eps, z_of=lambda m, s, ls, e: m.expand_as(e)
            ).detach(),
            "sign error: return the ELBO, log p - log q (training minimises loss = -elbo.mean())": -ref.detach(),
            "summed over the S draws; average them": _variant(
                model, encoder, x, eps, reduce=lambda t: t.sum(0)
            ).detach(),
            "that is the importance-weighted bound (logsumexp over draws); the ELBO averages the log-weights": _variant(
                model, encoder, x, eps, reduce=lambda t: torch.logsumexp(t, 0) - math.log(t.shape[0])
            ).detach(),
        },
        context=f" ({B} data points, {S} fixed draws each; use the eps you are given, not q.rsample())",
    )
    fail(
        "the value is right but its gradients with respect to the encoder are not: keep every step in torch, "
        "and let the draw z depend on mean and log_scale"
    )


def _size_slip(exc, D, L):
    """The diagnosis of a size mismatch between L and D raised inside the learner's 4.4: W W^T for W^T W in the
    precision, or W for W^T on the right-hand side of the solve for A."""
    text = str(exc)
    if any(word in text for word in ("size", "shape")) and str(D) in text and str(L) in text:
        fail(
            f"{text.rstrip('.')}: a mismatch between the latent size L = {L} and the data size D = {D}. Two "
            f"shapes to check: the posterior precision Lambda = I + W^T W / sigma^2 is L x L = {L} x {L}, built "
            f"from W^T W (W has shape (D, L) = ({D}, {L})), not from W W^T, which is D x D; and A solves "
            f"Lambda A = W^T / sigma^2, whose right-hand side W^T is (L, D) = ({L}, {D}), not W: A maps x (D,) to "
            "the mean (L,)"
        )


def _diagonal_encoder(W, b, sigma, precision, log_scale=None):
    """(A, c, log_scale) as a flat vector with A = precision^{-1} W^T / sigma^2, c = -A b and the log-scales given
    (by default the right ones for ``precision``): the value a slip in the precision produces."""
    A = torch.linalg.solve(precision, W.T) / sigma**2
    log_scale = -0.5 * precision.diagonal().log() if log_scale is None else log_scale
    return flat(A, -A @ b, log_scale)


@checker("4.4", "the best linear encoder")
def check_linear_encoder(best_linear_encoder):
    r"""Compare with :func:`helpers.amortized.best_linear_encoder` on two decoders whose columns are not orthogonal
    (``(D, L) = (4, 2)`` and ``(5, 3)``, ``sigma`` 0.7 and 1.3, not the lesson's 0.5): there the inverse diagonal of
    the precision differs from the diagonal of the covariance, :math:`W^\top W` from its diagonal, and every slip
    below gives its own value. The mean map is diagnosed first, then the log-scales. float64, as in lesson 04."""
    for model in (_correlated_ppca(2), _correlated_ppca(3)):
        W, b, sigma = model.W, model.b, model.sigma
        D, L = W.shape
        context = f" (W of shape ({D}, {L}) with columns that are not orthogonal, sigma = {sigma:g})"
        try:
            out = call_learner(best_linear_encoder, W, b, sigma)
        except Mistake as exc:
            _size_slip(exc, D, L)
            text = str(exc)
            if L != 2 and any(size in text for size in ("(2)", "2x2", "2 x 2")):
                fail(
                    f"{text.rstrip('.')}, for a decoder with L = {L} latent coordinates: take the sizes from W, "
                    f"L = W.shape[1], not from the lesson's L = 2"
                )
            fail(f"{text}{context}")
        A, c, log_scale = as_tensor_tuple(out, ("A", "c", "log_scale"))
        if A.shape == (D, L):
            fail(f"A has shape ({D}, {L}); it maps x (D,) to the mean (L,), so its shape is ({L}, {D}): mean = A x + c")
        expect_shape(A, (L, D), " (for A: it maps x (D,) to the mean (L,))" + context)
        if c.shape == (D,):
            fail(f"c has shape ({D},), one number per data coordinate; it is the mean's offset, shape (L,) = ({L},)")
        expect_shape(c, (L,), " (for c)" + context)
        if log_scale.shape == (D,):
            fail(
                f"log_scale has shape ({D},), one number per data coordinate: the precision's diagonal comes from "
                f"W^T W, which is L x L, not from W W^T (D x D); return one log-scale per latent coordinate, shape "
                f"({L},)"
            )
        if log_scale.shape == (L, L):
            fail(
                f"log_scale has shape ({L}, {L}), a matrix; q is a diagonal Gaussian with one scale per latent "
                f"coordinate: return a vector of shape ({L},) taken from the diagonal"
            )
        expect_shape(log_scale, (L,), " (for log_scale: one per latent coordinate)" + context)
        expect_finite(flat(A, c, log_scale), context)
        ref_A, ref_c, ref_log_scale = amortized.best_linear_encoder(W, b, sigma)
        eye = torch.eye(L, dtype=_F64)
        precision = eye + W.T @ W / sigma**2
        cov = torch.linalg.inv(precision)
        no_sigma = eye + W.T @ W
        pinv = torch.linalg.pinv(W)
        diagonal = torch.diag(precision.diagonal())
        mean_mistakes = {
            "A misses the prior's identity: the precision is I + W^T W / sigma^2; without I, A is the least-squares "
            "pseudo-inverse": flat(pinv, -pinv @ b),
            "c must undo the offset: mean = A (x - b), so c = -A b": flat(ref_A, ref_A @ b),
            "c is not zero: the mean is A (x - b), so c = -A b": flat(ref_A, torch.zeros(L, dtype=_F64)),
            "the precision misses sigma^2: Lambda = I + W^T W / sigma^2 (the likelihood adds W^T W / sigma^2 "
            "to the prior's I)": (_diagonal_encoder(W, b, 1.0, no_sigma)[: L * D + L]),
            "the precision misses sigma^2: Lambda = I + W^T W / sigma^2, with the same sigma^2 as in W^T / sigma^2": (
                flat(torch.linalg.solve(no_sigma, W.T) / sigma**2, -torch.linalg.solve(no_sigma, W.T) @ b / sigma**2)
            ),
            "sigma is a standard deviation: divide by sigma^2, not sigma": _diagonal_encoder(
                W, b, sigma**0.5, eye + W.T @ W / sigma
            )[: L * D + L],
            "sigma is a standard deviation: the precision is I + W^T W / sigma^2, not I + W^T W / sigma": (
                _diagonal_encoder(W, b, sigma, eye + W.T @ W / sigma)[: L * D + L]
            ),
            "A misses the 1 / sigma^2 on the right-hand side: Lambda A = W^T / sigma^2, so A = Lambda^{-1} W^T / "
            "sigma^2 (the precision's sigma^2 is not the only one)": flat(
                torch.linalg.solve(precision, W.T), -torch.linalg.solve(precision, W.T) @ b
            ),
            "A misses the posterior covariance: A = Lambda^{-1} W^T / sigma^2": flat(
                W.T / sigma**2, -(W.T / sigma**2) @ b
            ),
            "A uses only the diagonal of the precision: that is exact only for orthogonal columns (as in the lesson's "
            "W); the mean needs the whole matrix Lambda = I + W^T W / sigma^2": _diagonal_encoder(
                W, b, sigma, diagonal
            )[: L * D + L],
            "A multiplies by the precision instead of its inverse: A = Lambda^{-1} W^T / sigma^2": flat(
                precision @ W.T / sigma**2, -(precision @ W.T / sigma**2) @ b
            ),
            "the answer ignores its argument sigma (it uses the lesson's 0.5; this check passes another sigma)": (
                _diagonal_encoder(W, b, 0.5, eye + W.T @ W / 0.25)[: L * D + L]
            ),
        }
        diagnose(
            flat(A, c),
            flat(ref_A, ref_c),
            mean_mistakes,
            context=context,
            labels=["A"] * A.numel() + ["c"] * c.numel(),
        )
        log_diag = precision.diagonal().log()
        log_marginal = cov.diagonal().log()
        scale_mistakes = {
            "those are the posterior's marginal variances Sigma_ll = (Lambda^{-1})_ll, the best diagonal Gaussian "
            "for the other direction, KL(p || q); VI minimises KL(q || p(z | x)), whose best diagonal Gaussian takes "
            "its variances from the precision's own diagonal, s_l^2 = 1 / Lambda_ll (question 4.3)": 0.5 * log_marginal,
            "that is the log of the marginal variance Sigma_ll, twice over wrong: log_scale is the log of a standard "
            "deviation (half the log-variance), and VI's best diagonal variances are 1 / Lambda_ll, from the "
            "precision's diagonal, not Sigma_ll": log_marginal,
            "that is the log of the variance 1 / Lambda_ll: log_scale is the log of the standard deviation, half "
            "the log-variance": -log_diag,
            "log_scale is a quarter of the log-variance: it is half of it, log s_l = (1/2) log s_l^2 with "
            "s_l^2 = 1 / Lambda_ll": -0.25 * log_diag,
            "sign slip: the scale shrinks as the precision grows, s_l^2 = 1 / Lambda_ll, so log_scale is minus half "
            "the log of Lambda_ll": 0.5 * log_diag,
            "returned the standard deviations 1 / sqrt(Lambda_ll), not their logs: return log_scale": (
                -0.5 * log_diag
            ).exp(),
            "returned the variances 1 / Lambda_ll, not the log of the standard deviations: return log_scale": (
                -log_diag
            ).exp(),
            "the precision misses sigma^2: Lambda = I + W^T W / sigma^2 (the likelihood adds W^T W / sigma^2 "
            "to the prior's I)": (-0.5 * no_sigma.diagonal().log()),
            "sigma is a standard deviation: divide W^T W by sigma^2, not sigma": -0.5
            * (eye + W.T @ W / sigma).diagonal().log(),
            "the precision misses the prior's identity: Lambda = I + W^T W / sigma^2": -0.5
            * (W.T @ W / sigma**2).diagonal().log(),
            "the answer ignores its argument sigma (it uses the lesson's 0.5; this check passes another sigma)": -0.5
            * (eye + W.T @ W / 0.25).diagonal().log(),
        }
        diagnose(
            log_scale,
            ref_log_scale,
            scale_mistakes,
            context=context,
            labels=[f"log_scale[{l}]" for l in range(L)],
        )
    return (
        "A x + c is the posterior mean and exp(2 log_scale) = 1 / Lambda_ll the best diagonal variances, for two "
        "decoders whose posteriors are correlated."
    )


@checker("4.5", "the approximation and amortization gaps")
def check_inference_gaps(inference_gaps):
    r"""Compare with :func:`helpers.amortized.gaussian_elbo_terms` on a linear-Gaussian model whose posterior is
    correlated, so that its exact :math:`\log p(x)`, the best mean-field Gaussian :math:`q^*` (the posterior means
    with the precision's diagonal; it is not the posterior, so the approximation gap is positive) and an encoder's
    guess off both give three different numbers per data point, and no two of the quantities compared coincide.
    float64, as in lesson 04."""
    model = _correlated_ppca()  # W^T W not diagonal: the posterior is correlated, q* is not exact
    B, S = 5, 40
    _, x = model.sample(B, generator=torch.Generator().manual_seed(5))
    mean_post, cov_post = model.posterior(x)
    mean_star = mean_post.expand(B, model.L).clone()
    log_scale_star = (-0.5 * torch.linalg.inv(cov_post).diagonal().log()).expand_as(mean_star).clone()
    offsets = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.0], [0.2, 0.2], [-0.1, -0.3]], dtype=_F64)
    mean_phi = mean_star + offsets
    log_scale_phi = log_scale_star + torch.tensor([0.3, -0.1], dtype=_F64)
    log_px = model.log_evidence(x)
    eps = torch.randn(S, B, model.L, dtype=_F64)
    args = (x, model.log_joint, (mean_phi, log_scale_phi), (mean_star, log_scale_star), log_px)
    out = call_learner(inference_gaps, *args, eps.clone())
    approximation, amortization = as_tensor_tuple(out, ("approximation_gap", "amortization_gap"))
    for value, name in ((approximation, "approximation_gap"), (amortization, "amortization_gap")):
        if value.dim() == 0:
            fail(f"{name} is one number; return one gap per data point, shape (B,) = ({B},)")
        expect_shape(value, (B,), f" (for {name}: one gap per data point)")
        expect_finite(value, f" (for {name})")
    again = as_tensor_tuple(call_learner(inference_gaps, *args, eps.clone()), ("approximation_gap", "amortization_gap"))
    if not torch.equal(flat(*again), flat(approximation, amortization)):
        fail(
            "two calls with the same eps gave different gaps: your function draws its own noise; estimate both "
            "ELBOs with the draws eps it is given (shared draws make the Monte Carlo noise of the difference small)"
        )

    def elbo_of(mean, log_scale):
        return amortized.gaussian_elbo_terms(x, mean, log_scale, model.log_joint, eps)

    def expected_log_joint(mean, log_scale):  # the ELBO without its -log q term
        return model.log_joint(x, mean + log_scale.exp() * eps).mean(0)

    def elbo_at_encoder_draws(mean, log_scale):  # q's ELBO integrand at the encoder's draws, not q's own
        z = mean_phi + log_scale_phi.exp() * eps
        return (model.log_joint(x, z) - Normal(mean, log_scale.exp()).log_prob(z).sum(-1)).mean(0)

    elbo_phi, elbo_star = elbo_of(mean_phi, log_scale_phi), elbo_of(mean_star, log_scale_star)
    ref = flat(log_px - elbo_star, elbo_star - elbo_phi)
    plain_phi, plain_star = expected_log_joint(mean_phi, log_scale_phi), expected_log_joint(mean_star, log_scale_star)
    # a squared scale exp(log_scale)^2 is the Gaussian with log-scale 2 log_scale
    var_phi, var_star = elbo_of(mean_phi, 2 * log_scale_phi), elbo_of(mean_star, 2 * log_scale_star)
    shared = elbo_at_encoder_draws(mean_star, log_scale_star)
    swapped_phi, swapped_star = elbo_of(log_scale_phi, mean_phi), elbo_of(log_scale_star, mean_star)
    swapped = (
        "mean and log_scale are swapped in {}: gaussian_elbo_terms takes (x, mean, log_scale, log_joint, eps), and "
        "each pair you are given, encoder_q and best_q, is (mean, log_scale)"
    )
    diagnose(
        flat(approximation, amortization),
        ref,
        {
            "the two gaps are swapped: the approximation gap is log p(x) - ELBO(q*), a limit of the family; the "
            "amortization gap is ELBO(q*) - ELBO(q_phi), a limit of the encoder": flat(
                elbo_star - elbo_phi, log_px - elbo_star
            ),
            "the gaps have the wrong sign: each is a larger bound minus a smaller one, log p(x) >= ELBO(q*) >= "
            "ELBO(q_phi)": -ref,
            "the approximation gap is measured from the best Gaussian q*, not from the encoder: log p(x) - "
            "ELBO(q_phi) is the sum of both gaps": flat(log_px - elbo_phi, elbo_star - elbo_phi),
            "the amortization gap is ELBO(q*) - ELBO(q_phi), not log p(x) - ELBO(q_phi), which is the sum of both "
            "gaps": flat(log_px - elbo_star, log_px - elbo_phi),
            "ELBO(q*) was estimated at the encoder's draws: each q's ELBO averages over its own draws, z = mean + "
            "exp(log_scale) * eps with that q's mean and log_scale (the same eps for both)": flat(
                log_px - shared, shared - elbo_phi
            ),
            "the ELBO misses its -log q(z) term: ELBO = E_q[log p(x, z) - log q(z)]": flat(
                log_px - plain_star, plain_star - plain_phi
            ),
            "exp(log_scale) is already the standard deviation: do not square it": flat(
                log_px - var_star, var_star - var_phi
            ),
            "the encoder's and the best Gaussian's parameters are swapped: encoder_q is the third argument, "
            "best_q the fourth": flat(log_px - elbo_phi, elbo_phi - elbo_star),
            swapped.format("both calls of gaussian_elbo_terms"): flat(
                log_px - swapped_star, swapped_star - swapped_phi
            ),
            swapped.format("the encoder's call of gaussian_elbo_terms"): flat(
                log_px - elbo_star, elbo_star - swapped_phi
            ),
            swapped.format("the call of gaussian_elbo_terms for q*"): flat(
                log_px - swapped_star, swapped_star - elbo_phi
            ),
        },
        context=f" ({B} data points of a linear-Gaussian model with a correlated posterior, {S} shared draws)",
        labels=[f"the approximation gap of point {i}" for i in range(B)]
        + [f"the amortization gap of point {i}" for i in range(B)],
    )
    return "matches log p(x) - ELBO(q*) and ELBO(q*) - ELBO(q_phi) per data point, with the draws given."


def _call_refine(refine, *args, **kwargs):
    """``call_learner`` for 4.6: a modified starting point is answered with what to do in a refinement (optimise
    copies of ``mean`` and ``log_scale``), not with the shared advice to write ``mean = mean + ...``."""
    try:
        return call_learner(refine, *args, **kwargs)
    except Mistake as exc:
        text = str(exc)
        if " in place (shape " in text and "work on a copy (" in text:
            text = (
                text.split("work on a copy (", 1)[0]
                + "optimise copies, m = mean.detach().clone().requires_grad_(True) (and the same for log_scale), "
                "and return those"
            )
        if text.startswith(_INPLACE):
            text = (
                "your function changes a tensor in place that autograd still needs (`m += ...`, `m[i] = ...` or a "
                "method ending in `_` on a tensor in the graph); let the optimiser update m and log_scale "
                "(optimizer.step()), and build every other tensor anew, `z = m + log_scale.exp() * eps`"
                + text[len(_INPLACE) :]
            )
        fail(text)


def _check_fresh_draws(draws, start_mean, start_log_scale, S, context):
    r"""Name draws reused across steps. The first call's ``z`` gives its noise,
    :math:`\varepsilon = (z - m_0)/e^{\log s_0}`; every later ``z`` made from the same noise is
    :math:`m + s\odot\varepsilon` with ``m`` and ``s`` shared by the ``S`` draws, so for each data point and
    coordinate it is an exact affine function of :math:`\varepsilon` over the draws. Fresh draws never are."""
    draws = [z for z in draws if z.shape == (S, *start_mean.shape)]
    if len(draws) < 2:
        return
    eps = (draws[0] - start_mean) / start_log_scale.exp()  # (S, B, L)
    centred = eps - eps.mean(0)
    if (centred.abs().amax(0) < 1e-12).any():
        fail(
            f"the S = {S} draws of a data point are all equal: draw S independent standard normal samples for "
            f"every data point, noise of shape (S, B, L), not one sample repeated{context}"
        )
    if all(torch.equal(z, draws[0]) for z in draws[1:]):
        return  # the parameters never moved: what to do about that is said below
    for z in draws[1:]:
        zc = z - z.mean(0)
        slope = (zc * centred).sum(0) / (centred * centred).sum(0)  # (B, L) least squares
        residual = (zc - slope * centred).abs().max()
        if residual > 1e-8 * (1 + z.abs().max()):
            return  # new noise: fresh draws at this step
    fail(
        f"the draws were made once and reused at every step: the noise of step t is the noise of step 1 (seen "
        f"in the z your function passes to log_joint). Draw fresh eps, shape (S, B, L), at every step: with "
        f"the same draws each step ascends the ELBO of those {S} draws only, and the optimum it converges to "
        f"is that estimate's, not the ELBO's{context}"
    )


def _check_refine_arguments(refine, x, start_mean, start_log_scale, steps=3, lr=0.01, S=5):
    r"""``steps``, ``lr`` and ``S`` are honoured: on a log joint linear in :math:`z`, :math:`c^\top z`, the ELBO's
    gradient in the mean is the constant :math:`c`, and Adam moves each coordinate by ``lr`` per step toward
    :math:`\mathrm{sign}(c)` (its update is :math:`\hat m/\sqrt{\hat v} = \pm 1` for a constant gradient), so after
    ``steps`` steps the means have moved by ``steps * lr``; the shapes of the ``z`` it is evaluated at show ``S``."""
    c = torch.tensor([3.0, -2.0], dtype=_F64)
    shapes, draws = [], []

    def linear_log_joint(x_, z):
        shapes.append(tuple(z.shape))
        draws.append(z.detach().clone())
        return (z * c).sum(-1)

    context = f" (called with steps = {steps}, lr = {lr}, S = {S} on a log joint linear in z)"
    out = _call_refine(refine, x, start_mean, start_log_scale, linear_log_joint, steps, lr=lr, S=S)
    mean, _ = as_tensor_tuple(out, ("mean", "log_scale"))
    expect_shape(mean, start_mean.shape, " (for mean)" + context)
    sizes = {shape[0] for shape in shapes if len(shape) == 3}
    if sizes and S not in sizes:
        fail(
            f"the log joint was evaluated on z of shape {shapes[0]}: draw the S = {S} samples per data point "
            f"you are asked for, z of shape (S, B, L), not a fixed number{context}"
        )
    _check_fresh_draws(draws, start_mean, start_log_scale, S, context)
    moved = float(((mean.detach() - start_mean) * c.sign()).mean()) / (steps * lr)  # 1 for steps Adam steps at lr
    if torch.equal(mean.detach(), start_mean):
        fail(
            f"after {steps} steps the means have not moved: step the optimiser on copies that require gradients, "
            "and return those copies" + context
        )
    named_sgd = float(c.abs().mean())
    named = {
        -1.0: "the means moved away from higher ELBO: ascend the ELBO (minimise loss = -elbo)",
        (steps - 1) / steps: f"took {steps - 1} steps for steps = {steps}: one step short (range(steps))",
        (steps + 1) / steps: f"took {steps + 1} steps for steps = {steps}: one step too many (range(steps))",
        0.05 / lr: "ignores its lr argument (moved as if lr = 0.05): pass lr to the optimiser",
        0.005 / lr: "ignores its lr argument (moved as if lr = 0.005): pass lr to the optimiser",
        named_sgd: "moved by lr times the gradient, as plain gradient descent does: use torch.optim.Adam",
    }
    per_coordinate = (mean.detach() - start_mean) * c.sign() / (steps * lr)  # (B, L): each 1 for a right answer
    if not 0.85 <= moved <= 1.05 or per_coordinate.std() > 0.2:
        for ratio, message in named.items():
            if abs(moved - ratio) <= 0.1 * abs(ratio) and (per_coordinate.std() <= 0.2 or ratio == named_sgd):
                fail(message + context)
        if per_coordinate.std() > 0.2:
            fail(
                "the means moved by different amounts, some away from higher log p(x, z), as if driven by noise: "
                "the gradient of log p(x, z) does not reach them. Build the draws from the parameters being "
                "optimised, z = m + exp(log_scale) * eps, with no .detach() or torch.no_grad() between them and the "
                "loss (gaussian_elbo_terms does this for you)" + context
            )
        fail(
            f"the means moved {moved:.2f} x steps x lr{context}, as if lr were {moved * lr:.3g}: pass lr to "
            "torch.optim.Adam, which moves each coordinate by about lr per step when the gradient is constant"
        )


@checker("4.6", "semi-amortized refinement")
def check_refine(refine):
    model = _ppca()
    _, x = model.sample(6, generator=torch.Generator().manual_seed(2))
    mu, cov = model.posterior(x)
    sd = cov.diagonal().sqrt()
    start_mean = torch.zeros(6, model.L, dtype=_F64)
    start_log_scale = torch.zeros(6, model.L, dtype=_F64)
    kept_mean, kept_log_scale = start_mean.clone(), start_log_scale.clone()

    def kl(mean, log_scale):
        return kl_divergence(Normal(mean, log_scale.exp()), Normal(mu, sd)).sum(-1)  # (B,)

    same = as_tensor_tuple(
        _call_refine(refine, x, start_mean, start_log_scale, model.log_joint, 0), ("mean", "log_scale")
    )
    if not (torch.equal(same[0].detach(), start_mean) and torch.equal(same[1].detach(), start_log_scale)):
        fail(
            "with steps = 0 it must return the starting point unchanged, but it returned another point: take "
            "exactly `steps` optimiser steps (range(steps), none for steps = 0), then return the optimised copies"
        )
    _check_refine_arguments(refine, x, start_mean, start_log_scale)
    mean, log_scale = as_tensor_tuple(
        _call_refine(refine, x, start_mean, start_log_scale, model.log_joint, 100), ("mean", "log_scale")
    )
    if not (torch.equal(start_mean, kept_mean) and torch.equal(start_log_scale, kept_log_scale)):
        fail(
            "it changed the mean or log_scale it was given in place; optimise copies: "
            "m = mean.detach().clone().requires_grad_(True)"
        )
    expect_shape(mean, start_mean.shape, " (for mean)")
    expect_shape(log_scale, start_log_scale.shape, " (for log_scale)")
    expect_finite(flat(mean, log_scale))
    if mean.requires_grad or log_scale.requires_grad:
        fail("return detached tensors (.detach()), so later code cannot backpropagate into the refinement")
    before, after = kl(start_mean, start_log_scale).mean(), kl(mean, log_scale).mean()
    if torch.equal(mean, start_mean) and torch.equal(log_scale, start_log_scale):
        fail(
            "after 100 steps, mean and log_scale have not moved: step the optimiser on copies that require "
            "gradients, and return those copies"
        )
    if torch.equal(log_scale, start_log_scale):
        fail("after 100 steps, log_scale has not moved: optimise it together with the mean")
    if torch.equal(mean, start_mean):
        fail("after 100 steps, the mean has not moved: optimise it together with log_scale")
    if after > before:
        fail(
            f"the fit got worse (KL to the exact posterior {fmt(before)} -> {fmt(after)}), although each step points "
            "the right way (a probe with a log joint linear in z moved the means toward a higher ELBO): the "
            "gradients accumulate from step to step. Call optimizer.zero_grad() before each backward()"
        )
    ref_mean, ref_log_scale = amortized.refine(x, start_mean, start_log_scale, model.log_joint, 100)
    if after > 0.1:  # the reference reaches 0.01-0.04 nats, depending on the draws
        fail(
            f"100 steps from the prior took the mean KL to the exact posterior from {fmt(before)} only to "
            f"{fmt(after)} (the reference reaches {fmt(kl(ref_mean, ref_log_scale).mean())}): use Adam with "
            "lr = 0.05 on each data point's reparameterised ELBO, with fresh draws eps at every step, and "
            "optimizer.zero_grad() before each backward()"
        )
    return (
        f"100 steps took the mean KL to the exact posterior from {before:.3f} to {after:.3f} nats; "
        "steps = 0 leaves the start unchanged."
    )


# ---------------------------------------------------------------- 4.7 the break-even count


@checker("4.7", "the break-even number of new data points")
def check_break_even(break_even):
    r"""Compare with :func:`helpers.amortized.break_even` on costs where the slips differ: an exact division
    (where the totals tie, so ``<=`` and ``<`` differ), a fractional one (ceil, floor and round differ), an
    encoder that costs nothing, encoders as slow as or slower than optimisation (never pays), and no training
    cost (0, even for an encoder dearer than optimisation)."""
    cases = [  # (train, optimise, encode): exactly representable, so the exact divisions are exact
        (6.0, 0.5, 0.25),  # T / (o - e) = 24 exactly: the totals tie at n = 24
        (2.0, 0.0625, 0.015625),  # 42.67: floor, ceiling and every other slip differ
        (10.0, 0.3, 0.0),  # an encoder that costs nothing
        (7.5, 0.75, 0.5),  # 30 exactly
    ]
    for T, o, e in cases:
        context = f" (train_cost = {T:g}, optimise_cost = {o:g}, encode_cost = {e:g})"
        out = call_learner(break_even, T, o, e)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if not isinstance(out, numbers.Real) or isinstance(out, bool):
            fail(f"returned a {type(out).__name__}; return a whole number of data points (an int){context}")
        ref = amortized.break_even(T, o, e)
        if out == ref:
            continue
        ratio = T / (o - e)
        named = {
            math.floor(ratio): "rounded down (floor, or round where the fraction is below 1/2): there amortization "
            "is still more expensive; take the smallest whole n with T + n e <= n o, the ceiling of T / (o - e)",
            T / (o - e): "return a whole number of data points: the smallest integer n with T + n e <= n o",
            math.ceil(T / o): "forgot the encoder's own cost per point: the amortized total is T + n e, not T",
            math.ceil((o - e) / T): "the ratio is upside down: n (o - e) >= T gives n >= T / (o - e)",
            math.ceil(T / (o + e)): "the encoder's cost is subtracted from the optimisation's: n (o - e) >= T",
            math.floor(ratio) + 1: "counted the first n where amortization is strictly cheaper; the break-even "
            "point is the first n where it is no more expensive (T + n e <= n o), so a tie counts",
        }
        for value, message in named.items():
            if out == value:
                fail(message + context)
        fail(f"expected {ref}, got {out}{context}")
    for T, o, e in ((3.0, 0.2, 0.2), (3.0, 0.1, 0.4)):
        context = f" (train_cost = {T:g}, optimise_cost = {o:g}, encode_cost = {e:g})"
        out = call_learner(break_even, T, o, e)
        if out != math.inf:
            fail(
                f"returned {out!r}: when encoding a point costs at least as much as optimising it, amortization "
                f"never pays for its training; return math.inf{context}"
            )
    for T, o, e in ((0.0, 0.5, 0.1), (0.0, 0.2, 0.3)):
        context = f" (train_cost = {T:g}, optimise_cost = {o:g}, encode_cost = {e:g})"
        out = call_learner(break_even, T, o, e)
        if out != 0:
            fail(
                f"returned {out!r}: with no training cost, n = 0 already satisfies T + n e <= n o (0 <= 0), whatever "
                f"the costs per point; return 0{context}"
            )
    return (
        "the smallest n with train + n * encode <= n * optimise: 0 without a training cost, math.inf when the "
        "encoder is no cheaper and training cost something."
    )
