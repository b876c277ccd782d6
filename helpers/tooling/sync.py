r"""``lessons/`` against what ``solutions/`` generates now, and the ``build-lessons`` command.

``--check`` (:func:`survey_lessons`) compares each lesson file with what its
solution generates now, in three steps (:func:`assess_lesson`): the bytes; then
the notebook without the metadata a front end writes on opening and autosaving
(JupyterLab's kernel and language info, cell state, widget state); then the
notebook with the learner's part put back as well (outputs, execution counts,
and each exercise's answer slot, see
:func:`~helpers.exercise_format.only_the_answer_differs`). A lesson equal at
the second step is up to date; one equal only at the third holds a learner's
work and is reported by name, not failed; anything else is stale and fails,
also when it holds a learner's work, which the message then names too.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..exercise_format import exercise_of, only_the_answer_differs
from .build import BuildError, clear_outputs, learner_work, lesson_from_solution
from .notebook_io import copy_notebook, normalize_metadata, read_notebook, render_notebook

__all__ = ["LessonState", "assess_lesson", "survey_lessons", "LearnerWork", "build_lessons"]


# ------------------------------------------------------------------ a lesson file against its solution

UP_TO_DATE = "up to date"  # byte for byte what the build writes
OPENED = "opened"  # differs only in metadata a notebook front end writes (kernel, language, cell state)
LEARNER_WORK = "learner's work"  # differs only in the learner's answers and outputs
STALE = "stale"  # differs elsewhere: the solution changed since, or the lesson was edited outside its answers
MISSING = "missing"


@dataclass
class LessonState:
    """How ``lessons/<name>`` stands against what ``solutions/<name>`` generates now."""

    name: str
    text: str  # what the build writes for it
    status: str  # UP_TO_DATE, OPENED, LEARNER_WORK, STALE or MISSING
    work: list = field(default_factory=list)  # why it holds a learner's work (see learner_work)
    differences: list = field(default_factory=list)  # for STALE: where it differs, in words

    @property
    def path(self):
        return f"lessons/{self.name}"

    @property
    def solution(self):
        return f"solutions/{self.name}"


def without_front_end_metadata(lesson):
    """A copy of ``lesson`` with only the metadata the build writes: what JupyterLab adds on opening is gone.

    Opening a lesson in JupyterLab writes the kernel's ``language_info`` and
    ``kernelspec`` into the notebook's metadata and autosaves, without any edit;
    running or folding cells adds cell metadata (``execution``, ``collapsed``,
    ``scrolled``, ``jp-MarkdownHeadingCollapsed``, ``trusted``), widgets add
    ``widgets``. :func:`normalize_metadata` keeps what the build owns.
    """
    return normalize_metadata(copy_notebook(lesson))


def without_learner_work(lesson, generated):
    """A copy of ``lesson`` with the learner's part put back to the ``generated`` lesson's.

    The learner's part: outputs and execution counts, and each exercise cell's
    answer slot (the stub, or a written answer's prompt) when only that slot
    differs from the generated cell with the same id
    (:func:`~helpers.exercise_format.only_the_answer_differs`). Everything else
    is left as it is, so that a difference there still shows.
    """
    nb = without_front_end_metadata(lesson)
    pristine = {cell.get("id"): cell for cell in generated.cells if exercise_of(cell)}
    for cell in nb.cells:
        clear_outputs(cell)
        original = pristine.get(cell.get("id"))
        if original is not None and cell.cell_type == original.cell_type:
            if only_the_answer_differs(original.source, cell.source):
                cell.source = original.source
                cell.pop("attachments", None)  # images pasted into a written answer
    return nb


def _first_line(cell, width=40):
    line = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return json.dumps(line if len(line) <= width else line[: width - 3] + "...", ensure_ascii=False)


def differing_cells(lesson, generated, limit=3):
    """Where ``lesson`` differs from the ``generated`` lesson, in words, cell by cell (cells matched by id)."""
    found = []
    mine = {cell.get("id"): cell for cell in lesson.cells}
    for number, cell in enumerate(generated.cells, 1):
        other = mine.get(cell.get("id"))
        if other is None:
            found.append(f"cell {number} {_first_line(cell)} is missing")
        elif other != cell:
            parts = [k for k in ("cell_type", "source", "metadata", "attachments") if other.get(k) != cell.get(k)]
            found.append(f"cell {number} {_first_line(cell)} has another {' and '.join(parts) or 'content'}")
    ids = {cell.get("id") for cell in generated.cells}
    found += [f"cell {_first_line(cell)} is not in it" for cell in lesson.cells if cell.get("id") not in ids]
    if not found:
        same_order = [c.get("id") for c in lesson.cells] == [c.get("id") for c in generated.cells]
        found.append("the notebook's format differs" if same_order else "its cells are in another order")
    return found[:limit] + ([f"{len(found) - limit} more"] if len(found) > limit else [])


def assess_lesson(name, current, generated):
    """The :class:`LessonState` of lesson ``name`` whose file holds ``current`` (None: no file).

    ``generated`` is the lesson its solution generates now. Compared in turn:
    the bytes; the notebook without the metadata a front end adds; the notebook
    with the learner's answers and outputs put back as well. What still differs
    after that makes the lesson stale.
    """
    text = render_notebook(generated)
    if current is None:
        return LessonState(name, text, MISSING)
    if current == text:
        return LessonState(name, text, UP_TO_DATE)
    lesson = _read_lesson(current)
    if lesson is None:
        unreadable = "it is not a readable notebook"
        return LessonState(name, text, STALE, [unreadable], [unreadable])
    if render_notebook(without_front_end_metadata(lesson)) == text:
        return LessonState(name, text, OPENED)
    work = learner_work(lesson)
    restored = without_learner_work(lesson, generated)
    if render_notebook(restored) == text:
        return LessonState(name, text, LEARNER_WORK, work or ["answers"])
    return LessonState(name, text, STALE, work, differing_cells(restored, generated))


def _read_lesson(text):
    """The notebook in ``text``, or None for anything that is not one (a merge conflict, a truncated file)."""
    try:
        lesson = nbformat.reads(text, as_version=4)
        return lesson if isinstance(lesson.get("cells"), list) else None
    except Exception:
        return None


# ------------------------------------------------------------------ what the build says

GRADE_COMMAND = "python -m helpers grade lessons/"


def stale_message(state):
    """The line ``--check`` prints for a stale lesson; it also names the learner's work the lesson holds."""
    line = (
        f"{state.path}: stale (outside the answers, it differs from what {state.solution} generates: "
        f"{'; '.join(state.differences)})"
    )
    if not state.work:
        return line + "; run `python -m helpers build-lessons`"
    return (
        f"{line}, and it holds your work ({' and '.join(state.work)}): keep a copy of it elsewhere, then run "
        "`python -m helpers build-lessons --force`, which replaces it"
    )


def learner_work_note(state):
    """The note for a lesson that differs from the generated one only by the learner's work: not a failure."""
    return (
        f"{state.path} holds your work ({' and '.join(state.work)}); apart from that it is up to date with "
        f"{state.solution}. Check your answers with `{GRADE_COMMAND}`."
    )


class LearnerWork(UserWarning):
    """The warning the repository's sync test gives for a lesson that holds only a learner's work (not a failure)."""


@dataclass
class Survey:
    """Every lesson's state, the solutions that could not be built, and the lessons without a solution."""

    lessons: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    orphans: list = field(default_factory=list)  # file names in lessons/ with no solution (nor a copy of one)
    copies: list = field(default_factory=list)  # (copy, lesson): a learner's duplicate of a lesson

    def check_failures(self):
        """What ``--check`` fails on, one line each: malformed solutions, missing or stale lessons, orphans."""
        lines = [f"error: {message}" for message in self.errors]
        for state in self.lessons:
            if state.status == MISSING:
                lines.append(
                    f"{state.path}: missing (does not match what {state.solution} generates); "
                    "run `python -m helpers build-lessons`"
                )
            elif state.status == STALE:
                lines.append(stale_message(state))
        lines += [f"lessons/{name}: has no solution notebook (left alone)" for name in self.orphans]
        return lines

    def learner_notes(self):
        """One line for each lesson (or copy of one) that holds only a learner's work: reported, not failed."""
        notes = [learner_work_note(state) for state in self.lessons if state.status == LEARNER_WORK]
        copies = [f"lessons/{copy} is your copy of lessons/{lesson} (not compared)" for copy, lesson in self.copies]
        return notes + copies


_DUPLICATE = re.compile(r"^(?P<stem>.+)-Copy\d+\.ipynb$")  # JupyterLab's "Duplicate": 01_elbo-Copy1.ipynb


def survey_lessons(root):
    """Compare every lesson in ``root/lessons`` with what ``root/solutions`` generates; write nothing."""
    root = Path(root)
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    survey = Survey()
    for path in solutions:
        try:
            generated = lesson_from_solution(read_notebook(path), f"solutions/{path.name}")
        except (BuildError, ValueError) as exc:
            survey.errors.append(str(exc))
            continue
        target = root / "lessons" / path.name
        current = target.read_text(encoding="utf-8") if target.exists() else None
        survey.lessons.append(assess_lesson(path.name, current, generated))
    names = {p.name for p in solutions}
    for extra in sorted(p.name for p in (root / "lessons").glob("*.ipynb") if p.name not in names):
        duplicate = _DUPLICATE.match(extra)
        if duplicate and f"{duplicate['stem']}.ipynb" in names:
            survey.copies.append((extra, f"{duplicate['stem']}.ipynb"))
        else:
            survey.orphans.append(extra)
    return survey


def build_lessons(root, check=False, force=False, echo=print):
    """Write (or with ``check``, compare) every lesson; return the exit status.

    Exit 0: everything up to date (or written); a lesson that differs only by
    metadata a front end adds counts as up to date, and one that differs only
    by a learner's answers and outputs is reported and left as it is. Exit 1:
    with ``check``, some lesson is stale, missing or has no solution; without
    it, a stale lesson was left alone because it holds a learner's work, or a
    solution is malformed.
    """
    root = Path(root)
    if not any((root / "solutions").glob("*.ipynb")):
        echo(f"error: no solution notebooks in {root / 'solutions'}")
        return 1
    (root / "lessons").mkdir(exist_ok=True)
    survey = survey_lessons(root)
    if check:
        return _report_check(survey, echo)
    return _write_lessons(root, survey, force, echo)


def _report_check(survey, echo):
    failures = survey.check_failures()
    for line in failures + survey.learner_notes():
        echo(line)
    stale = len(failures) - len(survey.errors)
    if failures:
        echo(f"{stale} lesson(s) out of sync with solutions/")
    return 1 if failures else 0


def _write_lessons(root, survey, force, echo):
    problems = 0
    for message in survey.errors:
        echo(f"error: {message}")
        problems += 1
    for state in survey.lessons:
        target = root / "lessons" / state.name
        if state.status == UP_TO_DATE:
            echo(f"{state.path}: up to date")
            continue
        if state.status == LEARNER_WORK and not force:
            echo(f"{state.path}: up to date apart from your work ({' and '.join(state.work)}), left as it is")
            continue
        if state.status == STALE and state.work and not force:
            echo(
                f"{state.path}: not overwritten, {' and '.join(state.work)} (a learner's work?), and it is stale "
                f"({'; '.join(state.differences)}). Move it aside, or rerun with --force to replace it."
            )
            problems += 1
            continue
        target.write_text(state.text, encoding="utf-8")
        echo(f"{state.path}: written" + _WRITTEN_BECAUSE.get(state.status, ""))
    for copy, lesson in survey.copies:
        echo(f"lessons/{copy}: a copy of lessons/{lesson} (left alone)")
    for name in survey.orphans:
        echo(f"lessons/{name}: has no solution notebook (left alone)")
    return 1 if problems else 0


_WRITTEN_BECAUSE = {
    OPENED: " (only metadata that JupyterLab adds differed)",
    LEARNER_WORK: " (replaced your work: --force)",
}
