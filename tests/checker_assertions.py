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
