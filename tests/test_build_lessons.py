"""The lesson generator: stubs, prompts, determinism, --check, and never
overwriting a learner's work without --force. A lesson only opened in
JupyterLab is up to date; one that holds only a learner's answers and outputs
is reported by name, not failed; a stale one fails, also when it holds them."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from helpers.tooling.build import BuildError, learner_work, lesson_from_solution
from helpers.tooling.cli import main
from helpers.tooling.notebook_io import render_notebook
from helpers.tooling.sync import LEARNER_WORK, OPENED, STALE, survey_lessons

SOLUTION_CODE = '''# Exercise 3.2: add one, twice
def add_two(a):
    """Docstring stays."""
    if a is not None:
        ### BEGIN SOLUTION
        b = a + 1
        return b + 1
        ### END SOLUTION
    return None'''

SOLUTION_MD = """### Question 3.3 (written)

Why?

### BEGIN SOLUTION
Because.
### END SOLUTION"""


def solution_notebook():
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Title", id="title"),
            new_code_cell("import math", id="setup", execution_count=1),
            new_code_cell(SOLUTION_CODE, id="ex32", execution_count=2),
            new_code_cell(
                "add_two(1)",
                id="use",
                execution_count=3,
                outputs=[new_output("execute_result", {"text/plain": "3"}, execution_count=3)],
            ),
            new_markdown_cell(SOLUTION_MD, id="q33"),
            new_code_cell("check_add_two(add_two)", id="ex32-check", execution_count=4),
        ]
    )
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python", "version": "3.11.7"},
        "widgets": {"state": {}},
    }
    return nb


@pytest.fixture
def course(tmp_path):
    (tmp_path / "solutions").mkdir()
    nbformat.write(solution_notebook(), tmp_path / "solutions" / "03_demo.ipynb")
    return tmp_path


def build(root, *flags):
    return main(["--root", str(root), "build-lessons", *flags])


def test_stub_keeps_indentation_and_names_the_exercise():
    lesson = lesson_from_solution(solution_notebook())
    src = lesson.cells[2].source
    assert "b = a + 1" not in src and "SOLUTION" not in src
    assert '        # YOUR CODE HERE\n        raise NotImplementedError("Exercise 3.2: add one, twice")' in src
    assert src.endswith("    return None") and '"""Docstring stays."""' in src
    compile(src, "stub", "exec")  # still valid Python
    md = lesson.cells[4].source
    assert "Because" not in md and "*Your answer to question 3.3 here.*" in md and "Why?" in md


def test_outputs_cleared_ids_kept_metadata_normalised():
    lesson = lesson_from_solution(solution_notebook())
    assert [c.id for c in lesson.cells] == ["title", "setup", "ex32", "use", "q33", "ex32-check"]
    assert all(c.outputs == [] and c.execution_count is None for c in lesson.cells if c.cell_type == "code")
    assert lesson.metadata["language_info"] == {"name": "python"} and "widgets" not in lesson.metadata
    assert lesson.cells[2].metadata["course"]["exercise"] == "3.2"
    assert lesson.cells[4].metadata["course"]["exercise"] == "3.3"
    assert lesson.cells[5].metadata["course"] == {"check": "3.2"}  # how the grader finds the check cell
    assert all("course" not in c.metadata for c in (lesson.cells[0], lesson.cells[1], lesson.cells[3]))
    assert learner_work(lesson) == []


def test_output_is_byte_for_byte_deterministic():
    a = render_notebook(lesson_from_solution(solution_notebook()))
    b = render_notebook(lesson_from_solution(json.loads(json.dumps(solution_notebook()))))
    assert a == b and a.endswith("\n")


@pytest.mark.parametrize(
    "source, words",
    [
        ("# Exercise 1.1: x\ndef f():\n    ### BEGIN SOLUTION\n    pass", "never closed"),
        ("# Exercise 1.1: x\ndef f():\n    pass\n    ### END SOLUTION", "without"),
        ("# Exercise 1.1: x\ndef f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION", "nested"),
        ("def f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION", "label line"),
        ("# Exercise 1.1: x\n### BEGIN SOLUTION\na = 1\n### END SOLUTION", "inside a function"),
        ("# Exercise 1.1: x\ndef f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION", "no check cell"),
        (
            (
                "# Exercise 1.1: x\n### BEGIN SOLUTION\na = 1\n### "
                "END SOLUTION\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION"
            ),
            "one solution region per code cell",
        ),
    ],
)
def test_malformed_solutions_are_reported(source, words):
    nb = new_notebook(cells=[new_code_cell(source, id="bad")])
    with pytest.raises(BuildError, match=words):
        lesson_from_solution(nb, "solutions/x.ipynb")


