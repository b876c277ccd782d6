"""`python -m benchmarks` runs: its rows measure both implementations and its CLI rejects bad options.
(The numbers themselves are for the issue notes and the README, not asserted here: no timed tests.)"""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.svi import logistic_regression_row, vae_row

ROOT = Path(__file__).resolve().parents[1]


def test_rows_report_times_and_elbos_for_both_implementations():
    for row in (logistic_regression_row(steps=5), vae_row(epochs=1)):
        assert set(row) == {"name", "course_seconds", "pyro_seconds", "course_elbo", "pyro_elbo"}
        assert row["course_seconds"] > 0 and row["pyro_seconds"] > 0
        assert row["course_elbo"] < 0 and row["pyro_elbo"] < 0


def test_logistic_regression_row_reaches_the_same_elbo():
    row = logistic_regression_row(steps=600)
    assert abs(row["course_elbo"] - row["pyro_elbo"]) < 1.0, row  # the same optimiser on the same objective


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--threads", "0", "--skip-notebooks"])
    assert exit_info.value.code == 2 and "must be positive" in capsys.readouterr().err


def test_cli_help_runs_from_the_repository_root():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--skip-notebooks" in out.stdout
