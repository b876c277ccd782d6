"""The nbgrader round trip, end to end: ``python tests/nbgrader_roundtrip.py [LESSON ...]``.

Needs the ``nbgrader`` extra (``pip install -e ".[nbgrader]"``); ``.ci/run`` runs it
after the test command. For each lesson (default: 01_elbo) it

1. exports the course with ``python -m helpers export-nbgrader``;
2. runs ``nbgrader generate_assignment`` and checks that the released notebook's
   stubs are the course's own (``raise NotImplementedError("Exercise N.M: ...")``);
3. submits three notebooks: the release untouched, the release with every
   answer filled in from the solution, and the same with one answer wrong;
4. runs ``nbgrader autograde`` and reads the automatic scores from the gradebook.

It exits 0 when untouched stubs score 0, the solutions score every automatic
point, and the one wrong answer costs exactly that exercise's point.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from helpers.exercise_format import BEGIN, END

ROOT = Path(__file__).resolve().parents[1]
# One plausible wrong answer per lesson, as (exercise number, body lines); other lessons return None.
WRONG = {
    "01_elbo": (
        "1.2",
        [
            "return torch.log(sigma_q / sigma_p) + (sigma_p**2 + (mu_p - mu_q)**2) "
            "/ (2 * sigma_q**2) - 0.5  # KL(p || q): swapped"
        ],
    )
}


def _run(*args, cwd):
    # nbgrader runs its `alembic` command by name: the environment's bin/ must be on PATH, as when it is activated
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"`{' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}")
    return result


def _grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _with_answers(release, source, wrong=None):
    """The released notebook with every answer (code and written) copied from the source; ``wrong`` replaces one."""
    answers = {_grade_id(c): c.source for c in source.cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.from_dict(release)
    for cell in nb.cells:
        gid = _grade_id(cell)
        if gid not in answers:
            continue
        text = answers[gid]
        if wrong and gid == f"exercise-{wrong[0].replace('.', '-')}":
            start, stop = text.index(BEGIN), text.index(END)
            indent = text[:start].rsplit("\n", 1)[-1]
            text = text[:start] + ("\n" + indent).join(wrong[1]) + text[stop + len(END) :]
        cell.source = "\n".join(line for line in text.splitlines() if line.strip() not in (BEGIN, END))
    return nb


def round_trip(lesson, course):
    _run("helpers", "export-nbgrader", str(course), "--force", cwd=ROOT)
    _run("nbgrader", "generate_assignment", lesson, "--force", cwd=course)
    release = nbformat.read(course / "release" / lesson / f"{lesson}.ipynb", 4)
    source = nbformat.read(course / "source" / lesson / f"{lesson}.ipynb", 4)
    stubs = [
        line.strip()
        for c in release.cells
        if c.cell_type == "code"
        for line in c.source.splitlines()
        if "NotImplementedError" in line
    ]
    assert stubs and all(re.fullmatch(r'raise NotImplementedError\("Exercise \d+\.\d+: .+"\)', s) for s in stubs), (
        f"the released stubs are not the course's own: {stubs}"
    )
    wrong = WRONG.get(lesson)
    if wrong is None:
        first = next(_grade_id(c) for c in source.cells if (_grade_id(c) or "").startswith("exercise-"))
        wrong = (first.split("-", 1)[1].replace("-", "."), ["return None"])
    submissions = {
        "untouched": release,
        "solved": _with_answers(release, source),
        "one_wrong": _with_answers(release, source, wrong),
    }
    for student, nb in submissions.items():
        folder = course / "submitted" / student / lesson
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{lesson}.ipynb")
    _run("nbgrader", "autograde", lesson, "--create", "--force", cwd=course)

    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in submissions:
            nb = gb.find_submission_notebook(lesson, lesson, student)
            auto = [g for g in nb.grades if g.auto_score is not None]
            scores[student] = (
                sum(g.auto_score for g in auto),
                sum(g.max_score for g in auto),
                sum(g.max_score for g in nb.grades if g.auto_score is None),
            )
    return scores, wrong[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", default=["01_elbo"], help="lesson names (default: 01_elbo)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    course = args.keep or Path(tempfile.mkdtemp(prefix="vi-nbgrader-"))
    ok = True
    try:
        for lesson in args.lessons:
            scores, wrong = round_trip(lesson, course)
            auto_max = scores["solved"][1]
            expected = {"untouched": 0, "solved": auto_max, "one_wrong": auto_max - 1}
            for student, (score, maximum, manual) in scores.items():
                good = score == expected[student]
                ok &= good
                print(
                    f"{lesson}  {student:<10} {score:g} / {maximum:g} automatic points"
                    f"{f' (+{manual:g} to grade by hand: written answers)' if manual else ''}"
                    f"{'' if good else f'  UNEXPECTED, expected {expected[student]:g}'}"
                    f"{f'  (exercise {wrong} wrong)' if student == 'one_wrong' else ''}"
                )
    finally:
        if args.keep is None:
            shutil.rmtree(course, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