@pytest.mark.parametrize(
    "source",
    [
        "check_add_two(add_two)",
        "checks.check_add_two(add_two)",
        "result = check_add_two(add_two)",
        "print(check_add_two(add_two))",
        "check_add_two(add_one)",
        "add_two(1); check_add_two(add_two)",
    ],
)
def test_a_check_cell_is_one_call_of_a_checker_on_the_exercise_function(source):
    nb = solution_notebook()
    nb.cells[-1].source = source
    if source.startswith(("check_add_two(add_two)", "checks.")):
        assert lesson_from_solution(nb).cells[-1].metadata["course"] == {"check": "3.2"}
    else:
        with pytest.raises(BuildError, match="Exercise 3.2 has no check cell"):
            lesson_from_solution(nb)


def test_build_then_check(course, capsys):
    assert build(course, "--check") == 1
    assert "lessons/03_demo.ipynb: missing" in capsys.readouterr().out
    assert build(course) == 0
    first = (course / "lessons" / "03_demo.ipynb").read_bytes()
    assert build(course, "--check") == 0
    assert build(course) == 0 and "up to date" in capsys.readouterr().out
    assert (course / "lessons" / "03_demo.ipynb").read_bytes() == first


def test_check_names_every_stale_lesson_and_writes_nothing(course, capsys):
    build(course)
    sol = nbformat.read(course / "solutions" / "03_demo.ipynb", 4)
    sol.cells[0].source = "# A new title"
    nbformat.write(sol, course / "solutions" / "03_demo.ipynb")
    nbformat.write(sol, course / "solutions" / "04_other.ipynb")
    before = (course / "lessons" / "03_demo.ipynb").read_bytes()
    assert build(course, "--check") == 1
    out = capsys.readouterr().out
    assert "lessons/03_demo.ipynb: stale" in out and "lessons/04_other.ipynb: missing" in out
    assert (course / "lessons" / "03_demo.ipynb").read_bytes() == before
    assert not (course / "lessons" / "04_other.ipynb").exists()
    assert build(course) == 0  # a stale lesson without learner work is simply regenerated


@pytest.mark.parametrize(
    "edit, reason",
    [("outputs", "executed outputs"), ("exercise", "exercise 3.2 is edited"), ("answer", "exercise 3.3 is edited")],
)
def test_learner_work_is_never_overwritten_without_force(course, capsys, edit, reason):
    build(course)
    path = course / "lessons" / "03_demo.ipynb"
    lesson = nbformat.read(path, 4)
    if edit == "outputs":
        lesson.cells[1].execution_count = 1
    elif edit == "exercise":
        lesson.cells[2].source = lesson.cells[2].source.replace("raise NotImplementedError", "return a + 2  #")
    else:
        lesson.cells[4].source = lesson.cells[4].source.replace("*Your answer to question 3.3 here.*", "Since.")
    nbformat.write(lesson, path)
    work = path.read_bytes()
    sol = nbformat.read(course / "solutions" / "03_demo.ipynb", 4)
    sol.cells[0].source = "# Changed"  # make the lesson stale
    nbformat.write(sol, course / "solutions" / "03_demo.ipynb")

    assert build(course) == 1
    out = capsys.readouterr().out
    assert "not overwritten" in out and reason in out and "--force" in out
    assert path.read_bytes() == work
    assert build(course, "--force") == 0
    assert path.read_bytes() != work and build(course, "--check") == 0


# ------------------------------------------------------------------ what opening and working in a lesson changes

# What JupyterLab 4 (4.6) writes into a lesson it opens, then autosaves without any edit: the kernel's
# `language_info` from its kernel_info reply (here ipykernel's, Python 3.11.7) and the `kernelspec` of the
# kernel it started (NotebookPanel._updateLanguage and _updateSpec in jlab_core). jupyter_server saves the
# model with nbformat.write: indent 1, sorted keys, a trailing newline, as the build renders.
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": "3.11.7",
}


def open_in_jupyterlab(lesson, kernel="python3"):
    """``lesson`` as JupyterLab saves it after opening it with a kernel named ``kernel``."""
    lesson.metadata["language_info"] = dict(LANGUAGE_INFO)
    lesson.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": kernel}
    return lesson


