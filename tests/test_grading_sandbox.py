"""Containment: an answer cannot touch the instructor's files, reach the network, or outlive its grade.

The hostile answers report what they managed through their own verdict: each
returns the right value only when its attack failed, so "passed" means the
sandbox held, seen from inside."""

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys

from test_grading import TINY_CORRECT, TINY_TIMEOUT, grade, needs_sandbox, tiny, tiny_answered, write  # noqa: F401

HOSTILE = [  # returns the right value only if it saw no submission and changed nothing outside its own space
    "import os",
    "seen, changed = [], []",
    "def mine(path):",
    "    return path.startswith(('/grade/', '/tmp/'))",
    "for top in ('/', os.path.expanduser('~')):",
    "    for folder, dirs, files in os.walk(top):",
    "        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in ('/proc', '/sys', '/dev')]",
    "        for name in files:",
    "            path = os.path.join(folder, name)",
    "            if not name.endswith('.ipynb') or mine(path):",
    "                continue",
    "            if name == '00_tiny.ipynb':",
    "                seen.append(path)",
    "            for attempt in ('overwrite', 'beside', 'delete'):",
    "                try:",
    "                    if attempt == 'overwrite':",
    "                        open(path, 'a').close()",
    "                    elif attempt == 'beside':",
    "                        open(path + '.evil', 'w').write('evil')",
    "                    else:",
    "                        os.remove(path)",
    "                    changed.append(path)",
    "                except OSError:",
    "                    pass",
    "for pid in os.listdir('/proc'):",  # the folders other processes run in: only the sandbox's own are visible
    "    try:",
    "        cwd = os.readlink(f'/proc/{pid}/cwd')",
    "        if not mine(cwd + '/'):",
    "            open(os.path.join(cwd, 'evil.txt'), 'w').write('evil')",
    "            changed.append(cwd)",
    "    except OSError:",
    "        pass",
    "return 2 * x if not seen and not changed else -1",
]


def _network(port):
    return [
        "import socket",
        "reached = []",
        f"for host, port in (('127.0.0.1', {port}), ('10.0.0.1', 80), ('1.1.1.1', 53)):",
        "    try:",
        "        socket.create_connection((host, port), timeout=1).close()",
        "        reached.append(host)",
        "    except OSError:",
        "        pass",
        "return x * x if not reached else 0",
    ]


MEMORY_HOG = ["block = bytearray(3 << 30)", "return -x"]


def _snapshot(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@needs_sandbox
def test_answers_cannot_touch_files_or_network_and_memory_is_bounded(capsys, tmp_path, tiny, monkeypatch):  # noqa: F811
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    folder = tmp_path / "class"
    answers = {"0.1": HOSTILE, "0.2": _network(port), "0.3": MEMORY_HOG}
    write(tiny_answered(tiny, answers), folder / "mallory" / "00_tiny.ipynb")
    for student in ("alice", "bob"):
        write(tiny_answered(tiny, TINY_CORRECT), folder / student / "00_tiny.ipynb")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    before = _snapshot(tmp_path)
    course_before = _snapshot(tiny)
    status, out, err = grade(
        capsys, folder, "--jobs", 2, "--memory", 2, "--json", tmp_path / "g.json", root=tiny, timeout=TINY_TIMEOUT
    )
    grades = {(g["student"], g["exercise"]): g for g in json.loads((tmp_path / "g.json").read_text())}
    (tmp_path / "g.json").unlink()
    assert out.splitlines()[0].startswith("contained: bubblewrap"), out
    assert grades[("mallory", "0.1")]["status"] == "passed", grades[("mallory", "0.1")]  # found nothing to touch
    assert grades[("mallory", "0.2")]["status"] == "passed", grades[("mallory", "0.2")]  # reached no host
    assert grades[("mallory", "0.3")]["status"] == "failed"
    assert "MemoryError" in grades[("mallory", "0.3")]["message"]
    assert all(grades[(s, n)]["status"] == "passed" for s in ("alice", "bob") for n in ("0.1", "0.2", "0.3"))
    assert _snapshot(tmp_path) == before  # every file byte-identical, nothing new
    assert _snapshot(tiny) == course_before
    try:
        server.accept()
        raise AssertionError("an answer connected to the grader's machine")
    except BlockingIOError:
        pass
    finally:
        server.close()


def test_without_bubblewrap_the_first_line_says_so_and_nothing_runs(capsys, tmp_path, tiny, monkeypatch):  # noqa: F811
    sub = write(tiny_answered(tiny, TINY_CORRECT), tmp_path / "s" / "00_tiny.ipynb")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no bwrap on the PATH
    status, out, err = grade(capsys, sub, root=tiny, timeout=TINY_TIMEOUT, fallback=False)
    assert status == 2 and out == ""
    first = err.splitlines()[0]
    assert "cannot contain learner code" in first and "bubblewrap" in first and "--no-sandbox" in first
    assert err.count("\n") == 1


def test_no_sandbox_runs_uncontained_and_says_so_first(capsys, tmp_path, tiny):  # noqa: F811
    sub = write(tiny_answered(tiny, TINY_CORRECT), tmp_path / "s" / "00_tiny.ipynb")
    status, out, err = grade(capsys, sub, "--no-sandbox", root=tiny, timeout=TINY_TIMEOUT)
    assert status == 0, out + err
    assert out.splitlines()[0].startswith("WARNING: grading WITHOUT containment")
    assert "3 of 3 exercises passed" in out
    assert os.listdir(tmp_path / "s") == ["00_tiny.ipynb"]


def _grade_under_address_space_limit(tiny, sub, limit_kib, *args):  # noqa: F811
    """``python -m helpers grade`` in a process started under ``ulimit -v limit_kib`` (soft and hard)."""

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_kib << 10, limit_kib << 10))

    command = [sys.executable, "-m", "helpers", "--root", str(tiny), "grade", str(sub)]
    command += ["--checks", str(tiny / "tiny_checks.py"), "--timeout", str(TINY_TIMEOUT), *args]
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limited, check=False)


@needs_sandbox
def test_memory_is_clamped_to_an_inherited_address_space_limit(tmp_path, tiny):  # noqa: F811
    # Under `ulimit -v 6000000` (5.7 GB) the default --memory 8 cannot be set (a limit can only be lowered): the
    # grader once reported that as bubblewrap failing. It clamps the limit, says so, and grades.
    sub = write(tiny_answered(tiny, TINY_CORRECT), tmp_path / "s" / "00_tiny.ipynb")
    done = _grade_under_address_space_limit(tiny, sub, 6_000_000)
    first = done.stdout.splitlines()[0] if done.stdout else ""
    assert done.returncode == 0, done.stdout + done.stderr
    assert first.startswith("contained: bubblewrap") and "5.72 GB per process" in first, first
    assert "--memory 8 is above the address-space limit" in first and "ulimit -v" in first, first
    assert "3 of 3 exercises passed" in done.stdout


def test_an_address_space_limit_too_small_to_grade_is_named(tmp_path, tiny):  # noqa: F811
    sub = write(tiny_answered(tiny, TINY_CORRECT), tmp_path / "s" / "00_tiny.ipynb")
    done = _grade_under_address_space_limit(tiny, sub, 400_000)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert "ulimit -v" in done.stderr and "0.381 GB" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "install" not in done.stderr  # bubblewrap is not what is missing
