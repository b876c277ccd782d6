"""helpers.checks._core: how the shared crossing into the learner's code words what it finds."""

import pytest
import torch

from helpers.checks._core import Mistake, call_learner


def _diagnosis(fn, *args, **kwargs):
    with pytest.raises(Mistake) as caught:
        call_learner(fn, *args, **kwargs)
    return str(caught.value)


def test_an_argument_changed_in_place_is_named_as_the_learners_signature_names_it():
    def update(x, mean, log_scale):
        mean += 1.0  # the caller's tensor, changed
        return mean

    text = _diagnosis(update, torch.zeros(3), torch.zeros(2), torch.zeros(2))
    assert "changed its argument `mean` in place (shape (2,))" in text
    assert "`mean = mean + ...` instead of `mean += ...`, or `mean.clone()`" in text
    assert "x = x" not in text  # the data argument is not the one changed


def test_keyword_and_unnamed_arguments_are_named_too():
    def by_keyword(x, *, scale):
        scale.mul_(2.0)
        return scale

    assert "argument `scale` in place" in _diagnosis(by_keyword, torch.ones(1), scale=torch.ones(2))

    def variadic(*tensors):
        tensors[1].zero_()
        return tensors[0]

    text = _diagnosis(variadic, torch.ones(1), torch.ones(4))
    assert "changed its argument 2 in place (shape (4,))" in text and "`.clone()`" in text


def test_a_function_that_leaves_its_arguments_alone_passes_through():
    def double(x, mean):
        return 2 * x + mean

    out = call_learner(double, torch.ones(2), torch.zeros(2))
    assert torch.equal(out, torch.full((2,), 2.0))


def test_a_number_in_a_message_is_printed_without_a_warning_whatever_its_graph():
    import warnings

    from helpers.checks._core import fmt

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float() of a tensor that needs grad warns in torch 2.13
        assert fmt(torch.tensor(1.5, requires_grad=True) * 2) == "3"
    assert fmt(torch.tensor(float("inf"))) == "inf" and fmt(0.125) == "0.125"


def test_a_stub_of_another_exercise_is_named_and_an_own_stub_is_not_attempted(capsys):
    from helpers.checks._core import checker

    @checker("0.9", "a test exercise")
    def check(fn):
        call_learner(fn, torch.ones(2))
        return "fine"

    def earlier_stub(x):
        raise NotImplementedError("Exercise 0.8: the earlier one")

    def calls_the_earlier_stub(x):
        return earlier_stub(x) + 1

    def own_stub(x):
        raise NotImplementedError("Exercise 0.9: a test exercise")

    result = check(calls_the_earlier_stub)
    assert result.status == "failed" and "exercise 0.8's function, which is still a stub" in result.message
    assert check(own_stub).status == "not attempted"
    capsys.readouterr()
