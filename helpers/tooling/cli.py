"""The command line of the course tooling: ``python -m helpers <command>``.

Commands
--------
build-lessons [--check] [--force]
    Generate lessons/ from solutions/ (``--check``: write nothing, exit 1 if stale).
execute-solutions [NOTEBOOK ...]
    Run solution notebooks in a fresh kernel and store their outputs.
grade PATH [PATH ...] [--json FILE] [--csv FILE] [--feedback DIR] [--timeout SECONDS] [--jobs N]
      [--memory GB] [--no-sandbox]
    Grade learners' notebooks (files or folders), contained; exit 0 only if every exercise passed.
export-nbgrader DEST [--assignment NAME]
    Write an nbgrader course (``nbgrader_config.py`` and ``source/``) built from solutions/.
build-site DEST
    Build the website (HTML) from solutions/ with their stored outputs, offline (needs the ``site`` extra).
"""

import argparse
import math
import os
import sys
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[2]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv=None):
    parser = _Parser(prog="python -m helpers", description="Tools for the VI course.")
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="course repository (default: the one this package lives in)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    build = sub.add_parser("build-lessons", help="generate lessons/ from solutions/")
    build.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming every stale lesson (front-end metadata ignored, a learner's work reported)",
    )
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
    grade.add_argument("--feedback", type=Path, metavar="DIR", help="write one feedback file per student into DIR")
    grade.add_argument(
        "--memory", type=float, default=8, metavar="GB", help="memory limit of each contained process (default 8)"
    )
    grade.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run learner code uncontained, with your permissions (only where bubblewrap cannot run)",
    )
    grade.add_argument("--checks", type=Path, action="append", default=[], metavar="FILE", help=argparse.SUPPRESS)

    export = sub.add_parser("export-nbgrader", help="write an nbgrader course directory built from solutions/")
    export.add_argument("dest", type=Path, metavar="DEST", help="the nbgrader course directory to write")
    export.add_argument(
        "--assignment",
        default=None,
        metavar="NAME",
        help="put every lesson in one assignment NAME (default: one assignment per lesson)",
    )
    export.add_argument("--force", action="store_true", help="replace DEST/source if it exists")

    site = sub.add_parser("build-site", help="build the website from solutions/ and their stored outputs")
    site.add_argument("dest", type=Path, metavar="DEST", help="the folder to write the HTML into (replaced)")
    site.add_argument("--verbose", action="store_true", help="show Sphinx's progress")

    args = parser.parse_args(argv)
    root = args.root
    if not (root / "solutions").is_dir():
        parser.error(f"{root} has no solutions/ folder; pass --root PATH to the course repository")

    if args.command == "build-lessons":
        from .sync import build_lessons

        return build_lessons(root, check=args.check, force=args.force)
    if args.command == "execute-solutions":
        from .execution import execute_solutions

        return execute_solutions(root, args.notebooks)
    if args.command == "grade":
        try:
            return _grade(parser, root, args)
        except SystemExit as exc:  # a usage error, in one line (parser.error)
            return exc.code
    if args.command == "export-nbgrader":
        from .nbgrader import export_nbgrader

        return export_nbgrader(root, args.dest, assignment=args.assignment, force=args.force)
    if args.command == "build-site":
        from .site import build_site

        return build_site(root, args.dest, quiet=not args.verbose)
    return 2  # unreachable: argparse rejects unknown commands


def _output_problem(path, folder=False):
    """Why ``path`` cannot be written (checked before any grading starts), or None."""
    parent = path.parent if str(path.parent) else Path(".")
    if folder:
        if path.exists() and not path.is_dir():
            return f"{path} exists and is not a folder"
        if path.is_dir():
            return None if os.access(path, os.W_OK) else f"folder {path} is not writable"
    elif path.is_dir():
        return f"{path} is a folder, not a file"
    if not parent.is_dir():
        return f"folder {parent} does not exist (for {path})"
    if not os.access(parent, os.W_OK):
        return f"folder {parent} is not writable (for {path})"
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return f"the name {os.fsencode(path)!r} is not valid UTF-8"
    return None


def _grade(parser, root, args):
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error("--timeout must be a positive number of seconds")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not (math.isfinite(args.memory) and args.memory >= 0.5):
        parser.error("--memory must be at least 0.5 (GB)")
    for path, folder in ((args.json, False), (args.csv, False), (args.feedback, True)):
        problem = path is not None and _output_problem(path, folder)
        if problem:
            parser.error(problem)
    for path in args.paths:
        if not os.path.lexists(path):  # a dangling symbolic link is named by find_submissions
            parser.error(f"no such file or folder: {path}")

    # nothing heavy: torch is imported by the kernels and the replay only
    from .grading import grade
    from .reports import format_summary, format_table, write_csv, write_feedback, write_json
    from .sandbox import Sandbox, SandboxUnavailable, address_space_limit
    from .submissions import UsageError, find_submissions

    try:
        found = find_submissions(args.paths, root / "lessons")
    except UsageError as exc:
        parser.error(str(exc))
    gradable = [s for s in found.submissions if not s.problem]
    if not gradable:
        parser.error(found.submissions[0].problem if found.submissions else "no notebooks to grade")
    sandbox = None
    if args.no_sandbox:
        print(
            "WARNING: grading WITHOUT containment (--no-sandbox): learner code runs with your permissions, "
            "can read and change your files, and a process it detaches can outlive the grade"
        )
    else:
        inherited = address_space_limit()
        if inherited is not None and inherited < (1 << 29):
            parser.error(
                f"the address-space limit this grader inherited (`ulimit -v`) is {inherited / (1 << 30):.3g} GB, "
                "below the 0.5 GB a contained process needs: raise it (`ulimit -v unlimited`)"
            )
        try:
            sandbox = Sandbox(extra_modules=args.checks, memory=int(args.memory * (1 << 30)))
        except SandboxUnavailable as exc:
            print(
                f"python -m helpers grade: error: cannot contain learner code: {exc}. Grading runs learner code; "
                "fix this, or pass --no-sandbox to grade uncontained at your own risk",
                file=sys.stderr,
            )
            return 2
        clamped = ""
        if sandbox.clamped is not None:
            clamped = (
                f" (--memory {args.memory:g} is above the address-space limit this grader inherited, "
                f"`ulimit -v`: clamped to it)"
            )
        print(
            f"contained: bubblewrap, no network, no view of your files, {sandbox.memory / (1 << 30):.3g} GB per "
            f"process{clamped}; verdicts replayed by the grader"
        )
    for label, why in found.skipped:
        print(f"skipped {label}: {why}")
    for sub in found.submissions:
        if sub.note and not sub.problem:
            print(f"note: {sub.label}: {sub.note} (student: {sub.student})")
    try:
        grades = grade(
            args.paths,
            root / "lessons",
            timeout=args.timeout,
            jobs=args.jobs,
            sandbox=sandbox,
            checks=args.checks,
            found=found,
        )
    finally:
        if sandbox is not None:
            sandbox.close()
    print(format_table(grades))
    print()
    print(format_summary(grades))
    for path, write in ((args.json, write_json), (args.csv, write_csv), (args.feedback, write_feedback)):
        if path is not None:
            try:
                write(grades, path)
            except OSError as exc:
                print(f"python -m helpers grade: error: could not write {path}: {exc.strerror}", file=sys.stderr)
                return 2
    passed = sum(g.status == "passed" for g in grades)
    print(f"\n{passed} of {len(grades)} exercises passed")
    return 0 if grades and passed == len(grades) else 1