def fold_and_scroll(lesson):
    """What a front end adds to cells without editing them: folded headings and outputs, timing, trust, widgets."""
    lesson.cells[0].metadata["jp-MarkdownHeadingCollapsed"] = True
    lesson.cells[1].metadata.update(collapsed=True, scrolled=True, trusted=True)
    lesson.cells[1].metadata["execution"] = {"iopub.status.busy": "2026-12-08T10:00:00.000Z"}
    lesson.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    return lesson


def answer_everything(lesson):
    """A learner's work: a code answer in place of the stub, a written answer, outputs and execution counts."""
    code, written = lesson.cells[2], lesson.cells[4]
    code.source = code.source.replace(
        '# YOUR CODE HERE\n        raise NotImplementedError("Exercise 3.2: add one, twice")',
        "b = a + 2  # my answer\n        return b\n",
    )
    written.source = written.source.replace("*Your answer to question 3.3 here.*", "Since.\n\nAnd more.")
    lesson.cells[3].execution_count = 3
    lesson.cells[3].outputs = [new_output("execute_result", {"text/plain": "3"}, execution_count=3)]
    lesson.cells[5].outputs = [new_output("stream", name="stdout", text="Exercise 3.2 (add one, twice): passed\n")]
    return lesson


def edit_lesson(course, *edits):
    """Apply ``edits`` (functions of a notebook) to the built lesson, saved as jupyter_server saves it."""
    path = course / "lessons" / "03_demo.ipynb"
    lesson = nbformat.read(path, 4)
    for edit in edits:
        lesson = edit(lesson)
    nbformat.write(lesson, path)
    return path


def change_the_solution(course):
    sol = nbformat.read(course / "solutions" / "03_demo.ipynb", 4)
    sol.cells[0].source = "# A new title"
    nbformat.write(sol, course / "solutions" / "03_demo.ipynb")


@pytest.mark.parametrize(
    "edits",
    [(open_in_jupyterlab,), (lambda nb: open_in_jupyterlab(nb, kernel="vi-course"),), (fold_and_scroll,)],
    ids=["opened", "another-kernel", "folded"],
)
def test_a_lesson_opened_in_jupyterlab_is_up_to_date(course, capsys, edits):
    build(course)
    path = edit_lesson(course, *edits)
    opened = path.read_bytes()
    assert b'"pygments_lexer"' in opened or b'"collapsed"' in opened  # the fixture did change the file
    capsys.readouterr()
    assert build(course, "--check") == 0 and capsys.readouterr().out == ""
    assert [s.status for s in survey_lessons(course).lessons] == [OPENED]
    assert path.read_bytes() == opened  # --check writes nothing
    assert build(course) == 0  # no learner's work: the build may normalise it
    assert "written (only metadata that JupyterLab adds differed)" in capsys.readouterr().out
    assert build(course, "--check") == 0 and build(course) == 0 and "up to date" in capsys.readouterr().out


def test_a_lesson_holding_only_the_learner_s_work_is_reported_by_name_not_failed(course, capsys):
    build(course)
    path = edit_lesson(course, open_in_jupyterlab, fold_and_scroll, answer_everything)
    work = path.read_bytes()
    capsys.readouterr()
    assert build(course, "--check") == 0
    out = capsys.readouterr().out
    assert out.startswith("lessons/03_demo.ipynb holds your work (it has executed outputs and exercises 3.2 and 3.3")
    assert "up to date with solutions/03_demo.ipynb" in out and "`python -m helpers grade lessons/`" in out
    assert "stale" not in out
    [state] = survey_lessons(course).lessons
    assert state.status == LEARNER_WORK
    assert state.work == ["it has executed outputs", "exercises 3.2 and 3.3 are edited"]
    assert build(course) == 0 and "up to date apart from your work" in capsys.readouterr().out
    assert path.read_bytes() == work  # left as it is
    assert build(course, "--force") == 0 and "replaced your work" in capsys.readouterr().out
    assert build(course, "--check") == 0 and capsys.readouterr().out == ""


def test_a_stale_lesson_fails_and_names_where_it_differs(course, capsys):
    build(course)
    edit_lesson(course, open_in_jupyterlab)  # opened, and stale: the solution changed since
    change_the_solution(course)
    capsys.readouterr()
    assert build(course, "--check") == 1
    out = capsys.readouterr().out
    assert out.startswith("lessons/03_demo.ipynb: stale (outside the answers, it differs from what ")
    assert 'cell 1 "# A new title" has another source' in out and "run `python -m helpers build-lessons`" in out
    assert "your work" not in out and out.endswith("1 lesson(s) out of sync with solutions/\n")
    assert build(course) == 0 and build(course, "--check") == 0


