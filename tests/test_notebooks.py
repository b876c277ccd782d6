"""Notebooks run as a learner runs them.

Lessons executed top to bottom: the only errors allowed are the stubs'
``NotImplementedError("Exercise N.M: ...")``, and every check cell reads "not
attempted yet". The lesson run is the one ``build-lessons`` generates from the
solution, not the file in ``lessons/``: that file may hold a learner's answers,
and ``tests/test_repository.py`` already fails when it differs from the
generated one in anything else. (Solutions are compared output by output by nbval.)
"""

import re
from pathlib import Path

import nbformat
import pytest

from helpers.exercise_format import NOT_ATTEMPTED, exercise_of, parse_check_line
from helpers.tooling.build import lesson_from_solution
from helpers.tooling.cli import main
from helpers.tooling.execution import execute_notebook

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
STUB_ERROR = re.compile(r"^(Exercise|Question) \d+\.\d+: \S")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_runs_with_only_stub_errors(path):
    lesson = lesson_from_solution(nbformat.read(ROOT / "solutions" / path.name, 4), name=path.name)
    nb = execute_notebook(lesson, cwd=path.parent, timeout=300, allow_errors=True)
    errors, not_attempted, checks = [], 0, 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if out.output_type == "error":
                errors.append((cell.id, out.ename, out.evalue))
            if out.output_type == "stream":
                for line in out.text.splitlines():
                    parsed = parse_check_line(line)
                    if parsed:
                        checks += 1
                        not_attempted += parsed[1] == NOT_ATTEMPTED
    bad = [e for e in errors if e[1] != "NotImplementedError" or not STUB_ERROR.match(e[2])]
    assert not bad, f"errors other than the exercise stubs: {bad}"
    exercises = {exercise_of(c) for c in nb.cells if c.cell_type == "code" and exercise_of(c)}
    assert {e[2].split(":")[0].split()[1] for e in errors} <= exercises
    assert checks >= len(exercises) and not_attempted == checks, "every check cell must read 'not attempted yet'"


def test_execute_solutions_stores_outputs_with_counts(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 6 * 7", id="a"), nbformat.v4.new_code_cell("print(x)\nx", id="b")]
    )
    nbformat.write(nb, tmp_path / "solutions" / "00_demo.ipynb")
    assert main(["--root", str(tmp_path), "execute-solutions"]) == 0
    out = nbformat.read(tmp_path / "solutions" / "00_demo.ipynb", 4)
    assert [c.execution_count for c in out.cells] == [1, 2]
    assert out.cells[1].outputs[0].text == "42\n" and out.cells[1].outputs[1].data["text/plain"] == "42"
    assert out.metadata["language_info"] == {"name": "python"}
    assert all("execution" not in c.metadata for c in out.cells)

    nb.cells.append(nbformat.v4.new_code_cell("1 / 0", id="c"))
    nbformat.write(nb, tmp_path / "solutions" / "00_demo.ipynb")
    before = (tmp_path / "solutions" / "00_demo.ipynb").read_bytes()
    assert main(["--root", str(tmp_path), "execute-solutions", "00_demo.ipynb"]) == 1
    assert "FAILED, outputs not written" in capsys.readouterr().out
    assert (tmp_path / "solutions" / "00_demo.ipynb").read_bytes() == before
    assert main(["--root", str(tmp_path), "execute-solutions", "nope.ipynb"]) == 2
