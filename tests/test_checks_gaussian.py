"""The checkers of helpers.checks.gaussian, 1.2 (the KL divergence between two Gaussians) and 6.5 (the
full-covariance Gaussian conditional), accept correct answers written in different ways and name the mistake in
plausible wrong ones, and 6.5 a slow solve."""

import json
import math

import pytest
import torch
from checker_assertions import BAD_ANSWERS, accepts, never_raises, reads_not_attempted, rejects
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from helpers import gaussian
from helpers.checks import RESULTS_ENV, check_kl_normal, check_log_normal_tril, results

# ------------------------------------------------------------ 6.5: the full-covariance Gaussian conditional


def _solve(z, psi, C):  # one triangular solve, the pairs' differences as the columns of its right-hand side
    d = z - psi
    u = torch.linalg.solve_triangular(C, d.reshape(-1, d.shape[-1]).T, upper=False).T.reshape(d.shape)
    return -0.5 * (u**2).sum(-1) - torch.log(torch.diagonal(C)).sum() - 0.5 * C.shape[-1] * math.log(2 * math.pi)


def _inverse_first(z, psi, C):  # C^{-1} z - C^{-1} psi: each side transformed before broadcasting
    C_inv = torch.linalg.solve_triangular(C, torch.eye(C.shape[-1], dtype=C.dtype), upper=False)
    u = z @ C_inv.T - psi @ C_inv.T
    return -0.5 * (u**2).sum(-1) - C.diagonal().log().sum() - 0.5 * C.shape[-1] * math.log(2 * math.pi)


@pytest.mark.parametrize(
    "fn",
    [
        lambda z, psi, C: MultivariateNormal(psi, scale_tril=C).log_prob(z),
        _solve,
        _inverse_first,
        gaussian.log_normal_tril,
    ],
)
def test_log_normal_tril_accepts(fn, capsys):
    accepts(check_log_normal_tril, fn, capsys)


def _form(quad, log_det=lambda C: C.diagonal().log().sum(), const=0.5, half=0.5):
    def fn(z, psi, C):
        L = C.shape[-1]
        return -half * quad(z - psi, C) - log_det(C) - const * L * math.log(2 * math.pi)

    return fn


def _u_sq(d, C):
    return (torch.linalg.solve_triangular(C, d.unsqueeze(-1), upper=False).squeeze(-1) ** 2).sum(-1)


@pytest.mark.parametrize(
    "fn, words",
    [
        (
            _form(
                lambda d, C: (torch.linalg.solve_triangular(C.T, d.unsqueeze(-1), upper=True).squeeze(-1) ** 2).sum(-1)
            ),
            "solve with C (lower-triangular)",
        ),
        (_form(lambda d, C: ((d @ C.T) ** 2).sum(-1)), "not C (z - psi)"),
        (_form(_u_sq, log_det=lambda C: 0.0), "log-determinant term is missing"),
        (_form(_u_sq, log_det=lambda C: 2 * C.diagonal().log().sum()), "once"),
        (_form(_u_sq, half=1.0), "factor 1/2 is missing"),
        (_form(_u_sq, const=0.0), "normalising constant -L/2 log(2 pi) is missing"),
        (lambda z, psi, C: Normal(psi, C.diagonal()).log_prob(z).sum(-1), "off-diagonal entries of C are ignored"),
        (lambda z, psi, C: Normal(psi, C.diagonal()).log_prob(z), "sum over the last axis"),
        (lambda z, psi, C: MultivariateNormal(psi, scale_tril=C.detach()).log_prob(z), "gradient"),
    ],
)
def test_log_normal_tril_names_mistakes(fn, words, capsys):
    rejects(check_log_normal_tril, fn, capsys, words)


def test_log_normal_tril_names_a_float32_determinant(capsys):
    def via_det(z, psi, C):
        Sigma = C @ C.T
        u = torch.linalg.solve_triangular(C, (z - psi).unsqueeze(-1), upper=False).squeeze(-1)
        return -0.5 * (u**2).sum(-1) - 0.5 * torch.log(torch.det(Sigma)) - 0.5 * C.shape[-1] * math.log(2 * math.pi)

    rejects(check_log_normal_tril, via_det, capsys, "float32")


def _tril_constant(L):
    return 0.5 * L * math.log(2 * math.pi)


def _tril_columns(z, psi, C):  # one solve, the pairs' differences as the columns of the right-hand side
    d = z - psi
    u = torch.linalg.solve_triangular(C, d.reshape(-1, d.shape[-1]).T, upper=False).T.reshape(d.shape)
    return -0.5 * (u**2).sum(-1) - C.diagonal().log().sum() - _tril_constant(C.shape[-1])


def _tril_right_solve(z, psi, C):  # u^T = (z - psi)^T C^{-T}: a solve from the right, left=False
    d = z - psi
    u = torch.linalg.solve_triangular(C.T, d.reshape(-1, d.shape[-1]), upper=True, left=False).reshape(d.shape)
    return -0.5 * (u**2).sum(-1) - torch.logdet(C) - _tril_constant(C.shape[-1])


@pytest.mark.parametrize(
    "fn",
    [
        gaussian.log_normal_tril,
        _tril_columns,
        _tril_right_solve,
        lambda z, psi, C: MultivariateNormal(psi, scale_tril=C).log_prob(z),  # a few times slower, still fine
    ],
)
def test_log_normal_tril_accepts_fast_answers(fn, capsys):
    accepts(check_log_normal_tril, fn, capsys)


