"""Instructor tooling, apart from the mathematics the lessons import.

- :mod:`.build`: generate a lesson from its solution; :mod:`.sync`: ``lessons/`` against ``solutions/``, the
  ``python -m helpers build-lessons [--check] [--force]`` command;
- :mod:`.execution`: run notebooks in fresh kernels, store solution outputs (``execute-solutions``);
- :mod:`.grading`: grade learners' notebooks (``grade``), from :mod:`.submissions` (find them),
  :mod:`.rebuild` (copy their answers into the pristine lesson), :mod:`.runner` (run it, replay its
  checks), :mod:`.verdicts` (the grades) and :mod:`.reports` (table, CSV, JSON, feedback);
- :mod:`.sandbox`: contain the learner code a grading run executes (bubblewrap);
- :mod:`.replay`: record the checks in the grading kernel, replay them in the grader;
- :mod:`.nbgrader`: export an nbgrader course (``export-nbgrader``);
- :mod:`.notebook_io`: deterministic notebook reading and writing;
- :mod:`.cli`: the command line behind ``python -m helpers``.

The exercise format they share (labels, stubs, check lines, statuses, cell
metadata) is defined once, in :mod:`helpers.exercise_format`.
"""

import sys

# nbformat validates notebooks with jsonschema, which at import looks for rfc3987_syntax (installed here by
# JupyterLab's jupyter-events) to check "iri" strings, and that package builds its Earley parsers at import:
# 1.2 s of CPU at every start of every command, grading worker and pytest process (python-jsonschema/jsonschema
# issues 1392 and 1428). Notebook schemas have no "iri" fields, so the check is never used; keep it from being
# imported. pytest loads this module first (`-p helpers.tooling` in pyproject.toml), before nbval imports nbformat.
sys.modules.setdefault("rfc3987_syntax", None)
