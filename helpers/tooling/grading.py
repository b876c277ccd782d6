"""Grade learners' notebooks: ``python -m helpers grade PATH [PATH ...]``.

Tamper-resistance by construction, in three layers:

1. **Only the answers are taken.** A submission is never executed as it is:
   the grader starts from the pristine notebook in ``lessons/`` and copies in
   only the learner's answer regions (the lines that replaced a stub, matched
   by cell id, with a fallback on the exercise number). Edited, added, deleted
   or reordered cells elsewhere change nothing.
2. **The answers run contained** (:mod:`.sandbox`): each rebuilt notebook runs
   in a fresh kernel under bubblewrap, which sees no submission, no course
   file, no network, and whose every process is gone when its run ends. A
   wall-clock limit applies to every cell.
3. **The verdict is the grader's** (:mod:`.replay`): the kernel records what
   the learner's code returned to each check; the grader replays the same
   checker outside the kernel, answering its calls from that record. What
   the kernel itself says (its printed lines, its results file) is only
   compared with the replay: an answer that reported a pass the replay does
   not confirm is *flagged*.

If a run ends abnormally (a timeout, a kernel or worker that died), the
exercises without a verdict are run again without the culprit, so one
runaway answer cannot cost the others their grade. Any failure in grading
one notebook becomes rows for that notebook, never a lost batch.

Exercise cells, stubs, check cells and statuses are recognised as
:mod:`helpers.exercise_format` defines them (cell metadata written by the
lesson builder), never by their text.
"""

import ast
import csv
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..exercise_format import (
    ERROR,
    FLAGGED,
    NOT_ATTEMPTED,
    PASSED,
    RESULTS_ENV,
    STATUSES,
    TIMEOUT,
    UNVERIFIED,
    check_of,
    exercise_of,
    find_label,
    find_stub,
)

__all__ = [
    "UsageError",
    "Grade",
    "Submission",
    "find_submissions",
    "match_lesson",
    "rebuild",
    "grade_notebook",
    "grade",
    "STATUSES",
]

_DIED = 3  # worker exit status: the kernel died
_CELL_TIMEOUT = 4  # worker exit status: a cell ran past the limit
_STARTUP = 120  # seconds the worker may spend outside cells (kernel start, shutdown) before it is killed
_REPLAY_LIMIT = 120  # seconds for the grader's replay of one run's checks (each checker answers in 2 s)
_RECORDS = "records"


class UsageError(ValueError):
    """Nothing that can be graded: a missing path, an explicit file that is not a notebook, no notebook at all."""


@dataclass
class Grade:
    student: str
    notebook: str
    lesson: str
    exercise: str
    status: str
    message: str


@dataclass
class Submission:
    path: Path
    lesson: Path | None
    student: str
    label: str
    problem: str | None = None  # why it cannot be graded (unreadable, matches no lesson)
    note: str | None = None  # how its name was matched, when not exactly


@dataclass
class Found:
    submissions: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (label, why): debris that is not a submission


@dataclass
class _Exercise:
    number: str
    cell_index: int
    prefix: list
    stub: list
    suffix: list


# ------------------------------------------------------------------ finding


def _display(text):
    """``text`` as printable UTF-8: undecodable bytes of a file name and lone surrogates become escapes."""
    text = str(text)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")  # a file name's own bytes, as \xNN
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _debris(path, top):
    """Why ``path`` (under folder ``top``) is not a submission, or None."""
    parts = path.relative_to(top).parts
    name = path.name
    if name.startswith("._"):
        return "macOS resource fork (AppleDouble)"
    if "__MACOSX" in parts:
        return "macOS archive debris (__MACOSX)"
    if ".ipynb_checkpoints" in parts or name.endswith("-checkpoint.ipynb"):
        return "Jupyter checkpoint"
    if any(p.startswith(".") for p in parts):
        return "hidden file"
    return None


def _normal(name):
    """A file stem reduced for matching: lower case, copies' ``(1)`` and ``- Copy`` gone, separators unified."""
    stem = unicodedata.normalize("NFKC", name).lower()
    stem = re.sub(r"\s*\(\d+\)\s*$", "", stem)
    stem = re.sub(r"[\s_-]*(copy|kopie|copie)(\s*\d+)?$", "", stem)
    return re.sub(r"[\s.\-]+", "_", stem).strip("_")


