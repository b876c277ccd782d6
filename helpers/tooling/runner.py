"""Run one rebuilt notebook, contained, and collect what its checks left: claims and the grader's replay.

A *worker* process (``python -m helpers.tooling.runner NOTEBOOK TIMEOUT``, under the
:class:`~.sandbox.Sandbox` unless grading uncontained) executes the notebook in a fresh kernel with a
wall-clock limit per cell. A first cell installs the recorder of :mod:`.replay`, so each check leaves a
record; the kernel's results file holds what the checks *claimed*. After the run, every process of it is
killed, and the :class:`ReplayServer` replays the records with the grader's own checkers, outside the
kernel.
"""

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..exercise_format import FLAGGED, RESULTS_ENV

__all__ = ["Settings", "ReplayServer", "shared_replay_server", "run"]

_DIED = 3  # worker exit status: the kernel died
_CELL_TIMEOUT = 4  # worker exit status: a cell ran past the limit
# These limits only catch a process that hangs; a verdict must never depend on how loaded the machine is, so
# each is far above the cost it bounds on a machine loaded ten times over (load 20 on 2 cores).
_STARTUP = 300  # seconds the worker may spend outside cells (kernel start, shutdown: 5 s at idle)
_REPLAY_START = 120  # seconds for the replay server to start (torch and the checkers: 3 s at idle) ...
_REPLAY_PER_CHECK = 60  # ... and for each check it replays (a checker answers in under 2 s at idle)
_RECORDS = "records"
# The recorder's cell is the grader's, not the learner's: it imports torch (1.5 s at idle, 15 s at load 20), so
# it gets the start-up allowance, and the per-cell limit bounds only the notebook's own cells.
_RECORDER_ID = "vi-grade-recorder"


@dataclass
class Settings:
    """How to run: the per-cell ``timeout``, OpenMP ``threads``, the :class:`~.sandbox.Sandbox` (None:
    uncontained) and extra checker modules (``checks``, file paths) for the replay."""

    timeout: float = 300
    threads: int | None = None
    sandbox: object = None
    checks: tuple = ()
    replayer: object = None


def _record_cell(folder):
    from nbformat.v4 import new_code_cell

    code = f"import helpers.tooling.replay as _vi_grade\n_vi_grade.install({str(folder)!r})\ndel _vi_grade"
    return new_code_cell(code, id=_RECORDER_ID)


def _kill_tree(proc):
    """Kill a worker's process group and, uncontained, every process it started that is still its descendant."""
    try:
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        children = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in children:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            child.kill()
        except Exception:
            pass


def run(nb, settings):
    """Execute ``nb`` (contained unless ``settings.sandbox`` is None); ``(claims, replays, ended)``.

    ``ended`` is "ok", "timeout" or "died". ``claims`` maps an exercise number
    to the statuses the kernel's results file reports; ``replays`` is the
    grader's own replay of each recorded check (:mod:`.replay`).
    """
    from .notebook_io import write_notebook
    from .sandbox import GRADE_DIR

    timeout = settings.timeout
    with tempfile.TemporaryDirectory(prefix="vi-grade-") as tmp:
        tmp = Path(tmp)
        (tmp / _RECORDS).mkdir()
        inside = Path(GRADE_DIR) if settings.sandbox else tmp
        nb.cells.insert(0, _record_cell(inside / _RECORDS))
        write_notebook(nb, tmp / "submission.ipynb")
        (tmp / "results.jsonl").touch()
        env = {RESULTS_ENV: str(inside / "results.jsonl")}
        if settings.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(settings.threads)
        argv = [sys.executable, "-m", "helpers.tooling.runner", str(inside / "submission.ipynb"), repr(float(timeout))]
        if settings.sandbox:
            uid = settings.sandbox.prepare(tmp)
            command, cwd = settings.sandbox.command(tmp, argv, env, uid), "/"
            full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            command, cwd, full_env = argv, tmp, dict(os.environ, **env)
            extra = [str(Path(m).resolve().parent) for m in settings.checks]  # the extra checkers, importable
            full_env["PYTHONPATH"] = os.pathsep.join(extra + [p for p in [os.environ.get("PYTHONPATH")] if p])
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # The worker enforces the limit cell by cell; this outer limit only catches a worker that hangs.
        cells = sum(cell.cell_type == "code" for cell in nb.cells)
        try:
            code = proc.wait(timeout=timeout * (cells + 1) + 2 * _STARTUP)
            ended = "ok" if code == 0 else ("timeout" if code == _CELL_TIMEOUT else "died")
        except subprocess.TimeoutExpired:
            ended = "timeout"
        _kill_tree(proc)  # contained: the sandbox's PID namespace, and all in it, goes with it
        proc.wait()
        claims = _read_claims(tmp / "results.jsonl")
        replays = settings.replayer.replay(tmp / _RECORDS)
    return claims, replays, ended


