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
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
STUB_ERROR = re.compile(r"^(Exercise|Question) \d+\.\d+: \S")
# Between lessons, the shared kernel forgets everything a learner's fresh kernel would not know: the names
# (modules stay imported, so a lesson still has to import what it uses), open figures, Pyro's parameters.
# The user's names are deleted one by one, as %reset -f deletes them, but without its history reset and
# garbage collection (0.25 s of CPU a lesson).
FRESH_START = (
    "def _forget(ip):\n"
    "    for name in set(ip.user_ns) - set(ip.user_ns_hidden):  # _forget itself included\n"
    "        del ip.user_ns[name]\n"
    "_forget(get_ipython())\n"
    "import matplotlib.pyplot as _plt\n_plt.close('all')\ndel _plt\n"
    "import sys as _sys\n"
    "if 'pyro' in _sys.modules:\n    _sys.modules['pyro'].clear_param_store()\n"
    "del _sys"
)


def _stub_problems(name, cells):
    """What is wrong with one lesson's executed ``cells``: errors other than stubs, checks not 'not attempted'."""
    errors, not_attempted, checks = [], 0, 0
    for cell in cells:
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
    problems = [f"{name}: an error other than an exercise stub: {e}" for e in errors if not _is_stub(e)]
    exercises = {exercise_of(c) for c in cells if c.cell_type == "code" and exercise_of(c)}
    unknown = {e[2].split(":")[0].split()[1] for e in errors if _is_stub(e)} - exercises
    if unknown:
        problems.append(f"{name}: stubs name exercises that are not in the lesson: {sorted(unknown)}")
    if checks < len(exercises) or not_attempted != checks:
        problems.append(f"{name}: every check cell must read 'not attempted yet' ({not_attempted} of {checks})")
    return problems


def _is_stub(error):
    return error[1] == "NotImplementedError" and STUB_ERROR.match(error[2])


def test_every_lesson_runs_with_only_stub_errors():
    """Each lesson, as ``build-lessons`` generates it, top to bottom, as a learner first runs it.

    All nine run in one kernel, one after the other, each after a cell that deletes the kernel's user names
    (as ``%reset -f`` does), closes the figures and clears Pyro's parameters: a kernel start and the imports
    cost about 3.5 s of CPU, a third of what a stubbed lesson costs.
    """
    cells, spans = [], []
    for path in SOLUTIONS:
        lesson = lesson_from_solution(nbformat.read(path, 4), name=path.name)
        cells.append(nbformat.v4.new_code_cell(FRESH_START, id=f"fresh-start-{path.stem}"))
        spans.append((path.name, len(cells), len(cells) + len(lesson.cells)))
        for cell in lesson.cells:
            cell.id = f"{path.stem[:2]}-{cell.id}"  # unique in the joint notebook; errors name the lesson anyway
        cells += lesson.cells
    nb = nbformat.v4.new_notebook(cells=cells)
    nb = execute_notebook(nb, cwd=ROOT / "lessons", timeout=300, allow_errors=True, figures=False)
    fresh_start_errors = [c.id for c in nb.cells if c.id.startswith("fresh-start") and c.outputs]
    assert not fresh_start_errors, f"resetting the kernel between lessons failed: {fresh_start_errors}"
    problems = [p for name, start, stop in spans for p in _stub_problems(name, nb.cells[start:stop])]
    assert not problems, "\n".join(problems)


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


def test_a_kernel_that_does_not_answer_is_started_afresh(monkeypatch):
    """conftest.py gives nbval's kernel start three tries (two workers can race for the same free port)."""
    import nbval.kernel

    import conftest

    calls = []

    def flaky(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) < 3:
            raise RuntimeError("Kernel didn't respond in 60 seconds")
        return "km", "kc"

    monkeypatch.setattr(nbval.kernel, "start_new_kernel", flaky)
    conftest._retry_nbval_kernel_start()
    assert nbval.kernel.start_new_kernel(kernel_name="k") == ("km", "kc") and len(calls) == 3
    calls.clear()

    def dead(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(nbval.kernel, "start_new_kernel", dead)
    conftest._retry_nbval_kernel_start()
    with pytest.raises(RuntimeError, match="died"):
        nbval.kernel.start_new_kernel()
    assert len(calls) == 3  # three tries, then the error is the test's
