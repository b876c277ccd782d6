"""Shared assertions for the checker tests: one line printed, the verdict, the diagnosis."""


def run(checker, fn, capsys):
    result = checker(fn)
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0, f"a checker prints exactly one line, got:\n{out}"
    return result, out


def accepts(checker, fn, capsys):
    result, out = run(checker, fn, capsys)
    assert result and result.status == "passed", out
    assert ": passed - " in out


def rejects(checker, fn, capsys, *diagnosis):
    result, out = run(checker, fn, capsys)
    assert not result and result.status == "failed", out
    assert f"Exercise {checker.exercise} " in out and "not yet right" in out
    for words in diagnosis:
        assert words in out, f"expected {words!r} in the message: {out}"


def reads_not_attempted(checker, capsys):
    """A stub's ``NotImplementedError`` is "not attempted yet", never a failure."""

    def stub(*args):
        raise NotImplementedError(f"Exercise {checker.exercise}: ...")

    result, out = run(checker, stub, capsys)
    assert not result and result.status == "not attempted"
    assert out.startswith(f"Exercise {checker.exercise} (") and "not attempted yet" in out


def _bad_answers():
    import torch

    return [
        lambda *a: None,
        lambda *a: "text",
        lambda *a: (1, 2),
        lambda *a: 1 / 0,
        lambda *a: torch.ones(2, 2, 2),
        lambda: 0,
        42,
    ]


BAD_ANSWERS = _bad_answers()  # answers of every wrong kind: a checker reports them, it never raises


def never_raises(checker, bad, capsys):
    result, out = run(checker, bad, capsys)
    assert not result and result.status == "failed" and "Exercise" in out


def kernel_and_replay(check, answer, folder):
    """``check(answer)`` in a recording kernel (records in ``folder``), and the grader's replay of its record
    (helpers.tooling.replay) outside it: ``((status, message) in the kernel, (status, message) replayed)``."""
    import torch

    from helpers.checks import _core
    from helpers.tooling import replay

    previous, grad = _core._channel, torch.autograd.grad
    try:
        replay.install(folder)
        result = check(answer)
    finally:
        _core._channel, torch.autograd.grad = previous, grad
    (path,) = folder.glob("*.pt")
    return (result.status, result.message), replay.replay_record(torch.load(path, weights_only=True))


def replays_to_passed(check, answer, folder):
    """The check passes ``answer`` in a recording kernel, and the grader's replay of its record confirms the pass
    outside it."""
    kernel, replayed = kernel_and_replay(check, answer, folder)
    assert kernel[0] == "passed", kernel
    assert replayed[0] == "passed"