def match_lesson(name, lessons):
    """``(lesson, rest, note)`` for a notebook file name: the lesson it belongs to, or ``(None, None, why)``.

    Exact names match; otherwise a name that holds one lesson's name once
    spaces, case and copy suffixes are ignored (``01 elbo.ipynb``,
    ``01_elbo (1).ipynb``, ``smith_01_elbo.ipynb``). ``rest`` is what the name
    adds around the lesson's (a student's name, perhaps).
    """
    by_stem = {p.stem: p for p in lessons}
    stem = Path(name).stem
    if stem in by_stem:
        return by_stem[stem], "", None
    normal = _normal(stem)
    hits = []
    for lesson_stem, lesson in by_stem.items():
        target = _normal(lesson_stem)
        match = re.search(rf"(?:^|_){re.escape(target)}(?:_|$)", normal)
        if match:
            rest = (normal[: match.start()] + "_" + normal[match.end() :]).strip("_")
            hits.append((lesson, rest))
    if len(hits) == 1:
        lesson, rest = hits[0]
        return lesson, rest, f"matched to {lesson.name} by name"
    known = ", ".join(sorted(by_stem))
    if hits:
        return None, None, f"its name matches several lessons ({', '.join(h[0].stem for h in hits)})"
    return None, None, f"matches no lesson by file name (lessons: {known})"


def find_submissions(paths, lessons_dir):
    """The notebooks under ``paths`` (files or folders), each matched to its lesson; a :class:`Found`.

    Debris (AppleDouble files, ``__MACOSX``, hidden files, checkpoints) is
    skipped and listed; a notebook that is unreadable or matches no lesson is
    a submission with a ``problem``, so it gets a row without stopping the
    others. Raises :class:`UsageError` for a missing path or an explicit file
    that is not a notebook.
    """
    from .notebook_io import read_notebook

    lessons = sorted(Path(lessons_dir).glob("*.ipynb"))
    found, seen = Found(), set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"no such file or folder: {_display(raw)}")
        if path.is_dir():
            candidates = []
            for p in sorted(path.rglob("*")):
                if not p.is_file():
                    continue
                why = _debris(p, path)
                if why:
                    found.skipped.append((_display(p), why))
                elif p.suffix.lower() == ".ipynb":
                    candidates.append((p, path))
            if not candidates:
                raise UsageError(f"no notebooks (*.ipynb) in folder {_display(raw)}")
        else:
            if path.suffix.lower() != ".ipynb":
                raise UsageError(f"not a notebook (expected a .ipynb file): {_display(path)}")
            candidates = [(path, None)]
        for nb_path, top in candidates:
            key = os.path.realpath(nb_path)
            if key in seen:
                continue  # a file given twice, or given with its folder, is graded once
            seen.add(key)
            lesson, rest, note = match_lesson(nb_path.name, lessons)
            student = _student(nb_path, top, rest)
            sub = Submission(nb_path, lesson, student, _display(nb_path), note=note if lesson else None)
            if lesson is None:
                sub.problem = note
            else:
                try:
                    read_notebook(nb_path)
                except ValueError as exc:
                    sub.problem = _display(f"not a readable Jupyter notebook ({str(exc).split('(', 1)[-1]}")
            found.submissions.append(sub)
    return found


def _student(path, top, rest):
    """Who handed ``path`` in: its first folder under the folder given, else what its name adds, else its folder."""
    if top is not None:
        parts = path.relative_to(top).parts
        if len(parts) > 1:
            return _display(parts[0])
    if rest:
        return _display(rest)
    return _display(path.resolve().parent.name or path.stem)


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
    import nbformat

    nb = nbformat.from_dict(json.loads(json.dumps(lesson)))
    problems = {}
    for ex in _exercises(lesson):
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


# ------------------------------------------------------------------ running


@dataclass
class Settings:
    """How to run: the per-cell ``timeout``, OpenMP ``threads``, the :class:`~.sandbox.Sandbox` (None:
    uncontained) and extra checker modules (``checks``, file paths) for the replay."""

    timeout: float = 300
    threads: int | None = None
    sandbox: object = None
    checks: tuple = ()
    replayer: object = None


def _record_cell(folder):
    from nbformat.v4 import new_code_cell

    code = f"import helpers.tooling.replay as _vi_grade\n_vi_grade.install({str(folder)!r})\ndel _vi_grade"
    return new_code_cell(code, id="vi-grade-recorder")


def _kill_tree(proc):
    """Kill a worker's process group and, uncontained, every process it started that is still its descendant."""
    try:
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        children = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in children:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            child.kill()
        except Exception:
            pass


