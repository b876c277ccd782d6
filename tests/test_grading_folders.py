"""A real class folder: macOS debris, near-miss names, broken files, and results an instructor can use.

One batch, graded with two jobs, holds every case; each good notebook is
graded, each bad one is named in a row of its own, and nothing stops the
others. Usage errors are checked before anything is imported or graded."""

import csv
import json
import os
import subprocess
import sys

import nbformat
from test_grading import ROOT, TINY_CORRECT, TINY_TIMEOUT, grade, tiny, tiny_answered, write  # noqa: F401


def _raw(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _class_folder(tiny, folder):  # noqa: F811
    correct = tiny_answered(tiny, TINY_CORRECT)
    half = tiny_answered(tiny, {"0.1": TINY_CORRECT["0.1"], "0.2": ["return x + x"]})
    text = nbformat.writes(correct)
    write(correct, folder / "anna" / "00_tiny.ipynb")
    write(half, folder / "ben" / "00_tiny.ipynb")
    # macOS and Jupyter debris: skipped and listed
    _raw(folder / "._00_tiny.ipynb", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    _raw(folder / "__MACOSX" / "anna" / "._00_tiny.ipynb", b"\x00\x05\x16\x07")
    _raw(folder / ".hidden" / "00_tiny.ipynb", text.encode())
    _raw(folder / "anna" / ".ipynb_checkpoints" / "00_tiny-checkpoint.ipynb", text.encode())
    _raw(folder / "notes.txt", b"not a notebook, ignored")
    # near-miss names: matched (handed in untouched, which the grader answers without running a kernel)
    pristine = nbformat.read(tiny / "lessons" / "00_tiny.ipynb", 4)
    write(pristine, folder / "bob" / "00 Tiny.ipynb")
    write(pristine, folder / "carol" / "00_tiny (1).ipynb")
    write(pristine, folder / "smith_00_tiny.ipynb")
    # a folder whose name is not valid UTF-8
    write(pristine, folder / os.fsdecode(b"m\xfcller") / "00_tiny.ipynb")
    # broken ones: a row each, with a clear message
    write(correct, folder / "dave" / "99_other.ipynb")
    _raw(folder / "erin" / "00_tiny.ipynb", text.replace("2 * x", "2 * x  # \xe9").encode("latin-1"))
    surrogate = tiny_answered(tiny, {"0.1": ["return 2 * x  # \udc80"], **{k: TINY_CORRECT[k] for k in ("0.2", "0.3")}})
    _raw(folder / "frank" / "00_tiny.ipynb", json.dumps(surrogate).encode())
    null = json.loads(text)
    for cell in null["cells"]:
        if cell.get("id") == "ex01":
            cell["source"] = None
    _raw(folder / "gina" / "00_tiny.ipynb", json.dumps(null).encode())
    # an answer that kills its worker: the others are graded all the same
    killer = {
        "0.1": TINY_CORRECT["0.1"],
        "0.2": ["import os, signal, time", "os.kill(os.getppid(), signal.SIGKILL)", "time.sleep(30)"],
    }
    write(tiny_answered(tiny, {**killer, "0.3": TINY_CORRECT["0.3"]}), folder / "harry" / "00_tiny.ipynb")
    # continuation lines at column 0 inside the function body are fine
    ivan = tiny_answered(tiny, {"0.1": ["y = '''two", "lines'''", "return (2 *", "x)"]})
    write(ivan, folder / "ivan" / "00_tiny.ipynb")
    # what has a notebook's name but is no notebook: a row each, never silently dropped
    (folder / "kim").mkdir()
    (folder / "kim" / "00_tiny.ipynb").symlink_to(folder / "kim" / "gone.ipynb")  # a dangling symbolic link
    (folder / "lea" / "00_tiny.ipynb").mkdir(parents=True)  # an empty folder
    write(pristine, folder / "max.ipynb" / "00_tiny.ipynb")  # a folder with a notebook's name, holding one: graded
    # sys.exit() in an answer is the answer raising: failed, not flagged
    write(tiny_answered(tiny, {"0.1": ["import sys", "sys.exit(3)"]}), folder / "otto" / "00_tiny.ipynb")


def test_a_messy_class_folder_grades_cleanly(capsys, tmp_path, tiny):  # noqa: F811
    folder = tmp_path / "class"
    _class_folder(tiny, folder)
    listing = sorted(os.fsencode(p) for p in folder.rglob("*"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["--jobs", 2, "--csv", out_dir / "g.csv", "--json", out_dir / "g.json", "--feedback", out_dir / "fb"]
    status, out, err = grade(capsys, folder, folder / "bob" / "00 Tiny.ipynb", *args, root=tiny, timeout=TINY_TIMEOUT)
    assert status == 1, out + err
    grades = json.loads((out_dir / "g.json").read_text())
    by = {}
    for g in grades:
        by.setdefault(g["student"], {})[g["exercise"]] = (g["status"], g["message"])
    every = {"0.1": "passed", "0.2": "passed", "0.3": "passed"}
    assert {n: s for n, (s, _) in by["anna"].items()} == every, by["anna"]
    untouched = {"0.1": "not attempted", "0.2": "not attempted", "0.3": "not attempted"}
    for student in ("bob", "carol", "smith", "m\\xfcller", "max.ipynb"):
        assert {n: s for n, (s, _) in by[student].items()} == untouched, (student, by[student])
    assert {n: s for n, (s, _) in by["ben"].items()} == {"0.1": "passed", "0.2": "failed", "0.3": "not attempted"}
    assert len([g for g in grades if g["student"] == "bob"]) == 3  # given twice (file and folder): graded once
    # skipped and listed
    for words in ("._00_tiny.ipynb: macOS resource fork", "__MACOSX", ".hidden/00_tiny.ipynb: hidden file"):
        assert words in out, words
    assert "00_tiny-checkpoint.ipynb: Jupyter checkpoint" in out
    assert "note: " in out and "00 Tiny.ipynb: matched to 00_tiny.ipynb by name" in out
    # broken notebooks: named, each in a row of its own
    assert by["dave"] == {"-": ("error", by["dave"]["-"][1])} and "matches no lesson" in by["dave"]["-"][1]
    assert by["erin"]["-"][0] == "error" and "not a readable Jupyter notebook" in by["erin"]["-"][1]
    assert by["frank"]["0.1"][0] == "error" and "not valid text" in by["frank"]["0.1"][1]
    assert by["frank"]["0.2"][0] == by["frank"]["0.3"][0] == "passed"
    assert by["gina"]["0.1"][0] == "error" and "malformed" in by["gina"]["0.1"][1], by["gina"]
    assert by["gina"]["0.2"][0] == "passed"
    assert by["harry"]["0.2"][0] == "error" and by["harry"]["0.3"][0] == "passed", by["harry"]
    assert by["ivan"]["0.1"][0] == "passed", by["ivan"]
    assert by["kim"] == {"-": ("error", by["kim"]["-"][1])} and "symbolic link to a missing file" in by["kim"]["-"][1]
    assert by["lea"] == {"-": ("error", by["lea"]["-"][1])} and "a folder, not a notebook" in by["lea"]["-"][1]
    assert by["otto"]["0.1"] == ("failed", by["otto"]["0.1"][1]), by["otto"]
    assert "your function raised SystemExit: 3" in by["otto"]["0.1"][1], by["otto"]
    # results an instructor can use: the summary, the CSV, one feedback file per student
    assert "student" in out and "anna" in out and "3 of 3" in out and "1 of 3" in out
    with open(out_dir / "g.csv", encoding="utf-8-sig", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(grades) and list(table[0]) == [
        "student",
        "notebook",
        "lesson",
        "exercise",
        "status",
        "message",
    ]
    feedback = sorted(p.name for p in (out_dir / "fb").iterdir())
    assert "ben.txt" in feedback and "dave.txt" in feedback and len(feedback) == len(by)
    ben = (out_dir / "fb" / "ben.txt").read_text()
    assert "Exercise 0.2: failed - square(3) returned 6, expected 9" in ben and "1 of 3 exercises passed" in ben
    assert sorted(os.fsencode(p) for p in folder.rglob("*")) == listing  # nothing written beside the submissions


def _cli(*args):
    code = (
        "import sys\nfrom helpers.tooling.cli import main\nstatus = main(sys.argv[1:])\n"
        "print('imported:', 'torch' in sys.modules, 'nbformat' in sys.modules)\nsys.exit(status)"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, check=False)


def test_usage_errors_come_first_in_one_line_before_anything_heavy(tmp_path):
    lesson = str(ROOT / "lessons" / "01_elbo.ipynb")
    cases = [
        ([lesson, "--csv", str(tmp_path / "missing" / "g.csv")], "does not exist"),
        ([lesson, "--json", str(tmp_path)], "is a folder"),
        ([lesson, "--timeout", "nan"], "--timeout must be a positive number"),
        ([lesson, "--timeout", "inf"], "--timeout must be a positive number"),
        ([lesson, "--jobs", "0"], "--jobs must be at least 1"),
        ([str(tmp_path / "nowhere")], "no such file or folder"),
        ([lesson, "--frobnicate"], "unrecognized arguments"),
    ]
    for args, words in cases:
        done = _cli("grade", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert words in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)
        assert "imported: False False" in done.stdout or "unrecognized" in words, (args, done.stdout)
