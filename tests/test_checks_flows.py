"""The checker of helpers.checks.flows, lesson 08's 8.9 (an affine coupling step and its log-determinant),
accepts correct answers written in different ways and names the mistake in plausible wrong ones."""

import math

import pytest
import torch
from checker_assertions import accepts, rejects, replays_to_passed

from helpers import flows
from helpers.checks import check_affine_coupling

LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------ 8.9


def _with_where(x, mask, net):
    t, s = net(mask * x)
    keep = mask.bool()
    return torch.where(keep, x, x * s.exp() + t), torch.where(keep, torch.zeros_like(s), s).sum(-1)


def _factored(x, mask, net):
    t, s = net(x * mask)
    free = 1 - mask
    return x * (mask + free * torch.exp(s)) + free * t, (s * free).sum(dim=1)


def _coupling(kind):
    def step(x, mask, net):
        t, s = net(x if kind == "net sees x" else mask * x)
        free = 1 - mask
        y = mask * x + free * (x * s.exp() + t)
        log_det = (free * s).sum(-1)
        if kind == "all s":
            log_det = s.sum(-1)
        elif kind == "minus":
            log_det = -log_det
        elif kind == "det":
            log_det = log_det.exp()
        elif kind == "det of all":
            log_det = s.exp().prod(-1)
        elif kind == "det with zeros":
            log_det = torch.prod(free * torch.exp(s), dim=-1)
        elif kind == "sum of e^s":
            log_det = (free * s.exp()).sum(-1)
        elif kind == "t and s swapped":
            y = mask * x + free * (x * t.exp() + s)
            log_det = (free * t).sum(-1)
        elif kind == "shift first":
            y = mask * x + free * (x + t) * s.exp()
        elif kind == "divide":
            y = mask * x + free * (x * (-s).exp() + t)
        elif kind == "all coords":
            y = x * s.exp() + t
        elif kind == "no shift":
            y = mask * x + free * x * s.exp()
        elif kind == "mean":
            log_det = (free * s).mean(-1)
        elif kind == "shift outside":  # a parenthesis slip: t lands on every coordinate
            y = mask * x + free * x * s.exp() + t
        elif kind == "masked scale, unmasked shift":  # the folded form with only s masked
            y = x * torch.exp(free * s) + t
        elif kind == "fixed coords":
            y = x.clone()
            y[:, 1::2] = x[:, 1::2] * s[:, 1::2].exp() + t[:, 1::2]
            log_det = s[:, 1::2].sum(-1)
        return y, log_det

    return step


@pytest.mark.parametrize("fn", [flows.affine_coupling, _with_where, _factored])
def test_coupling_accepts(fn, capsys):
    accepts(check_affine_coupling, fn, capsys)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("all s", "only the transformed ones"),
        ("minus", "sign is off"),
        ("det", "not the determinant (a product of e^s) itself"),
        ("det of all", "not the determinant"),
        ("det with zeros", "not the determinant"),
        ("sum of e^s", "sums the logs of the diagonal entries"),
        ("t and s swapped", "t and s are swapped"),
        ("shift first", "scale first, then shift"),
        ("divide", "is the inverse step"),
        ("all coords", "must pass unchanged"),
        ("no shift", "shift t is missing"),
        ("shift outside", "the shift t is added to every coordinate, the masked ones too"),
        ("masked scale, unmasked shift", "t goes inside the (1 - m) factor"),
        ("mean", "not their mean"),
        ("net sees x", "only the coordinates that pass unchanged"),
        ("fixed coords", "use mask"),
    ],
)
def test_coupling_rejects(kind, words, capsys):
    rejects(check_affine_coupling, _coupling(kind), capsys, words)


# ------------------------------------------------------------ the grader's replay


@pytest.mark.parametrize(
    "check, answer",
    [
        (check_affine_coupling, flows.affine_coupling),
    ],
)
def test_the_graders_replay_confirms_a_right_answer(check, answer, tmp_path):
    replays_to_passed(check, answer, tmp_path)
