"""Strict nbval on ``solutions/`` under several arithmetic paths: ``python -m benchmarks.arithmetic``.

The stored outputs are written natively on one machine, with whatever kernels torch and MKL pick for its CPU.
Another CPU picks others: torch's vectorised kernels by instruction set (``ATEN_CPU_CAPABILITY``: ``default``
is the plain, non-vectorised build, ``avx2``, ``avx512``), MKL's matrix products and vectorised ``exp`` and
``log`` by instruction set and vendor (``MKL_CBWR``: ``COMPATIBLE`` is its slow SSE2 branch). Setting these
variables on one machine runs the arithmetic another CPU would, so the strict comparison that passes under
every path here holds on other CPUs too; a cell whose numbers follow the arithmetic shows up as a failure.

Each path runs ``python -m pytest solutions`` (strict ``--nbval``, the suite's own settings) in a fresh
process with the variables set; the table lists, per path, the tests that passed and the cells that failed.
The exit status is 0 when every path passes. It takes about two minutes a path on two cores.
"""

import argparse
import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPABILITIES = ("native", "default", "avx2")
MKL_BRANCHES = ("native", "COMPATIBLE")


def paths():
    """``[(label, env)]``: every ``ATEN_CPU_CAPABILITY`` with every ``MKL_CBWR`` ("native" leaves it unset)."""
    out = []
    for capability, branch in itertools.product(CAPABILITIES, MKL_BRANCHES):
        env = {}
        if capability != "native":
            env["ATEN_CPU_CAPABILITY"] = capability
        if branch != "native":
            env["MKL_CBWR"] = branch
        label = f"ATEN_CPU_CAPABILITY={capability}, MKL_CBWR={branch}".replace("=native", " unset")
        out.append((label, env))
    return out


def run_path(env, targets=("solutions",)):
    """``(seconds, summary line, failed test ids)`` of strict nbval under ``env``."""
    full = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    full.update(env)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", *targets], cwd=ROOT, env=full, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    failed = sorted(set(re.findall(r"^FAILED (\S+)", plain, flags=re.M)))
    summary = [line.strip("= ") for line in plain.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return seconds, (summary[-1] if summary else "no summary"), failed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.arithmetic", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=["solutions"], help="what to test (default: solutions)")
    args = parser.parse_args(argv)
    status = 0
    for label, env in paths():
        seconds, summary, failed = run_path(env, args.targets)
        print(f"{label:<52}{summary} ({seconds:.0f} s)", flush=True)
        for test in failed:
            print(f"    failed: {test}")
        status |= bool(failed) or "passed" not in summary
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
