"""Grade learners' notebooks: ``python -m helpers grade PATH [PATH ...]``.

Tamper-resistance by construction: a submission is never executed as it is.
For each lesson the grader starts from the pristine notebook in ``lessons/``
and copies in only the learner's answer regions (the lines that replaced a
stub, matched by cell id, with a fallback on the exercise number). Edited,
added, deleted or reordered cells elsewhere, a rewritten check cell or a
patched checker outside the answer regions change nothing.

Each rebuilt notebook runs in a fresh kernel, in a temporary directory, in a
worker process, with a wall-clock limit on every cell (the kernel's start is
not counted, so the limit does not depend on how long a machine takes to
import the course); the checkers record their verdicts as
JSON lines (``helpers.checks``). If a run ends abnormally (a timeout, a
kernel that died), every exercise without a verdict is run again on its own,
so one runaway answer cannot cost the others their grade.

Grading executes the learner's code: it is not a sandbox.

Exercise cells, stubs, check cells and statuses are recognised as
:mod:`helpers.exercise_format` defines them (cell metadata written by the
lesson builder), never by their text.
"""

import ast
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from ..exercise_format import (
    ERROR,
    NOT_ATTEMPTED,
    PASSED,
    RESULTS_ENV,
    STATUSES,
    TIMEOUT,
    check_of,
    exercise_of,
    find_label,
    find_stub,
)
from .notebook_io import read_notebook, write_notebook

__all__ = ["UsageError", "Grade", "find_submissions", "rebuild", "grade_notebook", "grade", "STATUSES"]

_DIED = 3  # worker exit status: the kernel died
_CELL_TIMEOUT = 4  # worker exit status: a cell ran past the limit
_STARTUP = 120  # seconds the worker may spend outside cells (kernel start, shutdown) before it is killed


class UsageError(ValueError):
    """A path that cannot be graded: missing, not a notebook, or matching no lesson."""


@dataclass
class Grade:
    notebook: str
    lesson: str
    exercise: str
    status: str
    message: str


@dataclass
class _Exercise:
    number: str
    cell_index: int
    prefix: list
    stub: list
    suffix: list


# ------------------------------------------------------------------ finding


def find_submissions(paths, lessons_dir):
    """``[(path, lesson_path)]`` for the given files and folders, or :class:`UsageError`."""
    found = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"no such file or folder: {raw}")
        if path.is_dir():
            notebooks = sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            if not notebooks:
                raise UsageError(f"no notebooks (*.ipynb) in folder {raw}")
        else:
            notebooks = [path]
        for nb_path in notebooks:
            if nb_path.suffix != ".ipynb":
                raise UsageError(f"not a notebook (expected a .ipynb file): {nb_path}")
            try:
                read_notebook(nb_path)
            except ValueError:
                raise UsageError(f"not a readable Jupyter notebook: {nb_path}") from None
            lesson = lessons_dir / nb_path.name
            if not lesson.exists():
                known = ", ".join(sorted(p.name for p in lessons_dir.glob("*.ipynb")))
                raise UsageError(f"{nb_path} matches no lesson by file name (lessons: {known})")
            found.append((nb_path, lesson))
    return found


# ---------------------------------------------------------------- rebuilding


def _exercises(lesson):
    out = []
    for index, cell in enumerate(lesson.cells):
        number = exercise_of(cell)
        if cell.cell_type != "code" or number is None:
            continue
        lines = cell.source.splitlines()
        start, stop = find_stub(lines)
        out.append(_Exercise(number, index, lines[:start], lines[start:stop], lines[stop:]))
    return out


def _find_cell(submission, lesson_cell, number):
    by_id = [c for c in submission.cells if c.get("id") == lesson_cell.get("id") and c.cell_type == "code"]
    if by_id:
        return by_id[0]
    for cell in submission.cells:  # fallback: the exercise number, in metadata or in the label line
        if cell.cell_type != "code":
            continue
        label = find_label(cell.source)
        if exercise_of(cell) == number or (label and label.number == number):
            return cell
    return None


def _answer(ex, cell):
    """The learner's answer lines for ``ex`` in ``cell``; None if untouched; or an error message."""
    if cell is None:
        return None, None
    lines = cell.source.splitlines()
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
    indent = ex.stub[0][: len(ex.stub[0]) - len(ex.stub[0].lstrip())]
    if any(line.strip() and not line.startswith(indent) for line in region):
        return None, "the answer must stay inside the function body (keep its indentation)"
    return region, None


def rebuild(lesson, submission, only=None):
    """The pristine lesson with the learner's answers copied in.

    Returns ``(notebook, problems)`` where ``problems`` maps an exercise number
    to an ``error`` message (the stub stays in place for it). ``only``: copy
    in just these exercise numbers.
    """
    nb = nbformat.from_dict(json.loads(json.dumps(lesson)))
    problems = {}
    for ex in _exercises(lesson):
        if only is not None and ex.number not in only:
            continue
        region, problem = _answer(ex, _find_cell(submission, lesson.cells[ex.cell_index], ex.number))
        if problem:
            problems[ex.number] = problem
            continue
        if region is None:
            continue
        source = "\n".join(ex.prefix + region + ex.suffix)
        try:
            ast.parse(source)
        except SyntaxError as exc:
            problems[ex.number] = f"your code does not parse: {exc.msg} (line {exc.lineno} of the cell)"
            continue
        nb.cells[ex.cell_index].source = source
    return nb, problems


# ------------------------------------------------------------------ running


