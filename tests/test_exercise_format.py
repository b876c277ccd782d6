"""The exercise format: one definition, read back by every tool that uses it."""

import pytest

from helpers import exercise_format as fmt
from helpers.checks._core import CheckResult, checker, fail


def test_label_stub_and_check_line_round_trip():
    label = fmt.find_label("x = 1\n# Exercise 3.2: add one, twice\ndef f(): ...")
    assert tuple(label) == ("Exercise", "3.2", "add one, twice")
    assert fmt.find_label("**Question 1.4.** Why?").number == "1.4" and fmt.find_label("no label") is None
    stub = fmt.stub_lines(label.number, label.task)
    assert stub == ["# YOUR CODE HERE", 'raise NotImplementedError("Exercise 3.2: add one, twice")']
    assert fmt.find_stub(["def f():", "    " + stub[0], "    " + stub[1], "    return 1"]) == (1, 3)
    assert fmt.find_stub(["def f():", "    return 1"]) is None
    assert fmt.is_stub_message(fmt.stub_message("3.2", "add one")) and not fmt.is_stub_message("Exercise 3.2:")
    for status in fmt.CHECK_STATUSES:
        line = fmt.check_line("3.2", "add (one), twice", status, "the message - with a dash")
        assert fmt.parse_check_line(line) == ("3.2", status, "the message - with a dash")
    assert fmt.parse_check_line("Exercise 3.2 is fine") is None


@pytest.mark.parametrize(
    "source, target",
    [
        ("check_x(fn)", "fn"),
        ("checks.check_x(fn)", "fn"),
        ("check_x(fn, 3)", "fn"),
        ("check_x(fn)  # why", "fn"),
        ("x = check_x(fn)", None),
        ("print(check_x(fn))", None),
        ("check_x(f(1))", None),
        ("check_x()", None),
        ("run(fn)", None),
        ("check_x(fn)\ncheck_y(fn)", None),
        ("check_x(fn", None),
    ],
)
def test_a_check_cell_is_one_checker_call(source, target):
    assert fmt.check_call_target(source) == target


def test_checkers_print_the_format_s_line_and_nbgrader_can_make_it_fail(capsys):
    @checker("9.1", "demo")
    def check_demo(fn):
        if fn(2) != 4:
            fail("fn(2) should be 4")
        return "fine"

    good, bad = check_demo(lambda x: 2 * x), check_demo(lambda x: x)
    lines = capsys.readouterr().out.splitlines()
    assert [fmt.parse_check_line(line)[1] for line in lines] == [fmt.PASSED, fmt.FAILED]
    assert good.raise_if_failed() is good
    with pytest.raises(AssertionError, match=r"^Exercise 9\.1 \(demo\): not yet right - fn\(2\) should be 4$"):
        bad.raise_if_failed()
    with pytest.raises(AssertionError, match="not attempted yet"):
        CheckResult("9.1", "demo", fmt.NOT_ATTEMPTED, "replace the stub").raise_if_failed()


def test_checkers_load_on_demand_all_register_and_each_is_listed_once():
    """A kernel that imports one checker pays for its module only; ``load_all`` registers every exercise's;
    ``_MODULES`` is the one list of checkers: every decorated checker is in it once, under its own module.

    One fresh interpreter for all three (what a kernel has imported is the point, and this process's registry
    may hold checkers other tests defined)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import nbformat

    code = (
        "import json, sys, helpers.checks._core\n"
        "assert not [m for m in sys.modules if m.startswith('helpers.checks.') and m != 'helpers.checks._core']\n"
        "from helpers.checks import check_vae_elbo\n"
        "assert 'helpers.checks.vae' in sys.modules and 'helpers.checks.conjugate' not in sys.modules\n"
        "import helpers.checks as checks\n"
        "from helpers.checks._core import CHECKERS\n"
        "checks.load_all()\n"
        "assert all(callable(getattr(checks, name)) for name in checks.__all__ if name.startswith('check_'))\n"
        "defined = {check.__name__: check.__module__.rsplit('.', 1)[1] for check in CHECKERS.values()}\n"
        "listed = [name for names in checks._MODULES.values() for name in names]\n"
        "assert len(listed) == len(set(listed)) == len(defined), (sorted(listed), sorted(defined))\n"
        "assert checks._WHERE == defined, set(checks._WHERE.items()) ^ set(defined.items())\n"
        "print(json.dumps(sorted(CHECKERS)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    registered = set(json.loads(done.stdout.splitlines()[-1]))
    exercises = set()
    for path in sorted((Path(__file__).resolve().parents[1] / "lessons").glob("*.ipynb")):
        for cell in nbformat.read(path, 4).cells:
            if cell.cell_type == "code" and fmt.exercise_of(cell):
                exercises.add(fmt.exercise_of(cell))
    assert exercises and exercises <= registered, sorted(exercises - registered)


CODE = 'def f(x):\n    """doc"""\n    # YOUR CODE HERE\n    raise NotImplementedError("Exercise 1.2: f")\n    return x'
WRITTEN = "**Question 1.3** Why?\n\n*Your answer to question 1.3 here.*"


@pytest.mark.parametrize(
    "generated, edited, learner_s_only",
    [
        (CODE, CODE, True),  # untouched
        (CODE, CODE.replace('# YOUR CODE HERE\n    raise NotImplementedError("Exercise 1.2: f")', "y = x"), True),
        (CODE, CODE.replace("    raise NotImplementedError", "    x = x + 1\n    raise NotImplementedError"), True),
        (CODE, CODE.replace("    # YOUR CODE HERE\n", "") + "\n\n", True),  # trailing blank lines aside
        (CODE, CODE.replace('"""doc"""', '"""my doc"""'), False),  # the docstring is the lesson's
        (CODE, CODE.replace("def f(x):", "def f(x, y):"), False),
        (CODE, CODE.replace("    return x", ""), False),  # so is what follows the stub
        (WRITTEN, WRITTEN.replace("*Your answer to question 1.3 here.*", "Because.\n\nAnd so."), True),
        (WRITTEN, WRITTEN.replace("Why?", "Why not?"), False),
        ("x = 1", "x = 2", False),  # no answer slot at all
    ],
)
def test_only_the_answer_slot_is_the_learner_s(generated, edited, learner_s_only):
    assert fmt.only_the_answer_differs(generated, edited) is learner_s_only


def test_the_answer_slot_is_the_stub_or_the_prompt():
    assert fmt.answer_slot(CODE.splitlines()) == (2, 4)
    assert fmt.answer_slot(WRITTEN.splitlines()) == (2, 3)
    assert fmt.find_answer_prompt([fmt.answer_prompt("2.1", "Exercise")]) == (0, 1)
    assert fmt.answer_slot(["x = 1"]) is None
