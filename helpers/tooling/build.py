r"""Generate the learner notebooks in ``lessons/`` from ``solutions/``.

Solution notebooks mark the learner's part with nbgrader's markers inside a
function, under a label line (the format is defined in
:mod:`helpers.exercise_format`)::

    # Exercise 1.2: KL divergence between two Gaussians
    def kl_normal(mu_q, sigma_q, mu_p, sigma_p):
        \"\"\"docstring stays visible\"\"\"
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

Each marked region becomes a stub, indented like the ``BEGIN`` line, that
raises ``NotImplementedError("Exercise 1.2: KL divergence between two
Gaussians")``. In a markdown cell (a written question) the region becomes a
prompt. Outputs and execution counts are cleared and cell ids kept. Every
exercise cell records its number and a checksum of its generated source, so
that a lesson holding a learner's work is recognised and never overwritten
without ``--force``; every exercise's check cell (the first later cell that
calls a ``check_*`` function on the exercise's function) records the number it
checks, which is how the grader and the nbgrader export find it.

Whether ``lessons/`` is in step with what this writes, and the ``build-lessons``
command itself, are :mod:`.sync`'s.
"""

import ast
import hashlib

from ..exercise_format import (
    BEGIN,
    END,
    METADATA_KEY,
    answer_prompt,
    check_call_target,
    check_meta,
    exercise_meta,
    exercise_of,
    find_label,
    stub_lines,
)
from .notebook_io import copy_notebook, normalize_metadata

__all__ = [
    "BuildError",
    "lesson_from_solution",
    "learner_work",
    "clear_outputs",
    "replace_regions",
    "exercise_function",
    "checksum",
]


class BuildError(ValueError):
    """A solution notebook that cannot be turned into a lesson (unbalanced markers, no label, no check cell)."""


def checksum(source):
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def replace_regions(source, stub, where):
    """``(source with each marked region replaced by the lines of stub, number of regions)``."""
    out, inside, found = [], False, 0
    for lineno, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise BuildError(f"{where}: nested '{BEGIN}' at line {lineno}")
            inside, found = True, found + 1
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s for s in stub)
        elif stripped == END:
            if not inside:
                raise BuildError(f"{where}: '{END}' without '{BEGIN}' at line {lineno}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise BuildError(f"{where}: '{BEGIN}' is never closed by '{END}'")
    return "\n".join(out), found


def exercise_function(source):
    """The name of the function whose body holds the solution region of a code cell, or None."""
    begin = next((i for i, line in enumerate(source.splitlines(), 1) if line.strip() == BEGIN), None)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and begin is not None and node.lineno < begin <= node.end_lineno:
            return node.name
    return None


def lesson_from_solution(solution, name="notebook"):
    """The learner notebook for a solution notebook (a new object; the input is not changed)."""
    nb = copy_notebook(solution)
    functions = {}  # exercise number -> (cell index, function name), code exercises only
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index} (id {cell.get('id', '?')})"
        cell.metadata.pop(METADATA_KEY, None)
        if BEGIN not in cell.source and END not in cell.source:
            clear_outputs(cell)
            continue
        label = find_label(cell.source)
        if label is None:
            raise BuildError(
                f"{where}: a solution region needs a label line such as "
                "'# Exercise 1.2: <short task>' (code) or '**Question 1.4**' (markdown)"
            )
        if cell.cell_type == "code":
            if not label.task:
                raise BuildError(f"{where}: '{label.kind} {label.number}' needs a short task after the colon")
            function = exercise_function(cell.source)
            stub = stub_lines(label.number, label.task, label.kind)
        else:
            stub = [answer_prompt(label.number, label.kind)]
        cell.source, regions = replace_regions(cell.source, stub, where)
        if cell.cell_type == "code":
            if regions > 1:
                raise BuildError(
                    f"{where}: one solution region per code cell (one exercise, one answer); found {regions}"
                )
            if function is None:
                raise BuildError(
                    f"{where}: the solution region of {label.kind} {label.number} must sit inside a "
                    "function (exercises are functions, so later cells can call them)"
                )
            if label.number in functions:
                raise BuildError(f"{where}: {label.kind} {label.number} appears twice")
            functions[label.number] = (index, function)
        clear_outputs(cell)
        cell.metadata[METADATA_KEY] = exercise_meta(label.number, checksum(cell.source))
    for number, (index, function) in functions.items():
        check = next(
            (c for c in nb.cells[index + 1 :] if c.cell_type == "code" and check_call_target(c.source) == function),
            None,
        )
        if check is None:
            raise BuildError(
                f"{name}: Exercise {number} has no check cell; add a code cell below it that calls "
                f"its checker, e.g. `check_...({function})`"
            )
        check.metadata[METADATA_KEY] = check_meta(number)
    return normalize_metadata(nb)


def clear_outputs(cell):
    """Empty a code cell's outputs and execution count (in place); other cells are left as they are."""
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None


def learner_work(lesson):
    """Reasons why a lesson notebook holds a learner's work (empty list: it does not).

    Executed outputs, and exercise cells whose source no longer matches the
    checksum the build recorded in them. This reads only the lesson itself, so
    it holds also for a lesson whose solution has changed since.
    """
    reasons = []
    code = [c for c in lesson.cells if c.cell_type == "code"]
    if any(c.get("outputs") for c in code) or any(c.get("execution_count") for c in code):
        reasons.append("it has executed outputs")
    edited = [
        exercise_of(c)
        for c in lesson.cells
        if exercise_of(c) and checksum(c.source) != c.metadata[METADATA_KEY].get("checksum")
    ]
    if edited:
        one = len(edited) == 1
        reasons.append(f"exercise{'' if one else 's'} {_and(edited)} {'is' if one else 'are'} edited")
    return reasons


def _and(items):
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