def _run(nb, timeout, threads=None):
    """Execute ``nb`` in a worker process; return ``(verdicts, ended)``.

    ``timeout`` is the limit for one cell. ``ended`` is "ok", "timeout" or
    "died". ``verdicts`` maps an exercise number to the last recorded checker
    result. ``threads`` caps the kernel's OpenMP threads: parallel jobs that
    each use every core slow each other down far more than they gain (thread
    oversubscription).
    """
    with tempfile.TemporaryDirectory(prefix="vi-grade-") as tmp:
        tmp = Path(tmp)
        write_notebook(nb, tmp / "submission.ipynb")
        results = tmp / "results.jsonl"
        env = dict(os.environ, **{RESULTS_ENV: str(results)})
        if threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.tooling.grading", str(tmp / "submission.ipynb"), repr(float(timeout))],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # The worker enforces the limit cell by cell; this outer limit only catches a worker that hangs.
        cells = sum(cell.cell_type == "code" for cell in nb.cells)
        try:
            code = proc.wait(timeout=timeout * (cells + 1) + _STARTUP)
            ended = {_DIED: "died", _CELL_TIMEOUT: "timeout"}.get(code, "ok")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its kernel
            proc.wait()
            ended = "timeout"
        verdicts = {}
        if results.exists():
            for line in results.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    verdicts[str(entry["exercise"])] = (str(entry["status"]), str(entry["message"]))
                except (ValueError, KeyError, TypeError):
                    continue
    return verdicts, ended


def _worker(path, timeout):
    """Entry point of the worker process: run one notebook with ``timeout`` seconds per cell.

    Exits 3 if its kernel died, 4 if a cell ran past the limit; in both cases
    nbclient has shut the kernel down (killed it) before the worker exits.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from .execution import execute_notebook

    nb = read_notebook(path)
    try:
        execute_notebook(nb, cwd=Path(path).parent, timeout=timeout, allow_errors=True)
    except DeadKernelError:
        sys.exit(_DIED)
    except CellTimeoutError:
        sys.exit(_CELL_TIMEOUT)


def _truncate_after_check(nb, number):
    """Keep the cells up to the check cell of exercise ``number``.

    Cells after it (figures, discussion, later exercises) cannot change its grade.
    """
    for index, cell in enumerate(nb.cells):
        if check_of(cell) == number:
            nb.cells = nb.cells[: index + 1]
            break
    return nb


def grade_notebook(path, lesson_path, timeout=300, label=None, threads=None):
    """Grade one submission; a list of :class:`Grade`, one per code exercise.

    The rebuilt notebook runs once, up to the last exercise's check cell. If the
    run times out or its kernel dies, it stopped in the section of the first
    exercise without a verdict, the *culprit*: that exercise gets the timeout (or
    the crash), and the exercises after it run again, without the culprit's
    answer and without the answers that failed. The culprit is run again on its
    own first only when that could change its fate: when an earlier answer that
    did not pass ran before it (it might be the one to blame).
    """
    lesson, submission = read_notebook(lesson_path), read_notebook(path)
    label = label or str(path)
    numbers = [ex.number for ex in _exercises(lesson)]
    _, problems = rebuild(lesson, submission)
    grades = {n: (ERROR, message) for n, message in problems.items()}
    pending = [n for n in numbers if n not in problems]
    included = set(pending)
    while pending:
        nb, _ = rebuild(lesson, submission, only=included)
        verdicts, ended = _run(_truncate_after_check(nb, pending[-1]), timeout, threads)
        grades.update({n: _status(verdicts[n]) for n in pending if n in verdicts})
        pending = [n for n in pending if n not in grades]
        if ended == "ok" or not pending:
            break
        culprit, pending = pending[0], pending[1:]
        passed = {n for n, (status, _) in grades.items() if status == PASSED}
        before = [n for n in numbers[: numbers.index(culprit)] if n in included]
        if all(n in passed or grades[n][0] == NOT_ATTEMPTED for n in before):
            grades[culprit] = _abnormal(ended, timeout)  # running it again would replay the same code
        else:
            alone, _ = rebuild(lesson, submission, only=passed | {culprit})
            verdicts, alone_ended = _run(_truncate_after_check(alone, culprit), timeout, threads)
            if culprit in verdicts:
                grades[culprit] = _status(verdicts[culprit])
            elif alone_ended != "ok":
                grades[culprit] = _abnormal(alone_ended, timeout)
        included = passed | set(pending)
    for number in numbers:
        grades.setdefault(number, (ERROR, "no result: the check cell did not run to completion"))
    return [Grade(label, lesson_path.stem, n, *grades[n]) for n in numbers]


def _abnormal(ended, timeout):
    if ended == "timeout":
        return TIMEOUT, f"a cell did not finish within {timeout:g} s (an endless loop?)"
    return ERROR, "the kernel died while checking this exercise (os._exit, a crash, or memory exhausted)"


def _status(verdict):
    status, message = verdict
    return (status if status in STATUSES else ERROR), message


def grade(paths, lessons_dir, timeout=300, jobs=1):
    """Grade every notebook under ``paths`` (files or folders); a flat list of :class:`Grade`."""
    submissions = find_submissions(paths, Path(lessons_dir))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None  # share the cores between jobs
        futures = [pool.submit(grade_notebook, path, lesson, timeout, threads=threads) for path, lesson in submissions]
        return [g for f in futures for g in f.result()]


# ------------------------------------------------------------------ reporting


def format_table(grades):
    rows = [("notebook", "exercise", "status", "message")] + [
        (g.notebook, g.exercise, g.status, g.message) for g in grades
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def write_json(grades, path):
    Path(path).write_text(json.dumps([asdict(g) for g in grades], indent=2) + "\n", encoding="utf-8")


def write_csv(grades, path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["notebook", "lesson", "exercise", "status", "message"])
        writer.writeheader()
        writer.writerows(asdict(g) for g in grades)


if __name__ == "__main__":
    _worker(sys.argv[1], float(sys.argv[2]))
