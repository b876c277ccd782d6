"""The grades as rows, and the ways they are reported: a table, a summary, CSV, JSON, feedback files."""

import csv
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..exercise_format import PASSED

__all__ = [
    "Grade",
    "format_table",
    "summary",
    "format_summary",
    "feedback_text",
    "write_feedback",
    "write_json",
    "write_csv",
]


@dataclass
class Grade:
    """One row: a student's notebook, one exercise (``-``: the notebook as a whole), its status and message."""

    student: str
    notebook: str
    lesson: str
    exercise: str
    status: str
    message: str


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
