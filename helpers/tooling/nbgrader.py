r"""Export the course as an nbgrader course directory: ``python -m helpers export-nbgrader DEST``.

The solution notebooks carry nbgrader's markers but not its cell metadata, and
their check cells print a verdict instead of failing; nbgrader needs both. The
export writes, from ``solutions/``::

    DEST/nbgrader_config.py
    DEST/source/01_elbo/01_elbo.ipynb      (one assignment per lesson, or all in one with --assignment)
    ...

in which

- each code exercise is an *autograded answer* cell (``solution: true``);
- its check cell (found through the lesson builder's metadata) is an
  *autograder test* cell worth one point, locked, whose call ends in
  ``.raise_if_failed()``: it still prints the course's one-line diagnosis, and
  then raises ``AssertionError`` unless the exercise passed;
- each written question's answer cell is a *manually graded answer* worth one
  point;
- the configuration replaces nbgrader's stub ``raise NotImplementedError()``
  with the course's own (``raise NotImplementedError("Exercise 1.2: ...")``), so
  a released assignment reads exactly like the lesson in ``lessons/``.

Then, in DEST, with the ``nbgrader`` extra installed::

    nbgrader generate_assignment 01_elbo
    nbgrader autograde 01_elbo

References
----------
nbgrader documentation, "Developing assignments with the assignment toolbar"
(cell types and their metadata), https://nbgrader.readthedocs.io
"""

import re
import shutil
from pathlib import Path

import nbformat

from ..exercise_format import BEGIN, answer_prompt, check_of, exercise_of, find_label, stub_lines
from .build import lesson_from_solution
from .notebook_io import copy_notebook, read_notebook, render_notebook

__all__ = ["export_nbgrader", "nbgrader_notebook", "course_preprocessors", "CONFIG"]

SCHEMA_VERSION = 3

CONFIG = '''"""nbgrader configuration of the VI course, written by `python -m helpers export-nbgrader`.

Run nbgrader from this folder (it holds source/, and nbgrader writes release/,
submitted/, autograded/, feedback/ and gradebook.db beside it).
"""

from helpers.tooling.nbgrader import course_preprocessors

c = get_config()  # noqa: F821 (defined by nbgrader when it reads this file)

# The course's own stubs, "raise NotImplementedError('Exercise 1.2: ...')", instead of nbgrader's bare one.
c.GenerateAssignment.preprocessors = course_preprocessors()

# Lessons train small models: give a cell up to five minutes, as the course's own grader does.
c.ExecutePreprocessor.timeout = 300
c.Execute.timeout = 300
'''


def _grade_id(kind, number):
    return f"{kind}-{number.replace('.', '-')}"


def _meta(grade_id, solution, grade, locked, points=None):
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": SCHEMA_VERSION,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return meta


def nbgrader_notebook(solution, name="notebook"):
    """The nbgrader source notebook for a solution notebook (a new object).

    Raises :class:`helpers.tooling.build.BuildError` for a solution the lesson
    builder would refuse.
    """
    lesson = lesson_from_solution(solution, name)  # validates, and finds the check cells
    nb = copy_notebook(solution)
    for cell, built in zip(nb.cells, lesson.cells, strict=True):
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k == "tags"})
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        number, checked = exercise_of(built), check_of(built)
        if number and cell.cell_type == "code":
            cell.metadata["nbgrader"] = _meta(_grade_id("exercise", number), True, False, False)
        elif number:
            cell.metadata["nbgrader"] = _meta(_grade_id("question", number), True, True, False, points=1)
        elif checked:
            cell.source = cell.source.rstrip() + ".raise_if_failed()"
            cell.metadata["nbgrader"] = _meta(_grade_id("check", checked), False, True, True, points=1)
    return nb


def export_nbgrader(root, dest, assignment=None, force=False, echo=print):
    """Write ``dest/nbgrader_config.py`` and ``dest/source/``; return the exit status (0 written, 1 refused)."""
    root, dest = Path(root), Path(dest)
    if assignment is not None and not re.fullmatch(r"[A-Za-z0-9_\-]+", assignment):
        echo(f"error: assignment name {assignment!r} may hold only letters, digits, '_' and '-'")
        return 1
    source = dest / "source"
    if source.exists() and not force:
        echo(f"error: {source} exists; rerun with --force to replace it")
        return 1
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    notebooks = {}
    for path in solutions:
        try:
            notebooks[path] = render_notebook(nbgrader_notebook(read_notebook(path), f"solutions/{path.name}"))
        except ValueError as exc:
            echo(f"error: {exc}")
            return 1
    if source.exists():
        shutil.rmtree(source)
    for path, text in notebooks.items():
        folder = source / (assignment or path.stem)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_text(text, encoding="utf-8")
    (dest / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")
    names = sorted({assignment or p.stem for p in solutions})
    echo(
        f"wrote {dest / 'nbgrader_config.py'} and {len(solutions)} notebook(s) in {source}: "
        f"assignment(s) {', '.join(names)}"
    )
    echo(f"next: cd {dest} && nbgrader generate_assignment {names[0]}")
    return 0


def course_preprocessors():
    """nbgrader's ``GenerateAssignment`` preprocessors, with the course's stubs in place of its bare one.

    Imported by the exported ``nbgrader_config.py``; needs nbgrader installed.
    """
    from nbgrader.converters.generate_assignment import GenerateAssignment
    from nbgrader.preprocessors import ClearSolutions

    class CourseClearSolutions(ClearSolutions):
        """Stubs that name their exercise, exactly as in ``lessons/``."""

        def _replace_solution_region(self, cell, language):
            label = find_label(cell.source) if BEGIN in cell.source else None
            if label is None:
                return super()._replace_solution_region(cell, language)
            code_stub, text_stub = self.code_stub, self.text_stub
            self.code_stub = dict(code_stub, **{language: "\n".join(stub_lines(label.number, label.task, label.kind))})
            self.text_stub = answer_prompt(label.number, label.kind)
            try:
                return super()._replace_solution_region(cell, language)
            finally:
                self.code_stub, self.text_stub = code_stub, text_stub

    default = GenerateAssignment.class_traits()["preprocessors"].default()
    return [CourseClearSolutions if p is ClearSolutions else p for p in default]
