"""`python -m benchmarks` runs: its rows measure both implementations and its CLI rejects bad options.
(The numbers themselves are for the issue notes and the README, not asserted here: no timed tests.)"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import benchmarks.svi as svi_module
from benchmarks.__main__ import main
from benchmarks.svi import ELBO_TOLERANCE, _alternate, logistic_regression_row, vae_row

ROOT = Path(__file__).resolve().parents[1]


def test_rows_report_times_and_elbos_for_both_implementations():
    for row in (logistic_regression_row(steps=5), vae_row(epochs=1)):
        assert set(row) - {"floor_seconds"} == {
            "name",
            "kind",
            "course_seconds",
            "pyro_seconds",
            "course_elbo",
            "pyro_elbo",
        }
        assert row["kind"] in ELBO_TOLERANCE
        assert row["course_seconds"] > 0 and row["pyro_seconds"] > 0
        assert row["course_elbo"] < 0 and row["pyro_elbo"] < 0
    assert row["floor_seconds"] > 0  # measured, not compared: no timed assertions


def test_logistic_regression_row_reaches_the_same_elbo():
    row = logistic_regression_row(steps=200)  # 200 of the 2000 steps: the two paths are step by step the same
    assert abs(row["course_elbo"] - row["pyro_elbo"]) < 1.0, row  # the same optimiser on the same objective


def test_alternating_timing_leaves_each_side_its_own_random_stream():
    draws = {"course": [], "pyro": [], "floor": []}
    torch.manual_seed(3)
    seconds = _alternate(
        {name: (lambda _, name=name: draws[name].append(torch.randn(2))) for name in draws}, steps=25, chunk=4
    )
    torch.manual_seed(3)
    alone = [torch.randn(2) for _ in range(25)]  # what each side draws when it runs by itself
    for name in draws:
        torch.testing.assert_close(torch.stack(draws[name]), torch.stack(alone))
    assert set(seconds) == set(draws) and all(s > 0 for s in seconds.values())


def _fake_row(kind, course_ms, pyro_ms, course_elbo, pyro_elbo):
    return lambda **_: {
        "name": kind,
        "kind": kind,
        "course_seconds": course_ms / 1e3,
        "pyro_seconds": pyro_ms / 1e3,
        "course_elbo": course_elbo,
        "pyro_elbo": pyro_elbo,
    }


def test_cli_exit_status_names_each_criterion_that_fails(monkeypatch, capsys):
    monkeypatch.setattr(
        svi_module, "logistic_regression_row", _fake_row("logistic regression", 1.0, 3.0, -58.16, -58.17)
    )
    monkeypatch.setattr(svi_module, "vae_row", _fake_row("digits VAE", 1.5, 2.5, -97.8, -97.1))
    assert main(["--skip-notebooks"]) == 0  # ratios 0.33 and 0.60, ELBOs within tolerance
    assert "not met" not in capsys.readouterr().out

    monkeypatch.setattr(svi_module, "vae_row", _fake_row("digits VAE", 5.0, 8.0, -97.8, -101.0))
    assert main(["--skip-notebooks"]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("not met")]
    assert failed == [
        "not met: digits VAE: ratio 0.62 > 0.6",
        "not met: digits VAE: final ELBOs 3.20 apart (> 2.0, not equal)",
    ]


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--threads", "0", "--skip-notebooks"])
    assert exit_info.value.code == 2 and "must be positive" in capsys.readouterr().err


def test_cli_help_runs_from_the_repository_root():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--skip-notebooks" in out.stdout


def test_successor_study_writes_the_table_lesson_08_reads(tmp_path, capsys):
    from benchmarks import successors
    from helpers.semi_implicit_fits import read_study

    out = tmp_path / "study.csv"
    assert (
        successors.main(
            [
                "--seeds",
                "2",
                "--steps",
                "2",
                "--K",
                "50",
                "--grid",
                "10",
                "--jobs",
                "1",
                "--targets",
                "Gaussian mixture",
                "--methods",
                "SIVI;RealNVP",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = read_study(out)  # a run of other than 5000 updates names its length
    assert set(table) == {("Gaussian mixture", "SIVI (2 updates)"), ("Gaussian mixture", "RealNVP (2 updates)")}
    row = table[("Gaussian mixture", "SIVI (2 updates)")]
    assert row["seed"] == [0.0, 1.0] and all(kl >= -1e-6 for kl in row["kl_qp"] + row["kl_pq"])
    assert all(0 <= w <= 1 for w in row["right_mode_weight"])
    argv = ["--seeds", "1", "--steps", "3", "--K", "50", "--grid", "10", "--jobs", "1", "--targets", "X shape"]
    assert successors.main([*argv, "--methods", "RealNVP", "--out", str(out), "--merge"]) == 0
    merged = read_study(out)  # --merge keeps the earlier rows and adds the new ones
    assert set(merged) == set(table) | {("X shape", "RealNVP (3 updates)")}
    assert merged[("Gaussian mixture", "SIVI (2 updates)")] == row
    methods = {(t, m) for t, m, _ in successors._configurations(["banana", "Gaussian mixture", "X shape"])}
    assert len(methods) == 18 and ("Gaussian mixture", "KSIVI (RBF, no annealing)") in methods
    with pytest.raises(SystemExit):
        successors.main(["--seeds", "0"])
    assert "must be positive" in capsys.readouterr().err


def test_vae_plateau_study_writes_the_table_lesson_07_reads(tmp_path, capsys):
    import csv

    from benchmarks import semi_implicit_vae

    out = tmp_path / "vae.csv"
    assert semi_implicit_vae.main(["--seeds", "1", "--epochs", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out, newline="")))
    assert [(r["model"], r["epoch"]) for r in rows] == [("Gaussian", "2"), ("semi-implicit", "2")]
    assert list(rows[0]) == semi_implicit_vae.COLUMNS
    assert rows[0]["psi_share"] == "" and 0 <= float(rows[1]["psi_share"]) < 1
    for r in rows:  # a bound on log p(x) of 64 pixel counts: finite and negative
        assert -1e4 < float(r["test_bound"]) < 0 and -1e4 < float(r["val_bound"]) < 0
    with pytest.raises(SystemExit):
        semi_implicit_vae.main(["--epochs", "0"])


def test_logistic_study_scores_fits_against_hmc(tmp_path, capsys):
    import csv

    from benchmarks import successors_logistic

    out = tmp_path / "logistic.csv"
    args = ["--seeds", "1", "--steps", "4", "--jobs", "1", "--methods", "RealNVP", "--out", str(out)]
    assert successors_logistic.main(args) == 0
    (row,) = list(csv.DictReader(open(out, newline="")))
    assert row["method"] == "RealNVP" and row["steps"] == "4" and row["elbo_upper"] == ""
    assert float(row["sd_ratio_min"]) <= float(row["sd_ratio_median"]) <= float(row["sd_ratio_max"])
    _, reference = successors_logistic.posterior()
    assert successors_logistic.moment_errors(reference, reference) == (0.0, 1.0, 1.0, 1.0, 0.0)
    from helpers.semi_implicit_fits import read_study

    assert read_study(out)["RealNVP"]["steps"] == [4.0]  # what lesson 08 reads
    shifted = successors_logistic.moment_errors(reference + 0.5 * reference.std(0), reference)
    assert shifted[0] == pytest.approx(0.5, rel=1e-4) and shifted[4] < 1e-5  # a shift moves means only
    with pytest.raises(SystemExit):
        successors_logistic.main(["--methods", "HMC"])


def test_arithmetic_paths_cover_every_kernel_choice_and_report_failed_cells(monkeypatch, capsys):
    from benchmarks import arithmetic

    envs = [env for _, env in arithmetic.paths()]
    assert len(envs) == 6 and len({tuple(sorted(e.items())) for e in envs}) == 6
    assert {} in envs and {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"} in envs

    def fake_run(env, targets):
        failed = ["solutions/05_vae.ipynb::Cell 11"] if env.get("ATEN_CPU_CAPABILITY") == "avx2" else []
        return 1.0, f"{len(failed)} failed, 9 passed" if failed else "9 passed", failed

    monkeypatch.setattr(arithmetic, "run_path", fake_run)
    assert arithmetic.main([]) == 1
    out = capsys.readouterr().out
    assert out.count("failed: solutions/05_vae.ipynb::Cell 11") == 2 and "MKL_CBWR unset" in out


def test_the_stored_2d_sivi_seeds_are_what_the_study_writes():
    """Lesson 06 reads helpers/data/sivi_2d_seeds.csv: every target, five seeds, the study's columns, sandwiches
    whose upper bound is above the lower one (the study itself takes 40 s: run it with python -m
    benchmarks.sivi_2d_seeds)."""
    import csv

    from benchmarks.sivi_2d_seeds import COLUMNS
    from helpers.datasets import DATA_DIR
    from helpers.targets import TARGETS

    with open(DATA_DIR / "sivi_2d_seeds.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert sorted((r["target"], int(r["seed"])) for r in rows) == sorted(
        (t, s) for t in TARGETS for s in range(100, 105)
    )
    assert all(float(r["lower"]) <= float(r["upper"]) + 1e-3 for r in rows)
