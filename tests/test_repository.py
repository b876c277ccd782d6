"""Repository-level promises: lessons in sync (a learner's own work in them
reported, not failed), stored solution outputs all passing, the two environment
files agreeing, CI doing what the README and the instructor's guide (INSTRUCTORS.md) say."""

import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import nbformat
import pytest
import yaml

from helpers.exercise_format import BEGIN, check_of, exercise_of
from helpers.tooling.sync import LearnerWork, survey_lessons

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_lessons_are_in_sync_with_solutions():
    """lessons/ is what `build-lessons` writes, apart from metadata JupyterLab adds and a learner's own work.

    A stale, missing or orphaned lesson fails (with or without a learner's work in it). A lesson that differs
    only by a learner's answers and outputs passes with a warning naming it: pytest prints warnings in its
    default summary, while a skip's reason only shows with ``-rs``.
    """
    survey = survey_lessons(ROOT)
    failures = survey.check_failures()
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)  # the lines `build-lessons --check` prints, and no more
    assert [state.name for state in survey.lessons] == [p.name for p in SOLUTIONS]
    for note in survey.learner_notes():  # (LearnerWork lives in helpers: xdist's controller must import it)
        warnings.warn(LearnerWork(note), stacklevel=1)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_stored_solution_outputs_pass_every_check(path):
    nb = nbformat.read(path, 4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        "regenerate outputs with `python -m helpers execute-solutions`"
    )
    lines = [line for c in code for o in c.outputs if o.output_type == "stream" for line in o.text.splitlines()]
    checks = [line for line in lines if re.match(r"Exercise \d+\.\d+ \(", line)]
    exercises = {
        c.metadata["course"]["exercise"] for c in nbformat.reads(nbformat.writes(nb), 4).cells if "course" in c.metadata
    }
    n_code_exercises = sum(1 for c in code if BEGIN in c.source)
    assert len(checks) >= n_code_exercises, "every code exercise needs a check cell"
    assert all(": passed - " in line for line in checks), checks
    assert not exercises  # solutions carry no lesson metadata
    assert not any(o.output_type == "error" for c in code for o in c.outputs)


LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_check_cell_calls_the_checker_of_its_exercise(path):
    import ast

    import helpers.checks

    nb = nbformat.read(path, 4)
    numbers = [exercise_of(c) for c in nb.cells if c.cell_type == "code" and exercise_of(c)]
    checked = {}
    for cell in nb.cells:
        if check_of(cell):
            call = ast.parse(cell.source).body[0].value
            name = call.func.id if isinstance(call.func, ast.Name) else call.func.attr
            checked[check_of(cell)] = getattr(helpers.checks, name).exercise
    assert checked == {n: n for n in numbers}, "each code exercise has one check cell, calling its own checker"


def _pip_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


PIP_TO_CONDA = {"torch": "pytorch-cpu"}


def _split(req):
    name, spec = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", req).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_files_agree():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = {}
    pip_section = None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = _split(dep)
        conda[name] = spec
    assert pip_section == ["-e ."], "environment.yml must install the course package with `pip: [-e .]`"
    assert conda.pop("python").startswith("=3.1") and conda.pop("pip") == ""
    pip = {PIP_TO_CONDA.get(n, n): s for n, s in map(_split, _pip_requirements())}
    assert conda == pip, (
        f"only in environment.yml: {sorted(set(conda.items()) - set(pip.items()))}; "
        f"only in pyproject.toml: {sorted(set(pip.items()) - set(conda.items()))}"
    )


def test_no_exact_pins():
    for req in _pip_requirements():
        assert "==" not in req, f"{req}: use a range, not an exact pin"


def _readme_block(title, name="README.md"):
    text = (ROOT / name).read_text()
    section = text.split(title, 1)[1]
    return re.search(r"```(?:bash|sh)\n(.*?)```", section, re.S).group(1)


def test_ci_runs_the_readme_commands():
    block = [line for line in _readme_block("## Quick start").splitlines() if line and not line.startswith("#")]
    assert len(block) == 2, "the quick start is exactly two commands"
    install, test = block
    ci = (ROOT / ".ci" / "run").read_text()
    setup, opens = (part.strip() for part in install.split("&& .venv/bin/jupyter lab"))
    assert "--LabApp.default_url=/lab/tree/lessons" in opens and "lessons/" not in opens.split(), (
        "JupyterLab opens at the top of the course (lessons/ and solutions/ both visible), landing on lessons/"
    )
    assert setup in ci, f".ci/run must set up exactly as the README does: {setup}"
    assert test.strip() in ci
    assert "pip install torch==2.13.0" in setup and setup.index("torch==2.13.0") < setup.index('-e ".[dev]"')
    nbgrader = _readme_block("## Grading with nbgrader", "INSTRUCTORS.md").splitlines()[0]
    assert nbgrader in ci and ci.index(nbgrader) > ci.index(test.strip()), "CI installs nbgrader as the guide does"
    assert "tests/nbgrader_roundtrip.py" in ci
    bubblewrap = _readme_block("## Grading\n", "INSTRUCTORS.md").splitlines()[0]
    assert bubblewrap == "apt-get install -y bubblewrap", "the Grading section installs bubblewrap first"
    assert bubblewrap in ci and ci.index(bubblewrap) < ci.index(test.strip()), "CI grades contained, as the guide"
    # the website: installed, built and checked in Chromium as INSTRUCTORS.md says, after the test command
    site_install, site_build = _readme_block("## The website", "INSTRUCTORS.md").splitlines()[:2]
    assert site_install in ci and ci.index(site_install) > ci.index(test.strip())
    assert site_build == ".venv/bin/python -m helpers build-site _site"
    browser = _readme_block("**The browser check.**", "INSTRUCTORS.md").strip().splitlines()
    assert browser == ["apt-get install -y chromium", ".venv/bin/python tests/site_check.py"]
    for line in browser + [".venv/bin/python tests/wheel_check.py"]:
        assert line in ci and ci.index(line) > ci.index(site_install), f"CI runs `{line}` as INSTRUCTORS.md says"


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_code_and_notebooks_pass_ruff(command):
    # the whole repository: helpers, tests, benchmarks and the notebooks (ruff reads .ipynb)
    result = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
