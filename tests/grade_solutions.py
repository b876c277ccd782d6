"""The solutions, graded as learners' work: ``python tests/grade_solutions.py [LESSON ...]``.

``.ci/run`` runs it after the test command (it takes minutes: every solution trains its models, twice). It
hands in, through ``python -m helpers grade`` and its sandbox, two students' notebooks for each lesson
(default: every lesson in ``solutions/``):

- ``right``: the solution notebook as it is. Every code exercise must be ``passed``, except those the
  README documents as ``unverified`` (:data:`UNVERIFIED`), which must be just that; none ``flagged``.
- ``wrong``: the solution with one answer replaced by a wrong one (:data:`WRONG`: the body becomes
  ``return None``). That exercise must be ``failed``, every other one as for ``right``.

A checker that reads what the learner's code left behind outside ``call_learner`` sees, in the grader's
replay, only its own starting values, and a correct answer is then ``flagged`` (issue 27: 9.3's reference
answer was). This script is what catches it, for every checker at once. It exits 0 when every verdict is
the expected one and prints one line per lesson and student, and the time it took.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from helpers.exercise_format import BEGIN, END, find_label
from helpers.tooling.cli import main as helpers_main

ROOT = Path(__file__).resolve().parents[1]
# The exercises whose checks the grader cannot replay (their answers return Pyro traces): the README's
# Grading section lists the same ones.
UNVERIFIED = {"9.1", "9.2", "9.4", "9.5"}
# The answer each lesson's ``wrong`` notebook gets wrong: its last exercise the grader can verify (nothing
# graded after it can depend on it, since the grader runs a notebook only up to its last check).
WRONG = {
    "01_elbo": "1.4",
    "02_cavi": "2.5",
    "03_stochastic_vi": "3.6",
    "04_amortized_inference": "4.7",
    "05_vae": "5.9",
    "06_sivi": "6.6",
    "07_semi_implicit_extensions": "7.7",
    "08_successors": "8.10",
    "09_from_scratch_to_pyro": "9.3",
}
# Per cell, far above the slowest solution cell (a training loop of tens of seconds at idle) on a machine
# loaded ten times over: a correct cell must never be cut off.
TIMEOUT = 1800


def with_wrong_answer(nb, number):
    """A copy of solution ``nb`` whose exercise ``number`` answers ``return None`` (its markers kept)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        label = find_label(cell.source) if cell.cell_type == "code" else None
        if label is None or label.number != number:
            continue
        lines = cell.source.splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip() == BEGIN)
        stop = next(i for i, line in enumerate(lines) if line.strip() == END)
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        cell.source = "\n".join(lines[: start + 1] + [indent + "return None"] + lines[stop:])
        return nb
    raise ValueError(f"no exercise {number} in the solution")


def expected(number, wrong):
    if number == wrong:
        return "failed"
    return "unverified" if number in UNVERIFIED else "passed"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson names (default: every solution)")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks graded at once (default 2)")
    args = parser.parse_args(argv)
    lessons = args.lessons or sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb"))
    folder = Path(tempfile.mkdtemp(prefix="vi-grade-solutions-"))
    started = time.perf_counter()
    try:
        for lesson in lessons:
            solution = ROOT / "solutions" / f"{lesson}.ipynb"
            (folder / "right").mkdir(exist_ok=True)
            (folder / "wrong").mkdir(exist_ok=True)
            shutil.copy(solution, folder / "right" / solution.name)
            wrong = with_wrong_answer(nbformat.read(solution, 4), WRONG[lesson])
            nbformat.write(wrong, folder / "wrong" / solution.name)
        grades = folder / "grades.json"
        command = ["--root", str(ROOT), "grade", str(folder), "--jobs", str(args.jobs), "--timeout", str(TIMEOUT)]
        helpers_main([*command, "--json", str(grades)])  # exit 1: the wrong answers fail, as they should
        rows = json.loads(grades.read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ok = True
    for lesson in lessons:
        for student in ("right", "wrong"):
            wrong = WRONG[lesson] if student == "wrong" else None
            mine = [r for r in rows if r["lesson"] == lesson and r["student"] == student]
            bad = [r for r in mine if r["status"] != expected(r["exercise"], wrong)]
            ok &= bool(mine) and not bad
            print(
                f"{lesson}  {student:<5}  {sum(r['status'] == 'passed' for r in mine)} of {len(mine)} passed"
                + (f", {wrong} failed as it should" if wrong and not bad else "")
                + "".join(f"\n  UNEXPECTED {r['exercise']}: {r['status']} - {r['message']}" for r in bad)
                + ("" if mine else "  UNEXPECTED: no grades")
            )
    print(f"graded {2 * len(lessons)} notebooks in {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