def _tril_wrong(quad=None, log_det=None, const=None, half=0.5):
    def fn(z, psi, C):
        d = z - psi
        u = torch.linalg.solve_triangular(C, d.reshape(-1, d.shape[-1]).T, upper=False).T.reshape(d.shape)
        q = (u**2).sum(-1) if quad is None else quad(d, C)
        ld = C.diagonal().log().sum() if log_det is None else log_det(C)
        return -half * q - ld - (_tril_constant(C.shape[-1]) if const is None else const)

    return fn


def _broadcast_solve(z, psi, C):  # the natural answer: right, and one small solve per (S, K) pair
    u = torch.linalg.solve_triangular(C, (z - psi).unsqueeze(-1), upper=False).squeeze(-1)
    return -0.5 * (u**2).sum(-1) - C.diagonal().log().sum() - _tril_constant(C.shape[-1])


@pytest.mark.parametrize(
    "fn, words",
    [
        (_broadcast_solve, ("too slow", "broadcast over the pairs", "Solve once")),
        (_tril_wrong(quad=lambda d, C: ((d @ C.T) ** 2).sum(-1)), ("not C (z - psi)",)),
        (_tril_wrong(log_det=lambda C: 0.0), ("log-determinant term is missing",)),
        (_tril_wrong(log_det=lambda C: 2 * C.diagonal().log().sum()), ("once",)),
        (_tril_wrong(half=1.0), ("factor 1/2 is missing",)),
        (_tril_wrong(const=0.0), ("normalising constant -L/2 log(2 pi) is missing",)),
        (lambda z, psi, C: Normal(psi, C.diagonal()).log_prob(z).sum(-1), ("off-diagonal entries of C",)),
    ],
)
def test_log_normal_tril_names_mistakes_and_a_slow_solve(fn, words, capsys):
    rejects(check_log_normal_tril, fn, capsys, *words)


def test_log_normal_tril_answers_a_slow_solve_within_seconds(capsys):
    import time

    start = time.process_time()
    check_log_normal_tril(_broadcast_solve)
    capsys.readouterr()
    assert time.process_time() - start < 20  # stopped: ~0.3 s at idle; a loop left to run takes minutes


# ------------------------------------------------------------ exercise 1.2


def kl_reference(mq, sq, mp, sp):
    return torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5


def kl_with_variances(mq, sq, mp, sp):
    vq, vp = sq**2, sp**2
    return 0.5 * (torch.log(vp) - torch.log(vq) + vq / vp + (mq - mp) ** 2 / vp - 1)


def kl_torch(mq, sq, mp, sp):
    shape = torch.broadcast_shapes(mq.shape, sp.shape)
    return kl_divergence(Normal(mq.expand(shape), sq.expand(shape)), Normal(mp.expand(shape), sp.expand(shape)))


@pytest.mark.parametrize("fn", [kl_reference, kl_with_variances, kl_torch])
def test_kl_accepts_correct_answers(fn, capsys):
    accepts(check_kl_normal, fn, capsys)


def test_kl_names_mistakes(capsys):
    rejects(check_kl_normal, lambda mq, sq, mp, sp: kl_reference(mp, sp, mq, sq), capsys, "swapped")
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: torch.log(sp**2 / sq**2) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5,
        capsys,
        "factor 1/2",
    )
    rejects(check_kl_normal, lambda mq, sq, mp, sp: kl_reference(mq, sq, mp, sp) + 0.5, capsys, "missing the constant")
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: torch.log(sp / sq) + sq**2 / (2 * sp**2) - 0.5 + 0 * mq + 0 * mp,
        capsys,
        "missing the mean term",
    )
    rejects(check_kl_normal, lambda mq, sq, mp, sp: -kl_reference(mq, sq, mp, sp), capsys, "sign error")
    # NaN on the edge case q = p (0/0 from a ratio of differences)
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: (
            kl_reference(mq, sq, mp, sp) * ((mq - mp) ** 2 + (sq - sp) ** 2) / ((mq - mp) ** 2 + (sq - sp) ** 2)
        ),
        capsys,
        "NaN",
        "q = p",
    )


def test_kl_names_more_mistakes(capsys):
    rejects(check_kl_normal, lambda mq, sq, mp, sp: math.log(sp / sq) + 0 * mq, capsys, "use torch.log")
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: -torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5,
        capsys,
        "log term has the wrong sign",
    )
    rejects(
        check_kl_normal,
        lambda mq, sq, mp, sp: torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / sp**2 - 0.5,
        capsys,
        "including the 2",
    )


# ------------------------------------------------------------ 1.2: common behaviour and the results file


def test_kl_stub_reads_not_attempted(capsys):
    reads_not_attempted(check_kl_normal, capsys)


@pytest.mark.parametrize("bad", BAD_ANSWERS)
def test_kl_checker_never_raises(bad, capsys):
    never_raises(check_kl_normal, bad, capsys)


def test_results_are_recorded_as_json_lines(tmp_path, monkeypatch, capsys):
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    check_kl_normal(kl_reference)
    check_kl_normal(lambda *a: -kl_reference(*a))
    capsys.readouterr()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["status"] for r in lines] == ["passed", "failed"]
    assert {tuple(sorted(r)) for r in lines} == {("exercise", "message", "status", "task")}
    assert lines[1]["exercise"] == "1.2" and "sign error" in lines[1]["message"]
    assert results()[-2:] == lines