def test_a_stale_lesson_that_holds_the_learner_s_work_fails_naming_both(course, capsys):
    build(course)
    path = edit_lesson(course, open_in_jupyterlab, answer_everything)
    change_the_solution(course)
    work = path.read_bytes()
    capsys.readouterr()
    assert build(course, "--check") == 1
    out = capsys.readouterr().out
    assert out.startswith("lessons/03_demo.ipynb: stale (") and 'cell 1 "# A new title" has another source' in out
    assert "it holds your work (it has executed outputs and exercises 3.2 and 3.3 are edited)" in out
    assert "keep a copy of it elsewhere, then run `python -m helpers build-lessons --force`" in out
    assert build(course) == 1 and "not overwritten" in capsys.readouterr().out and path.read_bytes() == work


def rename_the_function(lesson):
    lesson.cells[2].source = lesson.cells[2].source.replace("def add_two(a):", "def add_two(a, b=1):")
    return lesson


def reword_the_question(lesson):
    lesson.cells[4].source = lesson.cells[4].source.replace("Why?", "Why not?")
    return lesson


def add_a_cell(lesson):
    lesson.cells.insert(3, new_code_cell("add_two(41)", id="mine"))
    return lesson


@pytest.mark.parametrize(
    "edit, where",
    [
        (rename_the_function, 'cell 3 "# Exercise 3.2: add one, twice" has another source'),
        (reword_the_question, 'cell 5 "### Question 3.3 (written)" has another source'),
        (add_a_cell, 'cell "add_two(41)" is not in it'),
    ],
)
def test_edits_outside_the_answers_are_differences_not_learner_work(course, capsys, edit, where):
    """Only the answer slots (a stub, a prompt) and outputs are the learner's: anything else shows as a difference,
    so that a lesson that is really stale can never pass as a learner's work."""
    build(course)
    edit_lesson(course, answer_everything, edit)
    capsys.readouterr()
    assert build(course, "--check") == 1
    out = capsys.readouterr().out
    assert "stale" in out and where in out and "holds your work" in out
    assert [s.status for s in survey_lessons(course).lessons] == [STALE]


def test_an_unreadable_lesson_is_stale_and_kept(course, capsys):
    build(course)
    path = course / "lessons" / "03_demo.ipynb"
    path.write_text("<<<<<<< HEAD\n{}\n")
    capsys.readouterr()
    assert build(course, "--check") == 1 and "it is not a readable notebook" in capsys.readouterr().out
    assert build(course) == 1 and path.read_text().startswith("<<<<<<<")
    assert build(course, "--force") == 0 and build(course, "--check") == 0


def test_a_lesson_duplicated_in_jupyterlab_is_the_learner_s_copy(course, capsys):
    build(course)
    lessons = course / "lessons"
    (lessons / "03_demo-Copy1.ipynb").write_bytes((lessons / "03_demo.ipynb").read_bytes())
    capsys.readouterr()
    assert build(course, "--check") == 0
    assert "lessons/03_demo-Copy1.ipynb is your copy of lessons/03_demo.ipynb" in capsys.readouterr().out
    (lessons / "04_other-Copy1.ipynb").write_text("{}")  # a copy of no lesson: an orphan, as before
    assert build(course, "--check") == 1 and "04_other-Copy1.ipynb: has no solution" in capsys.readouterr().out


def test_orphan_lesson_is_left_alone_but_flagged(course, capsys):
    build(course)
    (course / "lessons" / "99_mine.ipynb").write_text("{}")
    assert build(course) == 0 and (course / "lessons" / "99_mine.ipynb").exists()
    assert build(course, "--check") == 1
    assert "99_mine.ipynb: has no solution notebook" in capsys.readouterr().out


def test_cli_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(tmp_path), "build-lessons"])
    assert exc.value.code == 2 and "no solutions/ folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_require_raises_the_stub_message_only_for_stubs():
    from helpers.checks import require

    namespace = {}
    exec(compile("def done(x):\n    return x\n", "<done>", "exec"), namespace)  # no source: assumed finished
    require(namespace["done"], len)

    def stub(x):
        ### a generated stub looks like this
        raise NotImplementedError("Exercise 4.1: amortized ELBO per data point")

    def finished(x):
        return x  # mentions NotImplementedError only in a comment

    require(finished)
    with pytest.raises(NotImplementedError, match=r"^Exercise 4\.1: amortized ELBO per data point$"):
        require(finished, stub)
