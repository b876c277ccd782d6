"""``python -m helpers export-nbgrader``: the cell metadata nbgrader needs, written from the solutions.

The round trip through nbgrader itself (generate_assignment, autograde) is
``tests/nbgrader_roundtrip.py``, which needs the nbgrader extra; CI runs it.
"""

import nbformat
from test_build_lessons import solution_notebook

from helpers.exercise_format import BEGIN
from helpers.tooling.cli import main
from helpers.tooling.nbgrader import nbgrader_notebook


def test_cells_get_nbgrader_roles():
    nb = nbgrader_notebook(solution_notebook())
    roles = {c.id: c.metadata.get("nbgrader") for c in nb.cells}
    assert roles["title"] is None and roles["setup"] is None and roles["use"] is None
    exercise, question, check = roles["ex32"], roles["q33"], roles["ex32-check"]
    assert (exercise["solution"], exercise["grade"], exercise["locked"]) == (True, False, False)
    assert (question["solution"], question["grade"], question["points"]) == (True, True, 1)
    assert (check["solution"], check["grade"], check["locked"], check["points"]) == (False, True, True, 1)
    assert len({r["grade_id"] for r in (exercise, question, check)}) == 3
    cells = {c.id: c for c in nb.cells}
    assert BEGIN in cells["ex32"].source  # nbgrader itself replaces the region
    assert cells["ex32-check"].source == "check_add_two(add_two).raise_if_failed()"
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_export_writes_a_course_directory(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    nbformat.write(solution_notebook(), tmp_path / "solutions" / "03_demo.ipynb")
    dest = tmp_path / "course"
    assert main(["--root", str(tmp_path), "export-nbgrader", str(dest)]) == 0
    assert (dest / "nbgrader_config.py").read_text().count("course_preprocessors()") == 1
    nb = nbformat.read(dest / "source" / "03_demo" / "03_demo.ipynb", 4)
    assert nb.cells[2].metadata["nbgrader"]["grade_id"] == "exercise-3-2"
    assert main(["--root", str(tmp_path), "export-nbgrader", str(dest)]) == 1  # never overwrites silently
    assert "--force" in capsys.readouterr().out
    assert main(["--root", str(tmp_path), "export-nbgrader", str(dest), "--force", "--assignment", "ps1"]) == 0
    assert (dest / "source" / "ps1" / "03_demo.ipynb").exists() and not (dest / "source" / "03_demo").exists()
    assert main(["--root", str(tmp_path), "export-nbgrader", str(dest), "--force", "--assignment", "a b"]) == 1
