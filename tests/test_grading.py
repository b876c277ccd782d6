"""``python -m helpers grade``: honest, hostile and broken submissions.

The grader's mechanics (time limits, dead kernels, answers outside the
function, parallel jobs) are tested on a tiny course whose exercises are
pure Python, so a well-behaved run needs a few seconds and its limit can be
set far above that: the verdicts do not depend on how loaded the machine is.
Lesson 01 itself is graded where the real lesson matters (pristine, solved,
tampered with).

Where bubblewrap cannot run (macOS, Linux without the package), the tests of
containment itself (``needs_sandbox``) are skipped, and conftest.py says so in
one line; the others grade with ``--no-sandbox``, since what they test does
not depend on containment. Under ``VI_COURSE_REQUIRE_SANDBOX=1`` (CI) nothing
is skipped: a missing sandbox fails."""

import atexit
import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import SANDBOX_SKIP  # the reason conftest.py counts in its one line on skipped grading tests
from helpers.exercise_format import NOT_ATTEMPTED_ADVICE, STATUSES, STUB_FIRST_LINE, exercise_of, find_stub
from helpers.tooling.build import lesson_from_solution
from helpers.tooling.cli import main
from helpers.tooling.notebook_io import read_notebook, write_notebook
from helpers.tooling.sandbox import why_unavailable
from helpers.tooling.sync import build_lessons

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_elbo.ipynb"


