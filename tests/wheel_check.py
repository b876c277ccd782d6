"""A lesson runs outside the repository, as on Colab: ``python tests/wheel_check.py``.

Builds the course's wheel (``pip wheel --no-deps``), checks that it holds the package data
(``helpers/data``, the plot style), installs it into a fresh virtual environment (``python3.11 -m venv``;
``torch==2.13.0`` first, the CPU build, never an unpinned torch), copies lesson 01's solution into a temporary
folder outside the repository and runs it there in a fresh kernel of that environment (nbclient). The lesson's
first cell finds the installed package and installs nothing. Exit 0 when the lesson ran without an error.
Run by .ci/run after the test command (a few minutes: it installs the course's dependencies).
"""

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSON = "01_elbo.ipynb"
PYTHON = "python3.11"

RUN = """
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import helpers

assert not Path(helpers.__file__).resolve().is_relative_to(Path(sys.argv[2])), helpers.__file__
nb = nbformat.read(sys.argv[1], 4)
folder = str(Path(sys.argv[1]).parent)
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()
errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
assert not errors, errors
cells = sum(c.cell_type == "code" for c in nb.cells)
print(f"{Path(sys.argv[1]).name}: {cells} code cells ran outside the repository, helpers from {helpers.__file__}")
"""


def run(*command, cwd=None):
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(c) for c in command], cwd=cwd, check=True)


def main():
    with tempfile.TemporaryDirectory(prefix="vi-course-wheel-") as tmp:
        tmp = Path(tmp)
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", ROOT)
        (wheel,) = (tmp / "dist").glob("*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers" / "data").iterdir() if p.is_file()]
        data.append("helpers/course.mplstyle")
        missing = [name for name in data if name not in names]
        assert not missing, f"{wheel.name} lacks package data {missing}: see [tool.setuptools.package-data]"
        venv = tmp / "venv"
        run(PYTHON, "-m", "venv", venv)
        pip = venv / "bin" / "pip"
        run(pip, "install", "-q", "torch==2.13.0")  # the CPU build first: an unpinned torch pulls CUDA
        run(pip, "install", "-q", wheel, "nbclient")
        work = tmp / "outside"
        work.mkdir()
        shutil.copy(ROOT / "solutions" / LESSON, work / LESSON)
        (work / "run.py").write_text(RUN)
        run(venv / "bin" / "python", work / "run.py", work / LESSON, ROOT, cwd=work)
    print("wheel_check: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
