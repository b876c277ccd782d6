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

This module is the orchestration: :mod:`.submissions` finds the notebooks,
:mod:`.rebuild` copies their answers into the lesson, :mod:`.runner` runs the
result and replays its checks, :mod:`.verdicts` turns both into grades, and
:mod:`.reports` writes them out.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..exercise_format import ERROR, NOT_ATTEMPTED, NOT_ATTEMPTED_ADVICE, PASSED
from .rebuild import exercises, rebuild, truncate_after_check
from .reports import Grade
from .runner import Settings, shared_replay_server
from .runner import run as run_notebook
from .submissions import display, find_submissions
from .verdicts import abnormal, drop_interrupted, verdicts

__all__ = ["grade", "grade_notebook", "pristine_lesson"]


def pristine_lesson(lesson_path):
    """The untouched lesson a submission is rebuilt into: generated from its solution where there is one.

    ``lessons/NN.ipynb`` itself may hold a learner's own answers (``python -m helpers grade lessons/`` grades
    them), so the pristine lesson is what ``build-lessons`` generates from ``solutions/NN.ipynb``; the sync
    test makes sure the two agree in a clean checkout. Without a solution, the file in ``lessons/`` is used.
    """
    from .build import lesson_from_solution
    from .notebook_io import read_notebook

    lesson_path = Path(lesson_path)
    solution = lesson_path.parent.parent / "solutions" / lesson_path.name
    if solution.is_file():
        return lesson_from_solution(read_notebook(solution), name=f"solutions/{solution.name}")
    return read_notebook(lesson_path)


def grade_notebook(path, lesson_path, timeout=300, label=None, threads=None, settings=None, student=""):
    """Grade one submission; a list of :class:`Grade`, one per code exercise.

    The rebuilt notebook runs once, up to the last exercise's check cell. If the
    run times out or its kernel dies, it stopped in the section of the first
    exercise without a verdict, the *culprit*: that exercise gets the timeout (or
    the crash), and the exercises after it run again, without the culprit's
    answer and without the answers that failed. The culprit is run again on its
    own first only when that could change its fate: when an earlier answer that
    did not pass ran before it (it might be the one to blame). A submission
    without a single answer is not run at all: every exercise is ``not
    attempted``, as its check would say.
    """
    from .notebook_io import read_notebook

    settings = settings or Settings(timeout=timeout, threads=threads, replayer=shared_replay_server())
    label = label or display(path)
    lesson = pristine_lesson(lesson_path)
    numbers = [ex.number for ex in exercises(lesson)]
    try:
        submission = read_notebook(path)
        grades = _grade_runs(lesson, submission, numbers, settings)
    except Exception as exc:  # one notebook's failure is its own rows, never the batch's
        why = display(f"{type(exc).__name__}: {exc}")[:300]
        grades = {n: (ERROR, f"the grader could not grade this notebook ({why})") for n in numbers}
    return [Grade(student, label, lesson_path.stem, n, *grades[n]) for n in numbers]


def _grade_runs(lesson, submission, numbers, settings):
    timeout = settings.timeout
    rebuilt, problems = rebuild(lesson, submission)
    grades = {n: (ERROR, message) for n, message in problems.items()}
    pending = [n for n in numbers if n not in problems]
    if all(rebuilt.cells[ex.cell_index].source == lesson.cells[ex.cell_index].source for ex in exercises(lesson)):
        # No answer at all: the rebuilt notebook is the pristine lesson, which runs no code of the learner's and
        # whose every check says "not attempted". Saying so without a kernel changes no verdict and costs nothing.
        return {**{n: (NOT_ATTEMPTED, NOT_ATTEMPTED_ADVICE) for n in pending}, **grades}
    included = set(pending)

    def run(only, last):
        nb, _ = rebuild(lesson, submission, only=only)
        claims, replays, ended = run_notebook(truncate_after_check(nb, last), settings)
        return verdicts(numbers, claims, replays), ended

    while pending:
        got, ended = run(included, pending[-1])
        got = drop_interrupted(got, ended)
        grades.update({n: got[n] for n in pending if n in got})
        pending = [n for n in pending if n not in grades]
        if ended == "ok" or not pending:
            break
        culprit, pending = pending[0], pending[1:]
        passed = {n for n, (status, _) in grades.items() if status == PASSED}
        before = [n for n in numbers[: numbers.index(culprit)] if n in included]
        if all(n in passed or grades[n][0] == NOT_ATTEMPTED for n in before):
            grades[culprit] = abnormal(ended, timeout)  # running it again would replay the same code
        else:
            alone, alone_ended = run(passed | {culprit}, culprit)
            alone = drop_interrupted(alone, alone_ended)
            if culprit in alone:
                grades[culprit] = alone[culprit]
            elif alone_ended != "ok":
                grades[culprit] = abnormal(alone_ended, timeout)
        included = passed | set(pending)
    for number in numbers:
        grades.setdefault(number, (ERROR, "no result: the check cell did not run to completion"))
    return grades


def grade(paths, lessons_dir, timeout=300, jobs=1, sandbox=None, checks=(), found=None):
    """Grade every notebook under ``paths`` (files or folders); a flat list of :class:`Grade`.

    ``sandbox``: a :class:`~.sandbox.Sandbox`, or None to run uncontained.
    A notebook that cannot be graded (unreadable, no lesson) gets one row with
    exercise ``-`` and status ``error``.
    """
    found = found or find_submissions(paths, Path(lessons_dir))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None  # share the cores between jobs
    settings = Settings(timeout, threads, sandbox, tuple(checks), shared_replay_server(checks))

    def one(sub):
        if sub.problem:
            lesson = sub.lesson.stem if sub.lesson else ""
            return [Grade(sub.student, sub.label, lesson, "-", ERROR, sub.problem)]
        return grade_notebook(sub.path, sub.lesson, label=sub.label, settings=settings, student=sub.student)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(one, sub) for sub in found.submissions]
        return [g for f in futures for g in f.result()]