def _pristine_lesson():
    """Lesson 01 as ``build-lessons`` generates it, in a folder of its own: ``lessons/01_elbo.ipynb`` may hold a
    learner's answers (the suite must pass in a learner's working copy too)."""
    folder = Path(tempfile.mkdtemp(prefix="vi-pristine-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "01_elbo.ipynb"
    write_notebook(lesson_from_solution(read_notebook(SOLUTION), name=SOLUTION.name), path)
    return path


LESSON = _pristine_lesson()
# The limit is per cell of the notebook, the kernel's start and the grader's own first cell (which imports torch:
# 1.5 s at idle, 15 s at load 20 on 2 cores) excluded. The tiny course's cells then take well under 0.1 s at
# idle, about a second on a machine loaded ten times over. No cell of these tests is meant to time out, so the
# limit only bounds a bug: 120 s.
TINY_TIMEOUT = 120
# The one answer that must time out never ends (it sleeps in C, holding the GIL), so any limit stops it; the
# limit must only let the correct cells of the same batch (``runaways``) finish: 10 s, some 10 times their cost
# at load 20.
ENDLESS_TIMEOUT = 10

SANDBOX_REQUIRED = os.environ.get("VI_COURSE_REQUIRE_SANDBOX") == "1"  # CI: a missing sandbox is a failure
NO_SANDBOX = None if SANDBOX_REQUIRED else why_unavailable()  # why the grader cannot contain code here, or None
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"{SANDBOX_SKIP}: {NO_SANDBOX}")

TINY_CHECKS = """from helpers.checks._core import call_learner, checker, fail


def _make_check(number, task, fn_name, expected):
    @checker(number, task)
    def check(fn):  # a checker in miniature: one call of the learner's function, through call_learner
        got = call_learner(fn, 3)
        if got != expected:
            fail(f"{fn_name}(3) returned {got!r}, expected {expected!r}")
        return f"{fn_name}(3) == {expected!r}"

    return check


check_double = _make_check("0.1", "double", "double", 6)
check_square = _make_check("0.2", "square", "square", 9)
check_negate = _make_check("0.3", "negate", "negate", -3)
"""
TINY_SETUP = "from tiny_checks import check_double, check_negate, check_square"


def _tiny_exercise(number, name, task, body):
    return f"""# Exercise {number}: {task}
def {name}(x):
    \"\"\"The exercise's docstring.\"\"\"
    ### BEGIN SOLUTION
    return {body}
    ### END SOLUTION"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A course root with one three-exercise lesson, ``00_tiny``, built by the lesson builder."""
    root = tmp_path_factory.mktemp("tiny-course")
    cells = [new_markdown_cell("# A tiny lesson", id="title"), new_code_cell(TINY_SETUP, id="setup")]
    for number, name, body in [("0.1", "double", "2 * x"), ("0.2", "square", "x * x"), ("0.3", "negate", "-x")]:
        tag = number.replace(".", "")
        cells += [
            new_code_cell(_tiny_exercise(number, name, name, body), id=f"ex{tag}"),
            new_code_cell(f"check_{name}({name})", id=f"ex{tag}-check"),
        ]
    (root / "tiny_checks.py").write_text(TINY_CHECKS)  # its checkers: in the sandbox and in the grader's replay
    (root / "solutions").mkdir()
    nbformat.write(new_notebook(cells=cells), root / "solutions" / "00_tiny.ipynb")
    assert build_lessons(root, echo=lambda *a: None) == 0
    return root


def grade(capsys, *args, root=None, timeout=None, fallback=True):
    """Run ``python -m helpers grade`` in-process; ``(exit status, stdout, stderr)``.

    ``timeout``: the limit per cell (default: the grader's own, 300 s, for the real lessons, whose cells a
    loaded machine slows tenfold). ``fallback``: where the sandbox cannot run, grade with ``--no-sandbox``.
    """
    args = [str(a) for a in args]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if fallback and NO_SANDBOX is not None and "--no-sandbox" not in args:
        args.append("--no-sandbox")
    if root is not None and (Path(root) / "tiny_checks.py").exists():
        args += ["--checks", str(Path(root) / "tiny_checks.py")]
    status = main((["--root", str(root)] if root else []) + ["grade", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def answered(answers, drop=(), extra_cells=(), order=None, lesson=LESSON):
    """The lesson with stubs replaced by ``answers`` (exercise number -> body lines)."""
    nb = nbformat.read(lesson, 4)
    for cell in nb.cells:
        number = exercise_of(cell)
        if number in answers and cell.cell_type == "code":
            lines = cell.source.splitlines()
            start, stop = find_stub(lines)
            cell.source = "\n".join(lines[:start] + ["    " + a for a in answers[number]] + lines[stop:])
    nb.cells = [c for c in nb.cells if c.id not in drop]
    for index, cell in extra_cells:
        nb.cells.insert(index, cell)
    if order:
        nb.cells = sorted(nb.cells, key=lambda c: order.get(c.id, 0))
    return nb


def tiny_answered(root, answers):
    return answered(answers, lesson=root / "lessons" / "00_tiny.ipynb")


CORRECT = {
    "1.1": ["return model.gaussian_elbo(m, s, x)"],
    "1.2": ["return torch.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p)**2) / (2 * sigma_p**2) - 0.5"],
    "1.3": ["q = Normal(m, s)", "z = q.rsample((S,))", "return model.log_joint(x, z) - q.log_prob(z)"],
    "1.4": [
        "log_q = Normal(m, s).log_prob(z_grid)",
        "return torch.trapezoid(log_q.exp() * (log_q - log_target(z_grid)), z_grid)",
    ],
}


def write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_pristine_lesson_is_not_attempted_without_running_it(capsys, tmp_path, monkeypatch):
    # nothing of the learner's to run: the grader says what each check would say, and starts no kernel
    monkeypatch.setattr("helpers.tooling.grading.run_notebook", lambda *a: pytest.fail("a kernel was started"))
    status, out, _ = grade(capsys, LESSON, "--json", tmp_path / "g.json")
    assert status == 1
    grades = json.loads((tmp_path / "g.json").read_text())
    assert [g["exercise"] for g in grades] == ["1.1", "1.2", "1.3", "1.4"]
    assert {g["status"] for g in grades} == {"not attempted"}
    assert {g["message"] for g in grades} == {NOT_ATTEMPTED_ADVICE}
    assert set(grades[0]) == {"student", "notebook", "lesson", "exercise", "status", "message"}
    assert grades[0]["lesson"] == "01_elbo"


def test_solution_as_submission_passes(capsys, tmp_path):
    sub = tmp_path / "alice" / "01_elbo.ipynb"
    shutil.copy(SOLUTION, sub.parent.mkdir() or sub)
    status, out, _ = grade(capsys, sub, "--csv", tmp_path / "g.csv")
    assert status == 0, out
    with open(tmp_path / "g.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["exercise"], r["status"]) for r in table] == [(n, "passed") for n in ("1.1", "1.2", "1.3", "1.4")]
    assert "4 of 4 exercises passed" in out


def test_tampering_outside_the_answers_changes_nothing(capsys, tmp_path):
    patch = nbformat.v4.new_code_cell(
        "import helpers.checks, helpers.checks._core as core\n"
        "core._record = lambda *a: print('passed')\n"
        "helpers.checks.check_gaussian_elbo = lambda f: True",
        id="evil",
    )
    nb = answered(
        {"1.1": ["return (", "  1"], "1.2": CORRECT["1.2"]},  # 1.1 does not parse
        drop={"ex13"},  # 1.3 deleted
        extra_cells=[(1, patch)],
        order={"ex12": -1, "ex12-check": -1},
    )  # 1.2 moved to the top
    for cell in nb.cells:
        if cell.id == "ex11-check":
            cell.source = "print('Exercise 1.1 (x): passed - trust me')"
    sub = write(nb, tmp_path / "bob" / "01_elbo.ipynb")
    before = hashlib.sha256(sub.read_bytes()).hexdigest()
    status, out, _ = grade(capsys, sub, "--json", tmp_path / "g.json")
    grades = {g["exercise"]: g for g in json.loads((tmp_path / "g.json").read_text())}
    assert status == 1
    assert grades["1.1"]["status"] == "error" and "does not parse" in grades["1.1"]["message"]
    assert grades["1.2"]["status"] == "passed"
    assert grades["1.3"]["status"] == "not attempted"
    assert hashlib.sha256(sub.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in sub.parent.iterdir()) == ["01_elbo.ipynb"]


TINY_CORRECT = {"0.1": ["return 2 * x"], "0.2": ["return x ** 2"], "0.3": ["return -x"]}


def _endless_answer(marker):
    # The answer starts a child in a session of its own and a daemon (double fork, setsid), then holds the GIL
    # forever (a C call through ctypes.PyDLL keeps it, without taking a core from the other tests).
    daemon = "import os, time\nif os.fork(): os._exit(0)\nos.setsid()\nif os.fork(): os._exit(0)\ntime.sleep(600)"
    return [
        "import ctypes, subprocess, sys",
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}'],",
        "                 start_new_session=True)",
        f"subprocess.run([sys.executable, '-c', {daemon!r}, '{marker}'])",
        "ctypes.PyDLL(None).sleep(600)",
    ]


@pytest.fixture(scope="module")
def runaways(tiny, tmp_path_factory):
    """One class, graded once with two jobs, of answers that end their run abnormally: an endless loop (where
    the sandbox can run: uncontained, what it detaches outlives the grade, as the README says), a kernel that
    dies, and an answer outside its function body. Their tests read this one batch: one runaway costs only its
    own grade, also in a batch with others, and the endless loop's wait is spent grading the others."""
    folder = tmp_path_factory.mktemp("runaways")
    marker = f"vi-grade-leftover-{folder.name}"
    answers = {
        # 0.1 fails before 0.2's kernel dies, so 0.1 might be to blame: 0.2 is run again on its own (and dies again)
        "dying": {"0.1": ["return 2 + x"], "0.2": ["import os", "os._exit(1)"], "0.3": TINY_CORRECT["0.3"]},
        "escape": {"0.2": TINY_CORRECT["0.2"], "0.3": ["return 0 - x"]},
    }
    if NO_SANDBOX is None:
        answers["endless"] = {"0.1": TINY_CORRECT["0.1"], "0.2": _endless_answer(marker), "0.3": TINY_CORRECT["0.3"]}
    for student, answer in answers.items():
        nb = tiny_answered(tiny, answer)
        if student == "escape":
            for cell in nb.cells:
                if cell.id == "ex01":
                    cell.source = cell.source.replace(
                        "    " + STUB_FIRST_LINE, "helpers = None\n    " + STUB_FIRST_LINE
                    )
        write(nb, folder / "class" / student / "00_tiny.ipynb")
    args = ["--root", tiny, "grade", folder / "class", "--jobs", 2, "--json", folder / "g.json"]
    args += ["--timeout", ENDLESS_TIMEOUT, "--checks", tiny / "tiny_checks.py"]
    args += ["--no-sandbox"] if NO_SANDBOX is not None else []
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main([str(a) for a in args])
    grades = {}
    for g in json.loads((folder / "g.json").read_text()):
        grades.setdefault(g["student"], {})[g["exercise"]] = g
    return status, out.getvalue(), grades, marker


@needs_sandbox  # uncontained, a process the answer detaches outlives the grade (the README says so)
def test_endless_loop_times_out_the_others_are_graded_and_nothing_survives(runaways):
    # When grade returns, none of the answer's processes, and no process of the sandbox, is alive.
    status, out, grades, marker = runaways
    assert status == 1 and {n: g["status"] for n, g in grades["endless"].items()} == {
        "0.1": "passed",
        "0.2": "timeout",
        "0.3": "passed",
    }, out
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert leftovers == [], f"processes started by the answer outlived the grade: {leftovers}"
    if os.geteuid() == 0:  # the sandbox's processes run as user ids of this process's own range
        first = 200_000 + (os.getpid() % 100_000) * 64
        mine = [p.pid for p in psutil.process_iter(["uids"]) if first <= p.info["uids"].real < first + 64]
        assert mine == [], f"processes of the sandbox outlived the grade: {mine}"


def test_dying_kernel_is_an_error_and_the_others_are_graded(runaways):
    status, out, grades, _ = runaways
    grades = grades["dying"]
    assert status == 1
    assert grades["0.1"]["status"] == "failed" and "double(3) returned 5" in grades["0.1"]["message"]
    assert grades["0.2"]["status"] == "error" and "kernel died" in grades["0.2"]["message"]
    assert grades["0.3"]["status"] == "passed"


def test_answer_escaping_the_function_body_is_an_error(runaways):
    grades = runaways[2]["escape"]
    assert grades["0.1"]["status"] == "error" and "inside the function body" in grades["0.1"]["message"]
    assert grades["0.2"]["status"] == "passed" and grades["0.3"]["status"] == "passed"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.ipynb", "no such file or folder"),
        (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", "not a notebook"),
        (lambda d: (d / "01_elbo.ipynb").write_text("{not json") and d / "01_elbo.ipynb", "not a readable"),
        (lambda d: shutil.copy(LESSON, d / "99_nothing.ipynb"), "matches no lesson"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no notebooks"),
        (lambda d: (d / "01_elbo.ipynb").symlink_to(d / "gone.ipynb") or d / "01_elbo.ipynb", "link to a missing"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, tmp_path, make, words):
    status, out, err = grade(capsys, make(tmp_path))
    assert status == 2 and words in err and "Traceback" not in err and err.count("\n") == 1


def test_the_instructors_guide_status_table_is_what_the_grader_prints():
    section = (ROOT / "INSTRUCTORS.md").read_text().split("## Grading\n", 1)[1].split("\n## ", 1)[0]
    table = [line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")]
    assert table == list(STATUSES)
