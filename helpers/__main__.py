"""Course tooling: ``python -m helpers <command>``.

Commands
--------
build-lessons [--check] [--force]
    Generate lessons/ from solutions/ (``--check``: write nothing, exit 1 if stale).
execute-solutions [NOTEBOOK ...]
    Run solution notebooks in a fresh kernel and store their outputs.
"""

import argparse
import sys
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers", description="Tools for the VI course.")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="course repository (default: the one this package lives in)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build-lessons", help="generate lessons/ from solutions/")
    build.add_argument("--check", action="store_true", help="write nothing; exit 1 naming every stale lesson")
    build.add_argument("--force", action="store_true", help="overwrite lessons even if they hold a learner's work")

    run = sub.add_parser("execute-solutions", help="run solutions/ in fresh kernels and store the outputs")
    run.add_argument("notebooks", nargs="*", help="file names in solutions/ (default: all)")

    args = parser.parse_args(argv)
    root = args.root
    if not (root / "solutions").is_dir():
        parser.error(f"{root} has no solutions/ folder; pass --root PATH to the course repository")

    if args.command == "build-lessons":
        from .build_lessons import build_lessons

        return build_lessons(root, check=args.check, force=args.force)
    if args.command == "execute-solutions":
        from .execution import execute_solutions

        return execute_solutions(root, args.notebooks)
    return 2  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
