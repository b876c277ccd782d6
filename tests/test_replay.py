"""The grader's replay, in one process: a check recorded as the kernel records it replays to the kernel's
verdict, and a record whose content was changed does not.

Exercise 5.4 is the hard case: the learner's training step changes the checker's model and optimizer in
place (the weights, the step count), and the checker then inspects them. The record carries those effects,
and the replay puts them back (``helpers.tooling.replay._effects``).
"""

import copy

import pytest
import torch

from helpers import vae
from helpers.checks import _core
from helpers.checks.gaussian import check_kl_normal
from helpers.checks.vae import check_training_step
from helpers.gaussian import kl_normal
from helpers.tooling import replay


@pytest.fixture
def record_of(tmp_path):
    """``record_of(check, answer)``: the record the grading kernel would write for ``check(answer)``."""

    def run(check, answer):
        folder = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        previous, grad = _core._channel, torch.autograd.grad
        try:
            replay.install(folder)
            result = check(answer)
        finally:
            _core._channel, torch.autograd.grad = previous, grad
        (path,) = folder.glob("*.pt")
        return result, torch.load(path, weights_only=True)

    return run


def _steps_without_zero_grad(elbo, model, optimizer, x, eps):
    values = elbo(x, model, eps)
    (-values.mean()).backward()
    optimizer.step()
    return values.detach()


@pytest.mark.parametrize(
    "answer, status",
    [
        (vae.training_step, "passed"),
        (
            lambda elbo, model, opt, x, eps: (
                opt.zero_grad(),
                (-elbo(x, model, eps).mean()).backward(),
                opt.step(),
                elbo(x, model, eps).detach(),
            )[-1],
            "failed",  # right weights, but it returns the ELBOs after the step
        ),
        (_steps_without_zero_grad, "failed"),
    ],
)
def test_training_step_replays_to_the_kernels_verdict(record_of, answer, status):
    result, record = record_of(check_training_step, answer)
    assert result.status == status
    assert replay.replay_record(record) == (result.status, result.message)


def test_a_record_with_other_weights_does_not_pass(record_of):
    result, record = record_of(check_training_step, vae.training_step)
    assert result.status == "passed"
    forged = copy.deepcopy(record)
    second = forged["events"][1]  # the end of the first run's second step: the weights the checker inspects
    (module,) = [e for e in second["effects"] if e[0] == "module"]
    name = next(iter(module[3]))  # a parameter (the first entries of the state are buffers)
    module[2][name] = module[2][name] + 0.01
    assert replay.replay_record(forged)[0] == "flagged"  # the checker stops early: the later calls were never made

    reshaped = copy.deepcopy(record)
    (module,) = [e for e in reshaped["events"][0]["effects"] if e[0] == "module"]
    module[2][name] = module[2][name].reshape(-1)[:1]
    assert replay.replay_record(reshaped)[0] == "flagged"

    counted = copy.deepcopy(record)
    (opt,) = [e for e in counted["events"][0]["effects"] if e[0] == "optimizer"]
    opt[3]["steps"] = "1"  # a counter of another type
    assert replay.replay_record(counted)[0] == "flagged"

    unrelated = copy.deepcopy(record)
    unrelated["events"][0]["effects"].append(["module", 99, {}, {}])
    assert replay.replay_record(unrelated)[0] == "flagged"


def test_a_check_without_effects_replays_unchanged(record_of):
    result, record = record_of(check_kl_normal, kl_normal)
    assert result.status == "passed"
    assert all(event["effects"] == [] for event in record["events"])
    assert replay.replay_record(record) == ("passed", result.message)


def _svi_without_clearing(model, guide, optimizer, loss, data):
    from pyro.infer import SVI

    svi = SVI(model, guide, optimizer, loss)
    return [svi.step(*args) for args in data]


@pytest.mark.parametrize(
    "answer, status, words",
    [
        ("reference", "passed", "trained parameters"),
        (_svi_without_clearing, "failed", "pyro.clear_param_store()"),
    ],
)
def test_svi_loop_replays_to_the_kernels_verdict(record_of, answer, status, words):
    """9.3 reads what the learner's loop left in Pyro's parameter store. The replay never runs the loop, so the
    store must come back through ``call_learner`` (a checker that read the global store itself saw the
    checker's own starting values in the replay, and the reference answer was flagged)."""
    from helpers import pyro_bridge
    from helpers.checks.pyro_bridge import check_train_svi

    answer = pyro_bridge.train_svi if answer == "reference" else answer
    result, record = record_of(check_train_svi, answer)
    assert result.status == status and words in result.message, result.message
    assert replay.replay_record(record) == (result.status, result.message)


def _exits(*args):
    import sys

    sys.exit("done")


def test_an_answer_that_calls_sys_exit_fails_and_replays_to_the_same_verdict(record_of):
    """``sys.exit()`` in an answer is the answer raising (``SystemExit``): ``failed``, with the message, in the
    kernel and in the replay alike (it once escaped the checker, and the grader flagged the answer)."""
    result, record = record_of(check_kl_normal, _exits)
    assert result.status == "failed" and "your function raised SystemExit: done" in result.message
    assert replay.replay_record(record) == (result.status, result.message)
