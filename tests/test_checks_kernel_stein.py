"""The checkers of helpers.checks.kernel_stein (lesson 07's 7.6, the kernel Stein discrepancy, and 7.7, the KSIVI
loss) accept correct answers written in different ways and name the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, kernel_and_replay, rejects

from helpers import kernel_stein
from helpers.checks import check_ksd_u_statistic, check_ksivi_loss

# ------------------------------------------------------------ 7.6: the kernel Stein discrepancy as a U-statistic


def _u_loop(z, diff, h):
    S, total = z.shape[0], 0.0
    for i in range(S):
        for j in range(S):
            if i != j:
                total = total + torch.exp(-((z[i] - z[j]) ** 2).sum() / (2 * h**2)) * (diff[i] * diff[j]).sum()
    return total / (S * (S - 1))


def _u_masked(z, diff, h):
    k = torch.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * h * h))
    mask = ~torch.eye(len(z), dtype=torch.bool)
    return (k * (diff @ diff.T))[mask].mean()


def _u_cdist(z, diff, h):  # cdist is fine for first derivatives
    gram = torch.exp(-(torch.cdist(z, z) ** 2) / (2 * h**2)) * (diff @ diff.T)
    return (gram.sum() - gram.trace()) / (len(z) * (len(z) - 1))


def _u_rows(z, diff, h):  # one Python loop over the draws, each row vectorised: S steps, fast enough for the fits
    S, total = z.shape[0], 0.0
    for i in range(S):
        row = torch.exp(-((z - z[i]) ** 2).sum(-1) / (2 * h**2)) * (diff @ diff[i])
        total = total + row.sum() - row[i]
    return total / (S * (S - 1))


def _u_vmap(z, diff, h):  # torch.func.vmap over the draws: the pairs at once, like a broadcast
    def row(zi, di):
        return torch.exp(-((z - zi) ** 2).sum(-1) / (2 * h**2)) * (diff @ di)

    terms = torch.func.vmap(row)(z, diff)
    return (terms.sum() - terms.diagonal().sum()) / (len(z) * (len(z) - 1))


@pytest.mark.parametrize("fn", [kernel_stein.ksd_u_statistic, _u_masked, _u_cdist, _u_rows, _u_vmap])
def test_ksd_u_statistic_accepts(fn, capsys):
    accepts(check_ksd_u_statistic, fn, capsys)


def _gram(z, diff, h, scale=2):
    return torch.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (scale * h**2)) * (diff @ diff.T)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda z, d, h: _gram(z, d, h).mean(), "diagonal i = j is included"),
        (lambda z, d, h: _gram(z, d, h).sum() / (len(z) * (len(z) - 1)), "diagonal is included"),
        (lambda z, d, h: (_gram(z, d, h).sum() - _gram(z, d, h).diagonal().sum()) / len(z) ** 2, "S(S - 1)"),
        (
            lambda z, d, h: (_gram(z, d, h, 1).sum() - _gram(z, d, h, 1).diagonal().sum()) / (len(z) * (len(z) - 1)),
            "factor 2",
        ),
        (lambda z, d, h: -_u_masked(z, d, h), "sign"),
        (lambda z, d, h: _gram(z, d, h), "(S, S) matrix"),
        (lambda z, d, h: _u_masked(z.detach(), d, h), "no gradient"),
        (
            lambda z, d, h: (
                ((torch.exp(-torch.cdist(z, z) / (2 * h**2)) * (d @ d.T)).sum() - (d**2).sum())
                / (len(z) * (len(z) - 1))
            ),
            "not the distance itself",
        ),
        (lambda z, d, h: ((d @ d.T).sum() - (d**2).sum()) / (len(z) * (len(z) - 1)), "kernel weights are missing"),
    ],
)
def test_ksd_u_statistic_names_mistakes(fn, words, capsys):
    rejects(check_ksd_u_statistic, fn, capsys, words)


def test_the_ksd_reports_the_learners_in_place_error_as_theirs(capsys):
    def in_place(z, d, h):
        k = torch.exp(-(torch.cdist(z, z) ** 2) / (2 * h**2))  # exp's backward needs its output ...
        out = ((k * (d @ d.T)).sum() - (d**2).sum()) / (len(z) * (len(z) - 1))
        k.mul_(1.0)  # ... which is then modified in place
        return out

    rejects(check_ksd_u_statistic, in_place, capsys, "changes a tensor in place")


def _u_pairs_listed(z, diff, h):  # the pairs i != j in a Python list: as slow as the double loop
    S = len(z)
    terms = [
        torch.exp(-((z[i] - z[j]) ** 2).sum() / (2 * h**2)) * torch.dot(diff[i], diff[j])
        for i in range(S)
        for j in range(S)
        if i != j
    ]
    return torch.stack(terms).mean()


def _u_rows_heavy(z, diff, h):  # a loop over the draws that runs an inner loop over the other draws' coordinates
    S, total = z.shape[0], 0.0
    for i in range(S):
        for j in range(S):
            if j != i:
                k = torch.exp(-(z[i] - z[j]).pow(2).sum() / (2 * h**2))
                total = total + k * sum(diff[i, l] * diff[j, l] for l in range(z.shape[1]))
    return total / (S * (S - 1))


@pytest.mark.parametrize("fn", [_u_loop, _u_pairs_listed, _u_rows_heavy])
def test_ksd_u_statistic_tells_a_loop_over_the_pairs_it_is_too_slow(fn, capsys):
    rejects(
        check_ksd_u_statistic,
        fn,
        capsys,
        "right so far, but too slow",
        "S = 128",
        "A Python loop runs over the pairs (i, j)",
        "one matrix product of diff with its transpose",
    )


def test_the_speed_of_the_ksd_is_counted_not_timed(capsys, monkeypatch):
    # the verdict reads no clock: a loaded machine (here, every clock reading an hour later than the last)
    # neither fails the vectorised answer nor passes the loop
    import time

    clock = iter(range(0, 10**9, 3600))
    for name in ("perf_counter", "time", "monotonic", "process_time", "thread_time"):
        monkeypatch.setattr(time, name, lambda: float(next(clock)))
    accepts(check_ksd_u_statistic, _u_masked, capsys)
    rejects(check_ksd_u_statistic, _u_loop, capsys, "too slow")


def _u_terms(z, diff, h, dots):
    gram = torch.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * h**2)) * dots
    return (gram.sum() - gram.diagonal().sum()) / (len(z) * (len(z) - 1))


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (
            lambda z, d, h: _u_terms(z, d, h, d.sum(1, keepdim=True) @ d.sum(1, keepdim=True).T),
            ["sums of their coordinates", "cross terms", "matrix product of diff with its transpose"],
        ),
        (lambda z, d, h: _u_terms(z, d, h, (d * d).sum(-1)), ["|d_j|^2", "a draw's own norm"]),
        (lambda z, d, h: _u_terms(z, d, h, d.pow(2).sum(-1, keepdim=True)), ["|d_j|^2 (or |d_i|^2)"]),
        (lambda z, d, h: _u_terms(z, d, h, d.T @ d), ["must match the size", "diff^T diff is the (L, L) matrix"]),
        (lambda z, d, h: _u_terms(z, d, h, d[:, None] * d[None]), ["must match the size", "(S, S, L)"]),
    ],
)
def test_ksd_u_statistic_names_a_wrong_dot_product(fn, words, capsys):
    rejects(check_ksd_u_statistic, fn, capsys, *words)


def test_ksd_u_statistic_rejects_detached_diff_and_half_pairs(capsys):
    rejects(check_ksd_u_statistic, lambda z, d, h: _u_masked(z, d.detach(), h), capsys, "diff")

    def half(z, d, h):
        i, j = torch.triu_indices(len(z), len(z), offset=1)
        k = torch.exp(-((z[i] - z[j]) ** 2).sum(-1) / (2 * h**2))
        return (k * (d[i] * d[j]).sum(-1)).sum() / (len(z) * (len(z) - 1))

    rejects(check_ksd_u_statistic, half, capsys, "i < j")


# ------------------------------------------------------------ 7.7: the KSIVI loss


def _ksivi(
    score_q=lambda z, psi, s: -(z - psi) / s**2,
    create_graph=True,
    combine=lambda sp, sq: sp - sq,
    fresh_psi=False,
    bandwidth_rule=None,
    use_given_ksd=True,
    detach=False,
):
    def loss(log_target, q, S, bandwidth=None, ksd=kernel_stein.ksd_u_statistic):
        z, psi = q.rsample(S)
        if detach:
            z = z.detach().requires_grad_(True)
        if fresh_psi:
            psi = q.sample_psi(S)
        kwargs = {"create_graph": True} if create_graph else {"retain_graph": True}
        (score_p,) = torch.autograd.grad(log_target(z).sum(), z, **kwargs)
        h = bandwidth if bandwidth is not None else kernel_stein.median_bandwidth(z)
        if bandwidth_rule is not None:
            h = bandwidth_rule(z, bandwidth)
        statistic = ksd if use_given_ksd else kernel_stein.ksd_u_statistic
        return statistic(z, combine(score_p, score_q(z, psi, q.sigma)), h)

    return loss


def _ksivi_by_log_conditional(log_target, q, S, bandwidth=None, ksd=kernel_stein.ksd_u_statistic):
    # both scores in one gradient, through the family's own log_conditional (lessons 07 and 08 teach it)
    z, psi = q.rsample(S)
    (diff,) = torch.autograd.grad((log_target(z) - q.log_conditional(z, psi)).sum(), z, create_graph=True)
    return ksd(z, diff, kernel_stein.median_bandwidth(z) if bandwidth is None else bandwidth)


def _ksivi_negated(log_target, q, S, bandwidth=None, ksd=kernel_stein.ksd_u_statistic):
    return -kernel_stein.ksivi_loss(log_target, q, S, bandwidth, ksd)


def _median_by_hand(z, bandwidth):
    if bandwidth is not None:
        return bandwidth
    S = z.shape[0]
    d = ((z[:, None] - z[None]) ** 2).sum(-1).sqrt().detach()
    return d[~torch.eye(S, dtype=torch.bool)].median() / math.sqrt(2 * math.log(S + 1))


@pytest.mark.parametrize(
    "fn",
    [
        kernel_stein.ksivi_loss,
        _ksivi(score_q=lambda z, psi, s: (psi - z) / s.pow(2)),
        _ksivi(score_q=lambda z, psi, s: -(z - psi) * torch.exp(-2 * torch.log(s)), bandwidth_rule=_median_by_hand),
        _ksivi_by_log_conditional,
    ],
)
def test_ksivi_loss_accepts(fn, capsys):
    accepts(check_ksivi_loss, fn, capsys)


@pytest.mark.parametrize(
    "fn, words",
    [
        (_ksivi(create_graph=False), "create_graph=True"),
        (_ksivi(score_q=lambda z, psi, s: -(z - psi) / s), "divides by the variance"),
        (_ksivi(score_q=lambda z, psi, s: (z - psi) / s**2), "a sign is off"),
        (_ksivi(combine=lambda sp, sq: sp + sq), "a sign is off"),
        (_ksivi(fresh_psi=True), "not a fresh draw"),
        (_ksivi(bandwidth_rule=lambda z, b: kernel_stein.median_bandwidth(z)), "use the bandwidth you are given"),
        (_ksivi(use_given_ksd=False), "never called"),
        (_ksivi(bandwidth_rule=lambda z, b: 1.0 if b is None else b), "median heuristic"),
        (_ksivi(detach=True), "gradient"),
        (_ksivi(combine=lambda sp, sq: -sq), "target's score s_p(z_i) is missing"),
        (_ksivi(combine=lambda sp, sq: sp), "conditional score is missing"),
        (_ksivi(combine=lambda sp, sq: sp / sp.shape[0] - sq), "divided by S"),
        (_ksivi_negated, "wrong sign"),
    ],
)
def test_ksivi_loss_names_mistakes(fn, words, capsys):
    rejects(check_ksivi_loss, fn, capsys, words)


# ------------------------------------------------------------ the grader's replay


@pytest.mark.parametrize("answer", [kernel_stein.ksd_u_statistic, _u_rows, _u_loop])
def test_the_graders_replay_reads_the_kernels_verdict_on_speed(answer, tmp_path, capsys):
    kernel, grader = kernel_and_replay(check_ksd_u_statistic, answer, tmp_path)
    assert kernel == grader
    assert kernel[0] == ("failed" if answer is _u_loop else "passed"), kernel
