"""The README's test command, timed: ``python -m benchmarks --tests``.

It runs ``python -m pytest`` from the repository root exactly as the README
says (plus ``--durations=10``, which only adds a report) and returns the wall
time, the exit status and pytest's ten slowest tests.
"""

import re
import subprocess
import sys
import time

__all__ = ["time_test_command"]


def time_test_command(root):
    """``(seconds, exit_status, slowest)``; ``slowest`` holds pytest's ``--durations`` lines."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--durations=10"], cwd=root, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    slowest = [line.strip() for line in result.stdout.splitlines() if re.match(r"^\s*\d+\.\d+s (call|setup)", line)]
    summary = [line for line in result.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return seconds, result.returncode, slowest, (summary[-1].strip("= ") if summary else "no summary")
