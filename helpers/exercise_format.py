r"""The exercise format: the one place that says what an exercise looks like.

Everything that writes or reads exercises uses these definitions: the lesson
builder, the checkers, the grader, the nbgrader export and the tests.

In a solution notebook an exercise is a code cell with a **label line** and one
region between nbgrader's markers, inside a function whose signature and
docstring stay visible::

    # Exercise 1.2: KL divergence between two Gaussians
    def kl_normal(mu_q, sigma_q, mu_p, sigma_p):
        '''docstring the learner sees'''
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

The builder turns the region into the **stub** (:func:`stub_lines`), writes
:data:`METADATA_KEY` metadata on the exercise cell (``{"exercise": "1.2",
"checksum": ...}``) and on its **check cell** (``{"check": "1.2"}``): the first
later code cell whose statement calls a ``check_*`` function on the exercise's
function. The grader finds both by that metadata, never by their text.

A checker prints one **check line** (:func:`check_line`) whose headline says
the **status** (:data:`STATUSES`), and appends the verdict to the file named by
the environment variable :data:`RESULTS_ENV` (:func:`report`), where the grader
reads it. A written question is a markdown cell with a
``Question N.M`` label and the same markers; its region becomes a prompt.

This module imports nothing heavy (no torch), so the tooling can use it.
"""

import ast
import json
import os
import re
from typing import NamedTuple

__all__ = [
    "BEGIN",
    "END",
    "STUB_FIRST_LINE",
    "METADATA_KEY",
    "RESULTS_ENV",
    "PASSED",
    "FAILED",
    "NOT_ATTEMPTED",
    "ERROR",
    "TIMEOUT",
    "FLAGGED",
    "UNVERIFIED",
    "CHECK_STATUSES",
    "STATUSES",
    "HEADLINES",
    "Label",
    "find_label",
    "stub_message",
    "stub_lines",
    "answer_prompt",
    "find_stub",
    "find_answer_prompt",
    "answer_slot",
    "only_the_answer_differs",
    "is_stub_message",
    "check_line",
    "report",
    "parse_check_line",
    "CHECK_LINE",
    "check_call_target",
    "exercise_meta",
    "check_meta",
    "exercise_of",
    "check_of",
]

# ------------------------------------------------------------------ markers and labels

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"  # nbgrader's markers

_LABEL = re.compile(r"\b(Exercise|Question)\s+(\d+\.\d+)\b\s*\**\s*[:.-]?\s*\**\s*(.*)")


class Label(NamedTuple):
    """An exercise's label: ``kind`` ("Exercise" or "Question"), ``number`` ("1.2") and ``task``."""

    kind: str
    number: str
    task: str


def find_label(source):
    """The :class:`Label` of the first ``Exercise N.M: task`` (or ``Question N.M``) line of a cell, or None."""
    for line in source.splitlines():
        match = _LABEL.search(line)
        if match:
            kind, number, task = match.groups()
            return Label(kind, number, task.strip().rstrip("*").strip())
    return None


# ------------------------------------------------------------------ stubs

STUB_FIRST_LINE = "# YOUR CODE HERE"  # nbgrader's own first stub line, so both tools read alike
_STUB_MESSAGE = re.compile(r"^(Exercise|Question) \d+\.\d+: \S")


def stub_message(number, task, kind="Exercise"):
    """``"Exercise 1.2: KL divergence ..."``: what a stub raises, and what :func:`require` re-raises."""
    return f"{kind} {number}: {task}"


def stub_lines(number, task, kind="Exercise"):
    """The lines (without indentation) that replace a code exercise's solution region."""
    return [STUB_FIRST_LINE, f"raise NotImplementedError({json.dumps(stub_message(number, task, kind))})"]


def answer_prompt(number, kind="Question"):
    """The line that replaces a written answer's solution region."""
    return f"*Your answer to {kind.lower()} {number} here.*"


def is_stub_message(text):
    """True for an ``"Exercise N.M: task"`` message, as raised by a generated stub."""
    return isinstance(text, str) and bool(_STUB_MESSAGE.match(text))


def find_stub(lines):
    """``(start, stop)`` of the stub in a list of source lines (stripped comparison), or None."""
    for i in range(len(lines) - 1):
        if lines[i].strip() == STUB_FIRST_LINE and lines[i + 1].strip().startswith("raise NotImplementedError("):
            return i, i + 2
    return None


_ANSWER_PROMPT = re.compile(r"^\*Your answer to (question|exercise) \d+\.\d+ here\.\*$")


def find_answer_prompt(lines):
    """``(start, stop)`` of a written answer's prompt (:func:`answer_prompt`) in a list of source lines, or None."""
    for i, line in enumerate(lines):
        if _ANSWER_PROMPT.match(line.strip()):
            return i, i + 1
    return None