def _run(nb, settings):
    """Execute ``nb`` (contained unless ``settings.sandbox`` is None); ``(claims, replays, ended)``.

    ``ended`` is "ok", "timeout" or "died". ``claims`` maps an exercise number
    to the statuses the kernel's results file reports; ``replays`` is the
    grader's own replay of each recorded check (:mod:`.replay`).
    """
    from .notebook_io import write_notebook
    from .sandbox import GRADE_DIR

    timeout = settings.timeout
    with tempfile.TemporaryDirectory(prefix="vi-grade-") as tmp:
        tmp = Path(tmp)
        (tmp / _RECORDS).mkdir()
        inside = Path(GRADE_DIR) if settings.sandbox else tmp
        nb.cells.insert(0, _record_cell(inside / _RECORDS))
        write_notebook(nb, tmp / "submission.ipynb")
        (tmp / "results.jsonl").touch()
        env = {RESULTS_ENV: str(inside / "results.jsonl")}
        if settings.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(settings.threads)
        argv = [sys.executable, "-m", "helpers.tooling.grading", str(inside / "submission.ipynb"), repr(float(timeout))]
        if settings.sandbox:
            uid = settings.sandbox.prepare(tmp)
            command, cwd = settings.sandbox.command(tmp, argv, env, uid), "/"
            full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            command, cwd, full_env = argv, tmp, dict(os.environ, **env)
            extra = [str(Path(m).resolve().parent) for m in settings.checks]  # the extra checkers, importable
            full_env["PYTHONPATH"] = os.pathsep.join(extra + [p for p in [os.environ.get("PYTHONPATH")] if p])
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # The worker enforces the limit cell by cell; this outer limit only catches a worker that hangs.
        cells = sum(cell.cell_type == "code" for cell in nb.cells)
        try:
            code = proc.wait(timeout=timeout * (cells + 1) + _STARTUP)
            ended = "ok" if code == 0 else ("timeout" if code == _CELL_TIMEOUT else "died")
        except subprocess.TimeoutExpired:
            ended = "timeout"
        _kill_tree(proc)  # contained: the sandbox's PID namespace, and all in it, goes with it
        proc.wait()
        claims = _read_claims(tmp / "results.jsonl")
        replays = settings.replayer.replay(tmp / _RECORDS)
    return claims, replays, ended


def _read_claims(path):
    claims = {}
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            text = fh.read(64 << 20).decode("utf-8", errors="replace")
    except OSError:
        return claims
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            claims.setdefault(str(entry["exercise"]), []).append(str(entry["status"]))
        except (ValueError, KeyError, TypeError):
            continue
    return claims


