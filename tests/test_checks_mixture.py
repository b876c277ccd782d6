"""The checkers of lesson 02's CAVI on a Gaussian mixture (2.4 and 2.5, helpers.checks.mixture) accept correct
answers written in different ways and name the mistake in plausible wrong ones."""

import pytest
import torch
from checker_assertions import accepts, reads_not_attempted, rejects

from helpers import mixture
from helpers.checks import check_component_update, check_responsibilities

# ------------------------------------------------------------ exercise 2.4


def resp_ref(x, m, s2):
    return mixture.update_responsibilities(x, m, s2)


def resp_logsumexp(x, m, s2):
    D = x.shape[1]
    logits = torch.einsum("nd,kd->nk", x, m) - 0.5 * (torch.einsum("kd,kd->k", m, m) + D * s2)
    return torch.exp(logits - torch.logsumexp(logits, dim=1, keepdim=True))


def resp_distance(x, m, s2):
    # -||x - m||^2 / 2 differs from x.m - ||m||^2/2 by a term constant in k
    D = x.shape[1]
    logits = -0.5 * torch.cdist(x, m) ** 2 - 0.5 * D * s2
    return torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("fn", [resp_ref, resp_logsumexp, resp_distance])
def test_responsibilities_accepts(fn, capsys):
    accepts(check_responsibilities, fn, capsys)


def test_responsibilities_names_mistakes(capsys):
    def logits(x, m, s2):
        return x @ m.T - 0.5 * ((m**2).sum(-1) + x.shape[1] * s2)

    rejects(
        check_responsibilities,
        lambda x, m, s2: torch.softmax(x @ m.T - 0.5 * (m**2).sum(-1), -1),
        capsys,
        "missing the variance term",
    )
    rejects(
        check_responsibilities,
        lambda x, m, s2: torch.softmax(logits(x, m, s2), 0),
        capsys,
        "normalised over the data points",
    )
    rejects(check_responsibilities, lambda x, m, s2: logits(x, m, s2).exp(), capsys, "not normalised")
    rejects(check_responsibilities, lambda x, m, s2: torch.softmax(-logits(x, m, s2), -1), capsys, "sign error")
    rejects(
        check_responsibilities,
        lambda x, m, s2: logits(x, m, s2).exp() / logits(x, m, s2).exp().sum(-1, keepdim=True),
        capsys,
        "far from the means",
        "log space",
    )
    rejects(check_responsibilities, lambda x, m, s2: torch.softmax(logits(x, m, s2), -1).T, capsys, "phi is transposed")


# ------------------------------------------------------------ exercise 2.5


def comp_ref(x, phi, prior_std):
    return mixture.update_components(x, phi, prior_std)


def comp_loop(x, phi, prior_std):
    ms, s2s = [], []
    for k in range(phi.shape[1]):
        precision = 1 / prior_std**2 + phi[:, k].sum()
        ms.append((phi[:, k : k + 1] * x).sum(0) / precision)
        s2s.append(1 / precision)
    return torch.stack(ms), torch.stack(s2s)


def comp_einsum(x, phi, prior_std):
    s2 = (prior_std**-2 + torch.einsum("nk->k", phi)).reciprocal()
    return torch.einsum("nk,nd->kd", phi, x) * s2[:, None], s2


@pytest.mark.parametrize("fn", [comp_ref, comp_loop, comp_einsum])
def test_components_accepts(fn, capsys):
    accepts(check_component_update, fn, capsys)


def test_components_names_mistakes(capsys):
    def no_prior(x, phi, prior_std):
        s2 = 1 / phi.sum(0)
        return s2[:, None] * (phi.T @ x), s2

    rejects(check_component_update, no_prior, capsys, "missing the prior precision")
    rejects(
        check_component_update,
        lambda x, phi, sd: (comp_ref(x, phi, sd)[0], comp_ref(x, phi, sd)[1].sqrt()),
        capsys,
        "standard deviation",
    )
    rejects(
        check_component_update, lambda x, phi, sd: (phi.T @ x, comp_ref(x, phi, sd)[1]), capsys, "multiplied by s_k^2"
    )
    rejects(
        check_component_update,
        lambda x, phi, sd: (comp_ref(x, phi, sd)[1][:, None] * x.sum(0), comp_ref(x, phi, sd)[1]),
        capsys,
        "weight each x_i",
    )


@pytest.mark.parametrize("checker", [check_responsibilities, check_component_update])
def test_stub_reads_not_attempted(checker, capsys):
    reads_not_attempted(checker, capsys)


def test_review_mistakes_are_named(capsys):
    def drop_D(x, m, s2):
        return torch.softmax(x @ m.T - 0.5 * ((m**2).sum(-1) + s2), -1)

    rejects(check_responsibilities, drop_D, capsys, "once per dimension")

    def sigma_to_the_D(x, phi, prior_std):
        s2 = 1 / (1 / prior_std ** x.shape[1] + phi.sum(0))
        return s2[:, None] * (phi.T @ x), s2

    def em_mean(x, phi, prior_std):
        m, s2 = comp_ref(x, phi, prior_std)
        return (phi.T @ x) / phi.sum(0)[:, None], s2

    rejects(check_component_update, sigma_to_the_D, capsys, "not sigma^D")
    rejects(check_component_update, em_mean, capsys, "EM")


def _components_centring_in_place(x, phi, prior_std):
    shift = x.mean(0)
    x -= shift  # centres the caller's data in place
    m, s2 = comp_ref(x, phi, prior_std)
    return m + s2[:, None] * phi.sum(0)[:, None] * shift, s2


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda x, phi, sd: comp_ref(x, phi, sd)[::-1], "the tuple is swapped"),
        (lambda x, phi, sd: (comp_ref(x, phi, sd)[0].T, comp_ref(x, phi, sd)[1]), "m is transposed"),
        (_components_centring_in_place, "changed its argument `x` in place"),
    ],
)
def test_common_slips_are_named(fn, words, capsys):
    rejects(check_component_update, fn, capsys, words)