def _read_claims(path):
    claims = {}
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            text = fh.read(64 << 20).decode("utf-8", errors="replace")
    except OSError:
        return claims
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            claims.setdefault(str(entry["exercise"]), []).append(str(entry["status"]))
        except (ValueError, KeyError, TypeError):
            continue
    return claims


class ReplayServer:
    """The grader's replay (:mod:`.replay`), in one process of its own for a whole grading run.

    It runs no learner code, only the grader's checkers on the records, and imports torch and the checkers
    once. Requests are served one at a time; one that takes longer than its limit costs the server its life
    (a fresh one starts for the next) and its exercises are flagged.
    """

    def __init__(self, checks):
        self.checks, self.proc = [str(c) for c in checks], None
        self.lock = threading.Lock()

    def _start(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env.pop(RESULTS_ENV, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.tooling.replay", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def replay(self, folder):
        records = len(list(folder.glob("*.pt")))
        if not records:
            return []
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                self.proc.stdin.write((json.dumps({"folder": str(folder), "checks": self.checks}) + "\n").encode())
                self.proc.stdin.flush()
                ready, _, _ = select.select([self.proc.stdout], [], [], _REPLAY_START + _REPLAY_PER_CHECK * records)
                if not ready:
                    raise TimeoutError
                out = json.loads(self.proc.stdout.readline().decode("utf-8", errors="replace"))
                return out if isinstance(out, list) else []
            except (OSError, ValueError, TimeoutError):
                self.close()
                return [{"exercise": None, "status": FLAGGED, "message": "the grader's replay of its checks failed"}]

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


_SHARED = {}


def shared_replay_server(checks=()):
    """The process's :class:`ReplayServer` for these extra ``checks``, started on first use, closed at exit.

    It runs no learner code, only the grader's checkers on records, so one server can serve every
    ``grade`` call of a process (a test session makes dozens): each start costs torch's import.
    """
    key = tuple(str(c) for c in checks)
    if key not in _SHARED:
        _SHARED[key] = ReplayServer(checks)
        atexit.register(_SHARED[key].close)
    return _SHARED[key]


def _worker(path, timeout):
    """Entry point of the worker process: run one notebook with ``timeout`` seconds per cell.

    Exits 3 if its kernel died, 4 if a cell ran past the limit; in both cases
    nbclient has shut the kernel down (killed it) before the worker exits.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from .execution import execute_notebook
    from .notebook_io import read_notebook

    nb = read_notebook(path)

    def limit(cell):
        return max(timeout, _STARTUP) if cell.get("id") == _RECORDER_ID else timeout

    try:
        # the grade reads the results file and the records, never the outputs: no figure is rendered
        execute_notebook(nb, cwd=Path(path).parent, timeout=limit, allow_errors=True, figures=False)
    except DeadKernelError:
        sys.exit(_DIED)
    except CellTimeoutError:
        sys.exit(_CELL_TIMEOUT)


if __name__ == "__main__":
    _worker(sys.argv[1], float(sys.argv[2]))