class _ReplayServer:
    """The grader's replay (:mod:`.replay`), in one process of its own for a whole grading run.

    It runs no learner code, only the grader's checkers on the records, and imports torch and the checkers
    once. Requests are served one at a time; one that takes longer than its limit costs the server its life
    (a fresh one starts for the next) and its exercises are flagged.
    """

    def __init__(self, checks):
        self.checks, self.proc = [str(c) for c in checks], None
        self.lock = threading.Lock()

    def _start(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env.pop(RESULTS_ENV, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.tooling.replay", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def replay(self, folder):
        if not any(folder.glob("*.pt")):
            return []
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                self.proc.stdin.write((json.dumps({"folder": str(folder), "checks": self.checks}) + "\n").encode())
                self.proc.stdin.flush()
                ready, _, _ = select.select([self.proc.stdout], [], [], _REPLAY_LIMIT)
                if not ready:
                    raise TimeoutError
                out = json.loads(self.proc.stdout.readline().decode("utf-8", errors="replace"))
                return out if isinstance(out, list) else []
            except (OSError, ValueError, TimeoutError):
                self.close()
                return [{"exercise": None, "status": FLAGGED, "message": "the grader's replay of its checks failed"}]

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _worker(path, timeout):
    """Entry point of the worker process: run one notebook with ``timeout`` seconds per cell.

    Exits 3 if its kernel died, 4 if a cell ran past the limit; in both cases
    nbclient has shut the kernel down (killed it) before the worker exits.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from .execution import execute_notebook
    from .notebook_io import read_notebook

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


def _verdicts(numbers, claims, replays):
    """Each exercise's grade from the grader's replay, compared with what the kernel claimed.

    The replay decides. A pass the kernel reported but the replay does not
    confirm, a check recorded twice with different verdicts, or a record that
    does not match the checker, is *flagged*, with what was seen.
    """
    out = {}
    stray = [r for r in replays if r.get("exercise") not in numbers]
    for n in numbers:
        mine = [r for r in replays if r.get("exercise") == n]
        claimed = claims.get(n, [])
        recorded_pass = any(r.get("claimed") == PASSED for r in mine)
        kernel_passed = PASSED in claimed or recorded_pass
        if mine:
            flagged = [r for r in mine if r.get("status") == FLAGGED]
            verdicts = {(str(r.get("status")), str(r.get("message"))) for r in mine}
            if flagged:
                out[n] = (FLAGGED, f"its check's record does not match the checker: {flagged[0].get('message')}")
            elif len({v[0] for v in verdicts}) > 1:
                out[n] = (FLAGGED, "its check ran more than once, with different verdicts (a forged record?)")
            else:
                status, message = sorted(verdicts)[0]
                status = status if status in STATUSES else ERROR
                if status == UNVERIFIED and not kernel_passed:
                    status, message = _claimed(claimed) or (ERROR, message)
                elif kernel_passed and status not in (PASSED, UNVERIFIED):
                    how = (
                        "the check was made to pass inside the kernel (its checker, its recording or what it "
                        "compares was changed)"
                        if recorded_pass
                        else "a passed verdict the check did not give was written to the results"
                    )
                    status, message = FLAGGED, f"{how}; the grader's own check of its answers says {status}: {message}"
                out[n] = (status, message)
        elif claimed:
            if kernel_passed:
                why = "a record that names no exercise of this lesson" if stray else "no record of a check"
                out[n] = (
                    FLAGGED,
                    f"a passed verdict was written for it with {why} (the results file was written to, or the "
                    "check's recording switched off)",
                )
            else:
                out[n] = _claimed(claimed)
    return out


def _claimed(claimed):
    last = claimed[-1] if claimed else None
    if last in (NOT_ATTEMPTED,):
        return NOT_ATTEMPTED, "replace the `raise NotImplementedError(...)` line with your code, then rerun the check."
    if last in STATUSES:
        return last, "the notebook's own check reported this; the grader found no record of it to replay"
    return None


def grade_notebook(path, lesson_path, timeout=300, label=None, threads=None, settings=None, student=""):
    """Grade one submission; a list of :class:`Grade`, one per code exercise.

    The rebuilt notebook runs once, up to the last exercise's check cell. If the
    run times out or its kernel dies, it stopped in the section of the first
    exercise without a verdict, the *culprit*: that exercise gets the timeout (or
    the crash), and the exercises after it run again, without the culprit's
    answer and without the answers that failed. The culprit is run again on its
    own first only when that could change its fate: when an earlier answer that
    did not pass ran before it (it might be the one to blame).
    """
    from .notebook_io import read_notebook

    own = settings is None
    settings = settings or Settings(timeout=timeout, threads=threads, replayer=_ReplayServer(()))
    label = label or _display(path)
    lesson = read_notebook(lesson_path)
    numbers = [ex.number for ex in _exercises(lesson)]
    try:
        submission = read_notebook(path)
        grades = _grade_runs(lesson, submission, numbers, settings)
    except Exception as exc:  # one notebook's failure is its own rows, never the batch's
        why = _display(f"{type(exc).__name__}: {exc}")[:300]
        grades = {n: (ERROR, f"the grader could not grade this notebook ({why})") for n in numbers}
    finally:
        if own:
            settings.replayer.close()
    return [Grade(student, label, lesson_path.stem, n, *grades[n]) for n in numbers]


def _grade_runs(lesson, submission, numbers, settings):
    timeout = settings.timeout
    _, problems = rebuild(lesson, submission)
    grades = {n: (ERROR, message) for n, message in problems.items()}
    pending = [n for n in numbers if n not in problems]
    included = set(pending)

    def run(only, last):
        nb, _ = rebuild(lesson, submission, only=only)
        claims, replays, ended = _run(_truncate_after_check(nb, last), settings)
        return _verdicts(numbers, claims, replays), ended

    while pending:
        verdicts, ended = run(included, pending[-1])
        verdicts = _drop_interrupted(verdicts, ended)
        grades.update({n: verdicts[n] for n in pending if n in verdicts})
        pending = [n for n in pending if n not in grades]
        if ended == "ok" or not pending:
            break
        culprit, pending = pending[0], pending[1:]
        passed = {n for n, (status, _) in grades.items() if status == PASSED}
        before = [n for n in numbers[: numbers.index(culprit)] if n in included]
        if all(n in passed or grades[n][0] == NOT_ATTEMPTED for n in before):
            grades[culprit] = _abnormal(ended, timeout)  # running it again would replay the same code
        else:
            verdicts, alone_ended = run(passed | {culprit}, culprit)
            verdicts = _drop_interrupted(verdicts, alone_ended)
            if culprit in verdicts:
                grades[culprit] = verdicts[culprit]
            elif alone_ended != "ok":
                grades[culprit] = _abnormal(alone_ended, timeout)
        included = passed | set(pending)
    for number in numbers:
        grades.setdefault(number, (ERROR, "no result: the check cell did not run to completion"))
    return grades


def _drop_interrupted(verdicts, ended):
    """Forget a verdict the time limit's interrupt cut short: the KeyboardInterrupt that stops a cell can land
    inside a check and leave its record half-written, which is the timeout's doing, not the answer's."""
    if ended != "timeout":
        return verdicts
    return {n: v for n, v in verdicts.items() if not (v[0] == FLAGGED and "KeyboardInterrupt" in v[1])}


def _abnormal(ended, timeout):
    if ended == "timeout":
        return TIMEOUT, f"a cell did not finish within {timeout:g} s (an endless loop?)"
    return ERROR, "the kernel died while checking this exercise (os._exit, a crash, or memory exhausted)"


def grade(paths, lessons_dir, timeout=300, jobs=1, sandbox=None, checks=(), found=None):
    """Grade every notebook under ``paths`` (files or folders); a flat list of :class:`Grade`.

    ``sandbox``: a :class:`~.sandbox.Sandbox`, or None to run uncontained.
    A notebook that cannot be graded (unreadable, no lesson) gets one row with
    exercise ``-`` and status ``error``.
    """
    found = found or find_submissions(paths, Path(lessons_dir))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None  # share the cores between jobs
    settings = Settings(timeout, threads, sandbox, tuple(checks), _ReplayServer(checks))

    def one(sub):
        if sub.problem:
            lesson = sub.lesson.stem if sub.lesson else ""
            return [Grade(sub.student, sub.label, lesson, "-", ERROR, sub.problem)]
        return grade_notebook(sub.path, sub.lesson, label=sub.label, settings=settings, student=sub.student)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(one, sub) for sub in found.submissions]
            return [g for f in futures for g in f.result()]
    finally:
        settings.replayer.close()


# ------------------------------------------------------------------ reporting


def format_table(grades):
    rows = [("student", "notebook", "exercise", "status", "message")] + [
        (g.student, g.notebook, g.exercise, g.status, g.message) for g in grades
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def summary(grades):
    """``[(student, passed, total)]`` in the order students first appear."""
    out = {}
    for g in grades:
        passed, total = out.get(g.student, (0, 0))
        out[g.student] = (passed + (g.status == PASSED), total + (g.exercise != "-"))
    return [(s, p, t) for s, (p, t) in out.items()]


def format_summary(grades):
    rows = summary(grades)
    width = max([len("student")] + [len(s) for s, _, _ in rows])
    lines = [f"{'student'.ljust(width)}  passed"]
    lines += [f"{s.ljust(width)}  {p} of {t}" for s, p, t in rows]
    return "\n".join(lines)


def feedback_text(student, grades):
    """The written feedback for one student: each exercise's line, as the checker words it."""
    lines = [f"Feedback for {student}", ""]
    for notebook in dict.fromkeys(g.notebook for g in grades):
        mine = [g for g in grades if g.notebook == notebook]
        passed = sum(g.status == PASSED for g in mine)
        lines.append(f"{notebook} ({mine[0].lesson or 'no lesson'}): {passed} of {len(mine)} exercises passed")
        for g in mine:
            if g.exercise == "-":
                lines.append(f"  not graded: {g.message}")
            else:
                lines.append(f"  Exercise {g.exercise}: {g.status} - {g.message}")
        lines.append("")
    return "\n".join(lines)


def _safe_name(text):
    name = re.sub(r"[^\w.-]+", "_", text).strip("._") or "student"
    return name[:100]


def write_feedback(grades, folder):
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    written = {}
    for student in dict.fromkeys(g.student for g in grades):
        name = _safe_name(student)
        while name in written:
            name += "_"
        written[name] = student
        text = feedback_text(student, [g for g in grades if g.student == student])
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return written


def write_json(grades, path):
    Path(path).write_text(json.dumps([asdict(g) for g in grades], indent=2) + "\n", encoding="utf-8")


def _cell(text):
    """A CSV cell a spreadsheet shows as text: never read as a formula."""
    return "'" + text if text[:1] in ("=", "+", "@", "\t", "\r") else text


def write_csv(grades, path):
    # utf-8-sig: a spreadsheet opens it as UTF-8 without asking
    with open(path, "w", newline="", encoding="utf-8-sig") as fh:
        fields = ["student", "notebook", "lesson", "exercise", "status", "message"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in asdict(g).items()} for g in grades)


if __name__ == "__main__":
    _worker(sys.argv[1], float(sys.argv[2]))
