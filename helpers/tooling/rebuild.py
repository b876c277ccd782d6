"""Rebuild a submission: the pristine lesson with only the learner's answers copied in.

A submission is never run as it is. Each exercise cell of the lesson (recognised by the metadata the
lesson builder wrote, :mod:`helpers.exercise_format`) is found in the submission by cell id, else by its
exercise number; the lines that replaced its stub are the answer, and they must stay inside the function
that held the stub. Everything else in the submission (other cells, edited check cells, the cell's label,
signature and docstring) is ignored, or makes that one exercise an ``error`` when the answer cannot be
told apart from it.
"""

import ast
from dataclasses import dataclass

from ..exercise_format import check_of, exercise_of, find_label, find_stub

__all__ = ["Exercise", "exercises", "rebuild", "truncate_after_check"]


@dataclass
class Exercise:
    """A lesson's exercise cell, cut into the lines before its stub, the stub and the lines after it."""

    number: str
    cell_index: int
    prefix: list
    stub: list
    suffix: list


def exercises(lesson):
    """The code exercises of ``lesson``, in order, as :class:`Exercise` s."""
    out = []
    for index, cell in enumerate(lesson.cells):
        number = exercise_of(cell)
        if cell.cell_type != "code" or number is None:
            continue
        lines = cell.source.splitlines()
        start, stop = find_stub(lines)
        out.append(Exercise(number, index, lines[:start], lines[start:stop], lines[stop:]))
    return out


def _source(cell):
    source = cell.get("source")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    return source if isinstance(source, str) else None


def _find_cell(submission, lesson_cell, number):
    cells = [c for c in submission.cells if isinstance(c, dict) and c.get("cell_type") == "code"]
    by_id = [c for c in cells if c.get("id") == lesson_cell.get("id")]
    if by_id:
        return by_id[0]
    for cell in cells:  # fallback: the exercise number, in metadata or in the label line
        source = _source(cell)
        label = find_label(source) if source is not None else None
        if exercise_of(cell) == number or (label and label.number == number):
            return cell
    return None


def _top_level(source):
    return ast.parse(source).body


def _answer(ex, cell, lesson_source):
    """The learner's answer lines for ``ex`` in ``cell``; None if untouched; or an error message."""
    if cell is None:
        return None, None
    source = _source(cell)
    if source is None:
        return None, "the exercise cell in your notebook is malformed (its source is not text); copy it from the lesson"
    lines = source.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    n_pre, n_suf = len(ex.prefix), len(ex.suffix)
    if lines[:n_pre] != ex.prefix or (n_suf and lines[len(lines) - n_suf :] != ex.suffix) or len(lines) < n_pre + n_suf:
        return None, (
            "the exercise cell was changed outside the answer (its label, signature or docstring); "
            "copy the cell from the lesson again and put your code where the stub was"
        )
    region = lines[n_pre : len(lines) - n_suf]
    if region == ex.stub:
        return None, None
    text = "\n".join(region)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, f"your answer holds a character that is not valid text (U+{ord(exc.object[exc.start]):04X})"
    if "\x00" in text:
        return None, "your answer holds a null character"
    source = "\n".join(ex.prefix + region + ex.suffix)
    try:
        body = _top_level(source)
    except SyntaxError as exc:
        indent = ex.stub[0][: len(ex.stub[0]) - len(ex.stub[0].lstrip())]
        if any(line.strip() and not line.startswith(indent) for line in region):
            return None, "the answer must stay inside the function body (keep its indentation)"
        return None, f"your code does not parse: {exc.msg} (line {exc.lineno} of the cell)"
    except (ValueError, MemoryError, RecursionError) as exc:
        return None, f"your code cannot be read: {type(exc).__name__}"
    code_lines = [i for i, line in enumerate(region) if line.strip() and not line.strip().startswith("#")]
    if code_lines and not _inside_function(
        body, _top_level(lesson_source), n_pre + 1 + code_lines[0], n_pre + 1 + code_lines[-1]
    ):
        return None, "the answer must stay inside the function body (keep its indentation)"
    return region, None


def _inside_function(body, pristine, first, last):
    """The answer (lines ``first``..``last``) lies inside the function that held the stub, and adds no statement
    at the top level: a continuation line at column 0 is fine, a dedented statement is not."""
    if [type(n) for n in body] != [type(n) for n in pristine]:
        return False
    for node in body:
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.lineno < first
            and node.end_lineno >= last
        ):
            return True
    return False


def rebuild(lesson, submission, only=None):
    """The pristine lesson with the learner's answers copied in.

    Returns ``(notebook, problems)`` where ``problems`` maps an exercise number
    to an ``error`` message (the stub stays in place for it). ``only``: copy
    in just these exercise numbers.
    """
    from .notebook_io import copy_notebook

    nb = copy_notebook(lesson)
    problems = {}
    for ex in exercises(lesson):
        if only is not None and ex.number not in only:
            continue
        lesson_cell = lesson.cells[ex.cell_index]
        region, problem = _answer(ex, _find_cell(submission, lesson_cell, ex.number), lesson_cell.source)
        if problem:
            problems[ex.number] = problem
            continue
        if region is None:
            continue
        nb.cells[ex.cell_index].source = "\n".join(ex.prefix + region + ex.suffix)
    return nb, problems


def truncate_after_check(nb, number):
    """Keep the cells up to the check cell of exercise ``number``.

    Cells after it (figures, discussion, later exercises) cannot change its grade.
    """
    for index, cell in enumerate(nb.cells):
        if check_of(cell) == number:
            nb.cells = nb.cells[: index + 1]
            break
    return nb
