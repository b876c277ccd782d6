"""The command line of the course tooling: ``python -m helpers <command>``.

Commands
--------
build-lessons [--check] [--force]
    Generate lessons/ from solutions/ (``--check``: write nothing, exit 1 if stale).
execute-solutions [NOTEBOOK ...]
    Run solution notebooks in a fresh kernel and store their outputs.
grade PATH [PATH ...] [--json FILE] [--csv FILE] [--timeout SECONDS] [--jobs N]
    Grade learners' notebooks (files or folders); exit 0 only if every exercise passed.
export-nbgrader DEST [--assignment NAME]
    Write an nbgrader course (``nbgrader_config.py`` and ``source/``) built from solutions/.
"""

import argparse
import sys
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[2]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers", description="Tools for the VI course.")
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="course repository (default: the one this package lives in)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build-lessons", help="generate lessons/ from solutions/")
    build.add_argument("--check", action="store_true", help="write nothing; exit 1 naming every stale lesson")
    build.add_argument("--force", action="store_true", help="overwrite lessons even if they hold a learner's work")

    run = sub.add_parser("execute-solutions", help="run solutions/ in fresh kernels and store the outputs")
    run.add_argument("notebooks", nargs="*", help="file names in solutions/ (default: all)")

    grade = sub.add_parser("grade", help="grade learners' notebooks against the pristine lessons")
    grade.add_argument("paths", nargs="+", metavar="PATH", help="notebooks, or folders searched recursively")
    grade.add_argument("--json", type=Path, metavar="FILE", help="write the grades as a JSON list")
    grade.add_argument("--csv", type=Path, metavar="FILE", help="write one CSV row per notebook and exercise")
    grade.add_argument(
        "--timeout",
        type=float,
        default=300,
        metavar="SECONDS",
        help="wall-clock limit for one cell of a notebook, kernel start excluded (default 300)",
    )
    grade.add_argument("--jobs", type=int, default=1, metavar="N", help="notebooks graded at once (default 1)")

    export = sub.add_parser("export-nbgrader", help="write an nbgrader course directory built from solutions/")
    export.add_argument("dest", type=Path, metavar="DEST", help="the nbgrader course directory to write")
    export.add_argument(
        "--assignment",
        default=None,
        metavar="NAME",
        help="put every lesson in one assignment NAME (default: one assignment per lesson)",
    )
    export.add_argument("--force", action="store_true", help="replace DEST/source if it exists")

    args = parser.parse_args(argv)
    root = args.root
    if not (root / "solutions").is_dir():
        parser.error(f"{root} has no solutions/ folder; pass --root PATH to the course repository")

    if args.command == "build-lessons":
        from .build import build_lessons

        return build_lessons(root, check=args.check, force=args.force)
    if args.command == "execute-solutions":
        from .execution import execute_solutions

        return execute_solutions(root, args.notebooks)
    if args.command == "grade":
        return _grade(parser, root, args)
    if args.command == "export-nbgrader":
        from .nbgrader import export_nbgrader

        return export_nbgrader(root, args.dest, assignment=args.assignment, force=args.force)
    return 2  # unreachable: argparse rejects unknown commands


def _grade(parser, root, args):
    from .grading import UsageError, format_table, grade, write_csv, write_json

    if args.timeout <= 0 or args.jobs < 1:
        parser.error("--timeout must be positive and --jobs at least 1")
    try:
        grades = grade(args.paths, root / "lessons", timeout=args.timeout, jobs=args.jobs)
    except UsageError as exc:
        print(f"python -m helpers grade: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(grades))
    if args.json:
        write_json(grades, args.json)
    if args.csv:
        write_csv(grades, args.csv)
    passed = sum(g.status == "passed" for g in grades)
    print(f"\n{passed} of {len(grades)} exercises passed")
    return 0 if grades and passed == len(grades) else 1
