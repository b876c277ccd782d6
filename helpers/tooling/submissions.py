"""Find the submissions under the paths a grader is given, and match each to its lesson.

A path is a notebook or a folder searched recursively. Debris (macOS resource forks and ``__MACOSX``,
hidden files, Jupyter checkpoints) is skipped and listed. Every other path that names a notebook becomes a
:class:`Submission`; one that cannot be graded (unreadable, matching no lesson, a folder or a dangling link
with a notebook's name) carries the reason as its ``problem``, so it gets a row of its own and never stops
the others. Who handed a notebook in, the *student*, is read from where it lies.
"""

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["UsageError", "Submission", "Found", "display", "match_lesson", "find_submissions"]


class UsageError(ValueError):
    """Nothing that can be graded: a missing path, an explicit file that is not a notebook, no notebook at all."""


@dataclass
class Submission:
    """One notebook to grade: where it is, its lesson, who handed it in, and how it is named in the report."""

    path: Path
    lesson: Path | None
    student: str
    label: str
    problem: str | None = None  # why it cannot be graded (unreadable, matches no lesson, not a file)
    note: str | None = None  # how its name was matched, when not exactly


@dataclass
class Found:
    """What :func:`find_submissions` found: the submissions, and what it skipped (with why)."""

    submissions: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (label, why): debris that is not a submission


def display(text):
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
    skipped and listed. Every other path with a notebook's name is a
    submission; one that cannot be graded (unreadable, matching no lesson, a
    dangling symbolic link, a folder or another non-file named ``*.ipynb``) has
    a ``problem``, so it gets a row without stopping the others: no path with a
    notebook's name goes unreported. Raises :class:`UsageError` for a missing
    path, an explicit file that is not a notebook, or a folder without one.
    """
    from .notebook_io import read_notebook

    lessons = sorted(Path(lessons_dir).glob("*.ipynb"))
    found, seen = Found(), set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            if path.is_symlink():
                raise UsageError(f"a symbolic link to a missing file: {display(raw)} -> {display(os.readlink(path))}")
            raise UsageError(f"no such file or folder: {display(raw)}")
        if path.is_dir():
            candidates = []
            for p in sorted(path.rglob("*")):
                named = p.suffix.lower() == ".ipynb"
                if not p.is_file() and not named:
                    continue
                why = _debris(p, path)
                if why:
                    found.skipped.append((display(p), why))
                elif named and not (p.is_dir() and _holds_notebooks(p)):
                    candidates.append((p, path))
            if not candidates:
                raise UsageError(f"no notebooks (*.ipynb) in folder {display(raw)}")
        else:
            if path.suffix.lower() != ".ipynb":
                raise UsageError(f"not a notebook (expected a .ipynb file): {display(path)}")
            candidates = [(path, None)]
        for nb_path, top in candidates:
            key = os.path.realpath(nb_path)
            if key in seen:
                continue  # a file given twice, or given with its folder, is graded once
            seen.add(key)
            lesson, rest, note = match_lesson(nb_path.name, lessons)
            student = _student(nb_path, top, rest)
            sub = Submission(nb_path, lesson, student, display(nb_path), note=note if lesson else None)
            sub.problem = _not_a_file(nb_path) or (note if lesson is None else None)
            if sub.problem is None:
                try:
                    read_notebook(nb_path)
                except ValueError as exc:
                    sub.problem = display(f"not a readable Jupyter notebook ({str(exc).split('(', 1)[-1]}")
            found.submissions.append(sub)
    return found


def _holds_notebooks(folder):
    """A folder with a notebook's name is a folder of submissions when notebooks lie under it."""
    return any(p.suffix.lower() == ".ipynb" and p.is_file() for p in folder.rglob("*"))


def _not_a_file(path):
    """Why ``path``, named like a notebook, is not a file that can be read as one; None for a file."""
    if path.is_file():
        return None
    if path.is_symlink() and not path.exists():
        return f"a symbolic link to a missing file ({display(os.readlink(path))}), not a notebook"
    if path.is_dir():
        return "a folder, not a notebook file (hand in the .ipynb file itself)"
    return "not a regular file (a pipe, socket or device), not a notebook"


def _student(path, top, rest):
    """Who handed ``path`` in: its first folder under the folder given, else what its name adds, else its folder."""
    if top is not None:
        parts = path.relative_to(top).parts
        if len(parts) > 1:
            return display(parts[0])
    if rest:
        return display(rest)
    return display(path.resolve().parent.name or path.stem)
