"""The amortized-inference checkers (lesson 04) accept correct answers written
in different ways and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import BAD_ANSWERS, accepts, never_raises, rejects, run
from torch.distributions import Independent, Normal

from helpers import amortized
from helpers.checks import (
    check_amortized_elbo,
    check_break_even,
    check_inference_gaps,
    check_linear_encoder,
    check_refine,
)

# ------------------------------------------------------------ exercise 4.1


def elbo_exact_entropy(x, encoder, log_joint, eps):
    mean, log_scale = encoder(x)
    z = mean + log_scale.exp() * eps
    return log_joint(x, z).mean(0) + Normal(mean, log_scale.exp()).entropy().sum(-1)


def elbo_independent(x, encoder, log_joint, eps):
    mean, log_scale = encoder(x)
    q = Independent(Normal(mean, torch.exp(log_scale)), 1)
    z = mean + torch.exp(log_scale) * eps
    return torch.mean(log_joint(x, z) - q.log_prob(z), dim=0)


def elbo_standard_normal(x, encoder, log_joint, eps):
    mean, log_scale = encoder(x)
    z = mean + log_scale.exp() * eps
    log_q = Normal(0.0, 1.0).log_prob(eps).sum(-1) - log_scale.sum(-1)  # change of variables
    return (log_joint(x, z) - log_q).mean(0)


def elbo_sticking_the_landing(x, encoder, log_joint, eps):
    mean, log_scale = encoder(x)
    z = mean + log_scale.exp() * eps
    return (log_joint(x, z) - Normal(mean.detach(), log_scale.exp().detach()).log_prob(z).sum(-1)).mean(0)


@pytest.mark.parametrize(
    "fn",
    [amortized.amortized_elbo, elbo_exact_entropy, elbo_independent, elbo_standard_normal, elbo_sticking_the_landing],
)
def test_amortized_elbo_accepts(fn, capsys):
    accepts(check_amortized_elbo, fn, capsys)


def test_amortized_elbo_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(x, encoder, log_joint, eps):
        mean, log_scale = encoder(x)
        scale = log_scale.exp()  # exp's backward needs its output ...
        z = mean + scale * eps
        log_q = Normal(mean, scale).log_prob(z).sum(-1)
        scale.mul_(1.0)  # ... which is then modified in place
        return (log_joint(x, z) - log_q).mean(0)

    rejects(check_amortized_elbo, in_place, capsys, "changes a tensor in place", "x = x + ...")


def test_amortized_elbo_names_mistakes(capsys):
    def variant(z_of=None, use_log_q=True, reduce=lambda t: t.mean(0), detach=False):
        def fn(x, encoder, log_joint, eps):
            mean, log_scale = encoder(x)
            if detach:
                mean, log_scale = mean.detach(), log_scale.detach()
            z = mean + log_scale.exp() * eps if z_of is None else z_of(mean, log_scale, eps)
            log_q = Normal(mean, log_scale.exp()).log_prob(z).sum(-1) if use_log_q else 0.0
            return reduce(log_joint(x, z) - log_q)

        return fn

    rejects(check_amortized_elbo, variant(reduce=lambda t: t.mean()), capsys, "one ELBO per data point")
    rejects(check_amortized_elbo, variant(reduce=lambda t: t), capsys, "average over the S draws")
    rejects(check_amortized_elbo, variant(z_of=lambda m, ls, e: m + ls * e), capsys, "exp(log_scale)")
    rejects(check_amortized_elbo, variant(use_log_q=False), capsys, "missing the -log q(z | x) term")
    rejects(check_amortized_elbo, variant(z_of=lambda m, ls, e: m.expand_as(e)), capsys, "not the mean itself")
    rejects(check_amortized_elbo, variant(reduce=lambda t: -t.mean(0)), capsys, "sign error")
    rejects(check_amortized_elbo, variant(reduce=lambda t: t.sum(0)), capsys, "summed over the S draws")
    rejects(check_amortized_elbo, variant(detach=True), capsys, "no gradient reaches the encoder")

    def no_latent_sum(x, encoder, log_joint, eps):  # (S, B) - (S, B, L): a broadcasting error
        mean, log_scale = encoder(x)
        z = mean + log_scale.exp() * eps
        return (log_joint(x, z) - Normal(mean, log_scale.exp()).log_prob(z)).mean(0)

    def no_latent_sum_aligned(x, encoder, log_joint, eps):  # broadcasts by hand: one ELBO per coordinate
        mean, log_scale = encoder(x)
        z = mean + log_scale.exp() * eps
        return (log_joint(x, z).unsqueeze(-1) - Normal(mean, log_scale.exp()).log_prob(z)).mean(0)

    rejects(check_amortized_elbo, no_latent_sum, capsys, "sum log q over the latent axis (dim -1)", "(S, B, L)")
    rejects(check_amortized_elbo, no_latent_sum_aligned, capsys, "returned shape (4, 3)", "sum log q over the latent")
    rejects(
        check_amortized_elbo,
        variant(reduce=lambda t: t.mean(1)),
        capsys,
        "averaged over the B = 4 data points (dim 1)",
        "over the S = 5 draws (dim 0)",
    )
    rejects(
        check_amortized_elbo,
        variant(z_of=lambda m, ls, e: m + ls.exp() * torch.randn_like(e)),
        capsys,
        "Use the eps you are given",
    )

    def latent_mean(x, encoder, log_joint, eps):  # log q averaged over the L coordinates instead of summed
        mean, log_scale = encoder(x)
        z = mean + log_scale.exp() * eps
        return (log_joint(x, z) - Normal(mean, log_scale.exp()).log_prob(z).mean(-1)).mean(0)

    rejects(check_amortized_elbo, latent_mean, capsys, "averages its L = 3 one-dimensional log densities", "sum")

    # right value, wrong gradient: the draw does not depend on the parameters
    rejects(
        check_amortized_elbo,
        variant(z_of=lambda m, ls, e: (m + ls.exp() * e).detach()),
        capsys,
        "gradients with respect to the encoder are not",
    )


# ------------------------------------------------------------ exercise 4.4


def encoder_inverse(W, b, sigma):
    L = W.shape[1]
    precision = torch.eye(L, dtype=W.dtype) + W.T @ W / sigma**2
    A = torch.linalg.inv(precision) @ W.T / sigma**2
    return A, -A @ b, -0.5 * torch.log(torch.diagonal(precision))


def encoder_scaled_solve(W, b, sigma):
    scaled = sigma**2 * torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W  # sigma^2 times the precision
    A = torch.linalg.solve(scaled, W.T)
    log_variance = 2 * math.log(sigma) - torch.log(torch.diag(scaled))  # 1 / Lambda_ll = sigma^2 / diag(scaled)
    return A, -(A @ b), 0.5 * log_variance


def encoder_push_through(W, b, sigma):
    D = W.shape[0]
    A = W.T @ torch.linalg.inv(W @ W.T + sigma**2 * torch.eye(D, dtype=W.dtype))  # W^T (W W^T + sigma^2 I)^{-1}
    column_lengths = (W**2).sum(0)  # diag(W^T W), the squared lengths of the columns
    return A, -torch.mv(A, b), -0.5 * torch.log1p(column_lengths / sigma**2)


def encoder_cholesky(W, b, sigma):
    precision = torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / sigma**2
    A = torch.cholesky_solve(W.T / sigma**2, torch.linalg.cholesky(precision))
    return A, -A @ b, (1 / precision.diagonal().sqrt()).log()


@pytest.mark.parametrize(
    "fn", [amortized.best_linear_encoder, encoder_inverse, encoder_scaled_solve, encoder_push_through, encoder_cholesky]
)
def test_linear_encoder_accepts(fn, capsys):
    accepts(check_linear_encoder, fn, capsys)


def _encoder_with(precision_of=None, A_of=None, c_of=None, log_scale_of=None):
    """The reference answer with one piece written another way (right or wrong)."""

    def fn(W, b, sigma):
        L = W.shape[1]
        precision = (
            (torch.eye(L, dtype=W.dtype) + W.T @ W / sigma**2) if precision_of is None else precision_of(W, sigma)
        )
        cov = torch.linalg.inv(precision)
        A = cov @ W.T / sigma**2 if A_of is None else A_of(W, sigma, precision, cov)
        c = -A @ b if c_of is None else c_of(A, b)
        log_scale = -0.5 * precision.diagonal().log() if log_scale_of is None else log_scale_of(precision, cov)
        return A, c, log_scale

    return fn


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        # the log-scales: the marginal variances, the factor 2, the sign, the scale itself
        (_encoder_with(log_scale_of=lambda P, C: 0.5 * C.diagonal().log()), "marginal variances Sigma_ll"),
        (_encoder_with(log_scale_of=lambda P, C: 0.5 * C.diagonal().log()), "KL(p || q)"),
        (_encoder_with(log_scale_of=lambda P, C: C.diagonal().log()), "twice over wrong"),
        (_encoder_with(log_scale_of=lambda P, C: -P.diagonal().log()), "log of the variance 1 / Lambda_ll"),
        (_encoder_with(log_scale_of=lambda P, C: -0.25 * P.diagonal().log()), "a quarter of the log-variance"),
        (_encoder_with(log_scale_of=lambda P, C: 0.5 * P.diagonal().log()), "sign slip"),
        (_encoder_with(log_scale_of=lambda P, C: P.diagonal().rsqrt()), "standard deviations 1 / sqrt(Lambda_ll)"),
        (_encoder_with(log_scale_of=lambda P, C: 1 / P.diagonal()), "returned the variances"),
        # the precision: sigma^2 missing (everywhere, or in the precision only), sigma for sigma^2, no prior
        (_encoder_with(precision_of=lambda W, s: torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W), "misses sigma^2"),
        (
            _encoder_with(
                precision_of=lambda W, s: torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W,
                A_of=lambda W, s, P, C: C @ W.T,
            ),
            "misses sigma^2",
        ),
        (_encoder_with(log_scale_of=lambda P, C: -0.5 * (P.diagonal() - 1).log()), "misses the prior's identity"),
        (
            _encoder_with(precision_of=lambda W, s: torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s),
            "not I + W^T W / sigma",
        ),
        (
            _encoder_with(
                precision_of=lambda W, s: torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / 0.25,
                A_of=lambda W, s, P, C: C @ W.T / 0.25,
            ),
            "ignores its argument sigma",
        ),
        (
            _encoder_with(
                precision_of=lambda W, s: torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s,
                A_of=lambda W, s, P, C: C @ W.T / s,
            ),
            "divide by sigma^2, not sigma",
        ),
        # the mean map
        (_encoder_with(A_of=lambda W, s, P, C: torch.linalg.pinv(W)), "misses the prior's identity"),
        (_encoder_with(c_of=lambda A, b: A @ b), "c = -A b"),
        (_encoder_with(c_of=lambda A, b: torch.zeros(A.shape[0], dtype=A.dtype)), "c is not zero"),
        (_encoder_with(A_of=lambda W, s, P, C: W.T / s**2), "misses the posterior covariance"),
        (_encoder_with(A_of=lambda W, s, P, C: C @ W.T), "misses the 1 / sigma^2 on the right-hand side"),
        (_encoder_with(A_of=lambda W, s, P, C: P @ W.T / s**2), "instead of its inverse"),
        (
            _encoder_with(A_of=lambda W, s, P, C: torch.diag(1 / P.diagonal()) @ W.T / s**2),
            "only the diagonal of the precision",
        ),
        # shapes
        (_encoder_with(A_of=lambda W, s, P, C: (C @ W.T / s**2).T, c_of=lambda A, b: -(b @ A)), "so its shape is"),
        (_encoder_with(log_scale_of=lambda P, C: -0.5 * P.log()), "a matrix"),
        (lambda W, b, s: amortized.best_linear_encoder(W, b, s)[:2], "return the tuple (A, c, log_scale)"),
    ],
)
def test_linear_encoder_names_mistakes(fn, words, capsys):
    rejects(check_linear_encoder, fn, capsys, words)


def test_linear_encoder_names_w_w_transpose(capsys):
    def outer_precision(W, b, sigma):  # W W^T: a D x D matrix where the L x L precision belongs
        D, L = W.shape
        precision = torch.eye(L, dtype=W.dtype) + W @ W.T / sigma**2
        A = torch.linalg.solve(precision, W.T) / sigma**2
        return A, -A @ b, -0.5 * precision.diagonal().log()

    def outer_diagonal(W, b, sigma):  # the mean right, the precision's diagonal from W W^T
        A, c, _ = amortized.best_linear_encoder(W, b, sigma)
        return A, c, -0.5 * torch.log1p((W**2).sum(1) / sigma**2)

    def solves_with_w(W, b, sigma):  # the precision right, W where W^T belongs on the right-hand side
        L = W.shape[1]
        precision = torch.eye(L, dtype=W.dtype) + W.T @ W / sigma**2
        A = torch.linalg.solve(precision, W) / sigma**2
        return A, -A @ b, -0.5 * precision.diagonal().log()

    rejects(check_linear_encoder, outer_precision, capsys, "W^T W", "not from W W^T", "L = 2")
    rejects(check_linear_encoder, solves_with_w, capsys, "right-hand side W^T is (L, D) = (2, 4), not W")
    rejects(check_linear_encoder, outer_diagonal, capsys, "log_scale has shape (4,)", "not from W W^T")


def test_linear_encoder_checks_a_second_size(capsys):
    def two_latents_only(W, b, sigma):  # an identity of size 2, the lesson's L
        precision = torch.eye(2, dtype=W.dtype) + W.T @ W / sigma**2
        A = torch.linalg.solve(precision, W.T) / sigma**2
        return A, -A @ b, -0.5 * precision.diagonal().log()

    rejects(
        check_linear_encoder,
        two_latents_only,
        capsys,
        "your function raised",
        "L = W.shape[1], not from the lesson's L = 2",
    )


# ------------------------------------------------------------ exercise 4.6


def refine_sgd_loop(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
    m = mean.clone().detach().requires_grad_(True)
    ls = log_scale.clone().detach().requires_grad_(True)
    opt = torch.optim.Adam([m, ls], lr=lr)
    for _ in range(steps):
        eps = torch.randn(S, *m.shape, dtype=m.dtype)
        z = m + ls.exp() * eps
        elbo = (log_joint(x, z) - Normal(m, ls.exp()).log_prob(z).sum(-1)).mean(0)
        opt.zero_grad()
        (-elbo.mean()).backward()  # the mean over data points: Adam is invariant to the scale
        opt.step()
    return m.detach(), ls.detach()


@pytest.mark.parametrize("fn", [amortized.refine, refine_sgd_loop])
def test_refine_accepts(fn, capsys):
    accepts(check_refine, fn, capsys)


def test_refine_names_mistakes(capsys):
    def sign_flipped(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        return amortized.fit_per_datapoint(
            x,
            lambda x, z: -log_joint(x, z),
            mean.shape[-1],
            steps,
            lr=lr,
            S=S,
            final_lr_factor=1.0,
            init=(mean, log_scale),
        )

    def in_place(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        m, ls = amortized.refine(x, mean, log_scale, log_joint, steps, lr, S)
        mean.copy_(m)
        log_scale.copy_(ls)
        return mean, log_scale

    def not_detached(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        m, ls = amortized.refine(x, mean, log_scale, log_joint, steps, lr, S)
        return m.requires_grad_(True), ls

    def too_slow(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        return amortized.refine(x, mean, log_scale, log_joint, steps, lr=1e-4, S=S)

    rejects(check_refine, lambda x, m, ls, lj, steps, lr=0.05, S=8: (m.clone(), ls.clone()), capsys, "not moved")
    rejects(check_refine, sign_flipped, capsys, "ascend the ELBO")
    rejects(check_refine, in_place, capsys, "in place")
    rejects(check_refine, not_detached, capsys, "detached")
    rejects(check_refine, too_slow, capsys, "as if lr were 0.0001")
    rejects(check_refine, lambda x, m, ls, lj, steps, lr=0.05, S=8: (m + 1.0, ls), capsys, "steps = 0")

    def one_step_too_many(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):  # range(steps + 1)
        return amortized.refine(x, mean, log_scale, log_joint, steps + 1, lr, S)

    rejects(check_refine, one_step_too_many, capsys, "with steps = 0", "range(steps), none for steps = 0")

    def fixed_noise(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):  # one set of draws for every step
        m = mean.detach().clone().requires_grad_(True)
        ls = log_scale.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([m, ls], lr=lr)
        eps = torch.randn(S, *m.shape, dtype=m.dtype)
        for _ in range(steps):
            z = m + ls.exp() * eps
            loss = -(log_joint(x, z) - Normal(m, ls.exp()).log_prob(z).sum(-1)).mean(0).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m.detach(), ls.detach()

    rejects(check_refine, fixed_noise, capsys, "reused at every step", "Draw fresh eps")

    def reseeded(S, m):  # fresh-looking draws, the same every step
        return torch.randn(S, *m.shape, generator=torch.Generator().manual_seed(0), dtype=m.dtype)

    def one_draw_repeated(S, m):  # S copies of one draw
        return torch.randn(1, *m.shape, dtype=m.dtype).expand(S, *m.shape)

    rejects(check_refine, _refine_with(noise=reseeded), capsys, "reused at every step")
    rejects(check_refine, _refine_with(noise=one_draw_repeated), capsys, "draws of a data point are all equal")
    accumulates = _refine_with(clear_gradients=False)  # never clears the gradients
    rejects(check_refine, accumulates, capsys, "gradients accumulate", "zero_grad()")

    def mean_only(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        m, _ = amortized.refine(x, mean, log_scale, log_joint, steps, lr, S)
        return m, log_scale.clone()

    rejects(check_refine, mean_only, capsys, "log_scale has not moved")


def test_refine_names_detached_draws_and_its_own_arguments(capsys):
    def detached_z(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        m = mean.detach().clone().requires_grad_(True)
        ls = log_scale.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([m, ls], lr=lr)
        for _ in range(steps):
            z = (m + ls.exp() * torch.randn(S, *m.shape, dtype=m.dtype)).detach()
            loss = -(log_joint(x, z) - Normal(m, ls.exp()).log_prob(z).sum(-1)).mean(0).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m.detach(), ls.detach()

    rejects(check_refine, detached_z, capsys, "as if driven by noise", "no .detach()")
    result, out = run(check_refine, detached_z, capsys)
    assert "pass lr" not in out

    def mutates_mean(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        m, ls = amortized.refine(x, mean, log_scale, log_joint, steps, lr, S)
        mean.add_(m - mean)
        return m, ls

    rejects(check_refine, mutates_mean, capsys, "argument `mean` in place", "mean.detach().clone()")
    result, out = run(check_refine, mutates_mean, capsys)
    assert "argument 2" not in out and "x = x + ..." not in out

    def in_place_in_graph(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        m = mean.detach().clone().requires_grad_(True)
        ls = log_scale.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([m, ls], lr=lr)
        for _ in range(steps):
            scale = ls.exp()
            z = m + scale * torch.randn(S, *m.shape, dtype=m.dtype)
            loss = -amortized.gaussian_elbo_terms(x, m, ls, log_joint, torch.randn(S, *m.shape, dtype=m.dtype)).sum()
            loss = loss - 0.0 * log_joint(x, z).sum()
            scale.mul_(1.0)  # exp's backward needs its output
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m.detach(), ls.detach()

    rejects(check_refine, in_place_in_graph, capsys, "in place", "`m += ...`", "optimizer.step()")
    result, out = run(check_refine, in_place_in_graph, capsys)
    assert "x = x + ..." not in out


def _fresh_noise(S, m):
    return torch.randn(S, *m.shape, dtype=m.dtype)


def _refine_with(
    steps_of=lambda k: k,
    lr_of=lambda lr: lr,
    S_of=lambda S: S,
    optimizer=torch.optim.Adam,
    noise=_fresh_noise,
    clear_gradients=True,
):
    """A refinement loop (exercise 4.6) with one piece written another way: the steps, the learning rate, the
    number of draws, the optimiser, the draws at each step ``noise(S, m)``, clearing the gradients or not."""

    def refine(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
        m = mean.detach().clone().requires_grad_(True)
        ls = log_scale.detach().clone().requires_grad_(True)
        opt = optimizer([m, ls], lr=lr_of(lr))
        for _ in range(steps_of(steps)):
            z = m + ls.exp() * noise(S_of(S), m)
            loss = -(log_joint(x, z) - Normal(m, ls.exp()).log_prob(z).sum(-1)).mean(0).sum()
            if clear_gradients:
                opt.zero_grad()
            loss.backward()
            opt.step()
        return m.detach(), ls.detach()

    return refine


def refine_sticking_the_landing(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
    m = mean.detach().clone().requires_grad_(True)
    ls = log_scale.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([m, ls], lr=lr)
    for _ in range(steps):
        z = m + ls.exp() * torch.randn(S, *m.shape, dtype=m.dtype)
        log_q = Normal(m.detach(), ls.detach().exp()).log_prob(z).sum(-1)
        opt.zero_grad()
        (-(log_joint(x, z) - log_q).mean()).backward()
        opt.step()
    return m.detach(), ls.detach()


def refine_with_given_elbo(x, mean, log_scale, log_joint, steps, lr=0.05, S=8):
    params = [t.detach().clone().requires_grad_(True) for t in (mean, log_scale)]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        eps = torch.randn(S, *mean.shape, dtype=mean.dtype)
        loss = -amortized.gaussian_elbo_terms(x, *params, log_joint, eps).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuple(p.detach() for p in params)


def test_refine_accepts_other_forms(capsys):
    accepts(check_refine, _refine_with(), capsys)
    accepts(check_refine, refine_sticking_the_landing, capsys)
    accepts(check_refine, refine_with_given_elbo, capsys)


@pytest.mark.parametrize(
    "fn, words",
    [
        (_refine_with(steps_of=lambda k: max(k - 1, 0)), "one step short"),
        (_refine_with(steps_of=lambda k: k + 1 if k else 0), "one step too many"),
        (_refine_with(lr_of=lambda lr: 0.05), "ignores its lr argument"),
        (_refine_with(S_of=lambda S: 8), "draw the S = 5 samples"),
        (_refine_with(optimizer=torch.optim.SGD), "use torch.optim.Adam"),
    ],
)
def test_refine_honours_steps_lr_and_S(fn, words, capsys):
    rejects(check_refine, fn, capsys, words)


# ------------------------------------------------------------ exercise 4.5


def gaps_reference(x, log_joint, encoder_q, best_q, log_px, eps):
    elbo_phi = amortized.gaussian_elbo_terms(x, *encoder_q, log_joint, eps)
    elbo_star = amortized.gaussian_elbo_terms(x, *best_q, log_joint, eps)
    return log_px - elbo_star, elbo_star - elbo_phi


def _elbo(x, log_joint, q, eps):
    mean, log_scale = q
    dist = Independent(Normal(mean, log_scale.exp()), 1)
    z = mean + log_scale.exp() * eps
    return (log_joint(x, z) - dist.log_prob(z)).mean(0)


def gaps_with_distributions(x, log_joint, encoder_q, best_q, log_px, eps):
    elbo_phi, elbo_star = _elbo(x, log_joint, encoder_q, eps), _elbo(x, log_joint, best_q, eps)
    return log_px - elbo_star, elbo_star - elbo_phi


def gaps_in_one_batch(x, log_joint, encoder_q, best_q, log_px, eps):
    # both q's stacked along a new axis and evaluated at once; the total gap split afterwards
    means = torch.stack([encoder_q[0], best_q[0]])  # (2, B, L)
    scales = torch.stack([encoder_q[1], best_q[1]]).exp()
    z = means.unsqueeze(1) + scales.unsqueeze(1) * eps  # (2, S, B, L)
    log_q = Normal(means.unsqueeze(1), scales.unsqueeze(1)).log_prob(z).sum(-1)
    elbos = (torch.stack([log_joint(x, z[0]), log_joint(x, z[1])]) - log_q).mean(1)  # (2, B)
    total = log_px - elbos[0]
    amortization = elbos[1] - elbos[0]
    return total - amortization, amortization


def gaps_total_minus_amortization(x, log_joint, encoder_q, best_q, log_px, eps):
    elbo_phi = amortized.gaussian_elbo_terms(x, encoder_q[0], encoder_q[1], log_joint, eps)
    elbo_star = amortized.gaussian_elbo_terms(x, best_q[0], best_q[1], log_joint, eps)
    total = log_px - elbo_phi  # the encoder's whole gap, then split
    return total - (elbo_star - elbo_phi), elbo_star - elbo_phi


@pytest.mark.parametrize(
    "fn", [gaps_reference, gaps_with_distributions, gaps_in_one_batch, gaps_total_minus_amortization]
)
def test_inference_gaps_accepts_correct_answers(fn, capsys):
    accepts(check_inference_gaps, fn, capsys)


def _fresh_noise(x, log_joint, encoder_q, best_q, log_px, eps):
    return gaps_reference(x, log_joint, encoder_q, best_q, log_px, torch.randn_like(eps))


def _squared_scale(x, log_joint, encoder_q, best_q, log_px, eps):
    def elbo(q):
        mean, log_scale = q
        scale = log_scale.exp() ** 2
        z = mean + scale * eps
        return (log_joint(x, z) - Normal(mean, scale).log_prob(z).sum(-1)).mean(0)

    return log_px - elbo(best_q), elbo(best_q) - elbo(encoder_q)


def _encoder_draws_for_both(x, log_joint, encoder_q, best_q, log_px, eps):
    z = encoder_q[0] + encoder_q[1].exp() * eps  # the encoder's draws, used for q* too

    def elbo(q):
        return (log_joint(x, z) - Normal(q[0], q[1].exp()).log_prob(z).sum(-1)).mean(0)

    return log_px - elbo(best_q), elbo(best_q) - elbo(encoder_q)


def _no_entropy(x, log_joint, encoder_q, best_q, log_px, eps):
    def elbo(q):
        return log_joint(x, q[0] + q[1].exp() * eps).mean(0)

    return log_px - elbo(best_q), elbo(best_q) - elbo(encoder_q)


def _mean_and_log_scale_swapped(which):
    def fn(x, log_joint, encoder_q, best_q, log_px, eps):
        qe = encoder_q[::-1] if which in ("both", "encoder") else encoder_q
        qb = best_q[::-1] if which in ("both", "best") else best_q
        return gaps_reference(x, log_joint, qe, qb, log_px, eps)

    return fn


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_mean_and_log_scale_swapped("both"), "mean and log_scale are swapped in both calls"),
        (_mean_and_log_scale_swapped("encoder"), "swapped in the encoder's call"),
        (_mean_and_log_scale_swapped("best"), "swapped in the call of gaussian_elbo_terms for q*"),
        (lambda *a: gaps_reference(*a)[::-1], "the two gaps are swapped"),
        (lambda *a: tuple(-g for g in gaps_reference(*a)), "wrong sign"),
        (
            lambda x, lj, qe, qb, lp, eps: (
                lp - amortized.gaussian_elbo_terms(x, *qe, lj, eps),
                gaps_reference(x, lj, qe, qb, lp, eps)[1],
            ),
            "measured from the best Gaussian q*",
        ),
        (_no_entropy, "misses its -log q(z) term"),
        (_squared_scale, "do not square it"),
        (_fresh_noise, "draws its own noise"),
        (_encoder_draws_for_both, "estimated at the encoder's draws"),
        (
            lambda x, lj, qe, qb, lp, eps: (
                gaps_reference(x, lj, qe, qb, lp, eps)[0],
                lp - amortized.gaussian_elbo_terms(x, *qe, lj, eps),
            ),
            "not log p(x) - ELBO(q_phi), which is the sum of both",
        ),
        (lambda x, lj, qe, qb, lp, eps: gaps_reference(x, lj, qb, qe, lp, eps), "parameters are swapped"),
        (lambda *a: tuple(g.mean() for g in gaps_reference(*a)), "one gap per data point"),
        (lambda *a: gaps_reference(*a)[0], "return the tuple"),
    ],
)
def test_inference_gaps_names_mistakes(fn, words, capsys):
    rejects(check_inference_gaps, fn, capsys, words)


# ------------------------------------------------------------ exercise 4.7


def break_even_loop(train, optimise, encode):  # search, as a learner might
    n = 0
    while train + n * encode > n * optimise:
        if encode >= optimise:  # the gap never closes
            return math.inf
        n += 1
    return n


def break_even_floor_division(train, optimise, encode):
    if train == 0:
        return 0
    return float("inf") if optimise <= encode else int(-(-train // (optimise - encode)))


def break_even_tensor(train, optimise, encode):
    gain = torch.tensor(optimise - encode, dtype=torch.float64)
    return torch.tensor(0) if train == 0 else math.inf if gain <= 0 else torch.ceil(train / gain)


@pytest.mark.parametrize("fn", [amortized.break_even, break_even_loop, break_even_floor_division, break_even_tensor])
def test_break_even_accepts(fn, capsys):
    accepts(check_break_even, fn, capsys)


def _never(fn):
    return lambda T, o, e: math.inf if e >= o else fn(T, o, e)


@pytest.mark.parametrize(
    "fn, words",
    [
        (_never(lambda T, o, e: math.floor(T / (o - e))), "rounded down"),
        (_never(lambda T, o, e: round(T / (o - e))), "rounded down"),
        (_never(lambda T, o, e: T / (o - e)), "whole number"),
        (_never(lambda T, o, e: math.ceil(T / o)), "forgot the encoder's own cost"),
        (_never(lambda T, o, e: math.ceil((o - e) / T)), "upside down"),
        (_never(lambda T, o, e: math.ceil(T / (o + e))), "subtracted"),
        (_never(lambda T, o, e: math.floor(T / (o - e)) + 1), "strictly cheaper"),
        (lambda T, o, e: math.ceil(T / (o - e)), "ZeroDivisionError"),
        (lambda T, o, e: math.ceil(T / (o - e)) if o != e else math.inf, "never pays"),
        (_never(lambda T, o, e: str(math.ceil(T / (o - e)))), "returned a str"),
        (lambda T, o, e: math.inf if e >= o else max(1, math.ceil(T / (o - e))), "no training cost"),
        (lambda T, o, e: math.inf if e >= o else math.ceil(T / (o - e)), "n = 0 already satisfies"),
    ],
)
def test_break_even_names_mistakes(fn, words, capsys):
    rejects(check_break_even, fn, capsys, words)


@pytest.mark.parametrize("bad", [(-1.0, 0.5, 0.1), (1.0, float("nan"), 0.1), (1.0, 0.5, None)])
def test_the_reference_break_even_rejects_bad_costs(bad):
    with pytest.raises(ValueError, match="finite non-negative number"):
        amortized.break_even(*bad)


def test_the_reference_break_even_on_a_tie():
    assert amortized.break_even(6.0, 0.5, 0.25) == 24  # 6 + 24 * 0.25 == 24 * 0.5: a tie counts
    assert amortized.break_even(6.0, 0.5, 0.5) == math.inf
    assert amortized.break_even(0.0, 0.5, 0.5) == 0  # no training cost: n = 0 already ties


@pytest.mark.parametrize(
    "checker", [check_amortized_elbo, check_linear_encoder, check_inference_gaps, check_refine, check_break_even]
)
@pytest.mark.parametrize("bad", BAD_ANSWERS)
def test_checkers_never_raise(checker, bad, capsys):
    never_raises(checker, bad, capsys)