def answer_slot(lines):
    """``(start, stop)`` of the lines a learner replaces in a generated exercise cell, or None.

    The slot is the stub of a code exercise (:func:`find_stub`) or the prompt of
    a written answer (:func:`find_answer_prompt`); everything before and after it
    (label, signature, docstring, the question) is the lesson's, not the learner's.
    """
    return find_stub(lines) or find_answer_prompt(lines)


def _without_trailing_blank_lines(source):
    lines = source.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def only_the_answer_differs(generated, edited):
    """True when source ``edited`` is the generated exercise cell ``generated`` with at most its answer slot replaced.

    The lines before and after the slot (:func:`answer_slot`) must be unchanged
    (trailing blank lines aside), the same way the grader reads an answer; what
    stands between them is the learner's answer, whatever it is.
    """
    pristine = _without_trailing_blank_lines(generated)
    slot = answer_slot(pristine)
    if slot is None:
        return False
    before, after = pristine[: slot[0]], pristine[slot[1] :]
    lines = _without_trailing_blank_lines(edited)
    return (
        len(lines) >= len(before) + len(after)
        and lines[: len(before)] == before
        and lines[len(lines) - len(after) :] == after
    )


# ------------------------------------------------------------------ statuses and the check line

PASSED, FAILED, NOT_ATTEMPTED, ERROR, TIMEOUT = "passed", "failed", "not attempted", "error", "timeout"
FLAGGED, UNVERIFIED = "flagged", "unverified"
CHECK_STATUSES = (PASSED, FAILED, NOT_ATTEMPTED, ERROR)  # what a checker can report
# What a grade can be: the grader adds timeouts, answers caught interfering with their check (flagged), and
# checks it could not confirm outside the kernel (unverified).
STATUSES = CHECK_STATUSES + (TIMEOUT, FLAGGED, UNVERIFIED)
# What a check says of an exercise whose stub is still in place; the grader says the same without running it.
NOT_ATTEMPTED_ADVICE = "replace the `raise NotImplementedError(...)` line with your code, then rerun this cell."
HEADLINES = {
    PASSED: "passed",
    FAILED: "not yet right",
    NOT_ATTEMPTED: "not attempted yet",
    ERROR: "could not be checked",
}

CHECK_LINE = re.compile(
    r"^Exercise (?P<number>\d+\.\d+) \((?P<task>.*?)\): "
    r"(?P<headline>passed|not yet right|not attempted yet|could not be checked) - (?P<message>.*)$"
)


def check_line(number, task, status, message):
    """The one line a checker prints: ``Exercise 1.2 (task): not yet right - <diagnosis>``."""
    return f"Exercise {number} ({task}): {HEADLINES[status]} - {message}"


def report(number, task, status, message):
    """Print the check line and append the verdict to the results file named by :data:`RESULTS_ENV`, if any.

    Returns the verdict as a dict (``exercise``, ``task``, ``status``, ``message``), the JSON object the
    grader reads back.
    """
    entry = {"exercise": number, "task": task, "status": status, "message": message}
    path = os.environ.get(RESULTS_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError:
            pass  # recording is best effort; the printed line is what the learner needs
    print(check_line(number, task, status, message))
    return entry


def parse_check_line(line):
    """``(number, status, message)`` of a check line, or None for any other line."""
    match = CHECK_LINE.match(line)
    if not match:
        return None
    status = {v: k for k, v in HEADLINES.items()}[match["headline"]]
    return match["number"], status, match["message"]


def check_call_target(source):
    """The function name a check cell checks (``check_x(fn)`` or ``checks.check_x(fn)`` -> ``"fn"``), or None.

    A check cell holds exactly one statement: a call of a ``check_*`` function
    whose first argument is the exercise's function.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr) or not isinstance(tree.body[0].value, ast.Call):
        return None
    call = tree.body[0].value
    name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
    if not name.startswith("check_") or not call.args or not isinstance(call.args[0], ast.Name):
        return None
    return call.args[0].id


# ------------------------------------------------------------------ cell metadata

RESULTS_ENV = "VI_COURSE_RESULTS"  # a file the checkers append their verdicts to, one JSON object a line
METADATA_KEY = "course"  # the builder's cell metadata; the only cell metadata besides tags kept in lessons


def exercise_meta(number, checksum):
    return {"exercise": number, "checksum": checksum}


def check_meta(number):
    return {"check": number}


def _meta(cell):
    meta = cell.get("metadata", {}).get(METADATA_KEY)
    return meta if isinstance(meta, dict) else {}


def exercise_of(cell):
    """The exercise number an exercise cell carries in its metadata, or None."""
    number = _meta(cell).get("exercise")
    return number if isinstance(number, str) else None


def check_of(cell):
    """The exercise number a check cell carries in its metadata, or None."""
    number = _meta(cell).get("check")
    return number if isinstance(number, str) else None
