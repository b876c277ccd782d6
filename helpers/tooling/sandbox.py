"""Contain learner code: the grading worker and its kernel run under bubblewrap.

What the contained processes see (Linux namespaces, through ``bwrap`` from
Debian's ``bubblewrap`` package):

- the system directories (``/usr``, ``/etc`` and the ``/lib`` links) and this
  Python and its environment, all read-only;
- a read-only copy of the ``helpers`` package (and of any extra checker
  module), made once per grading run, mounted at ``/course/lib``;
- the run's own folder, mounted at ``/grade``: the rebuilt notebook, and where
  the checks leave their results and records; a private ``/tmp`` (tmpfs, 512 MiB) as
  home;
- nothing else: not the submissions, not the course repository, not the
  folder the grader runs from, not the instructor's home. No network (a new
  network namespace with only loopback), a new PID namespace (every process
  an answer starts dies with it: the grader kills the sandbox and all of it is
  gone), a new session, ``--die-with-parent``.

Resources: ``RLIMIT_AS`` (memory, per process), ``RLIMIT_NPROC`` (processes
and threads), ``RLIMIT_FSIZE`` (size of a file written), no core files, set by
``prlimit``. A limit can only be lowered: under an address-space limit the grader
inherited (``ulimit -v``), the memory limit is clamped to it, and
:attr:`Sandbox.clamped` says so. When the grader runs as root, the contained processes run as an
unprivileged user id of their own (``setpriv``), without capabilities, so the
process limit applies (root is exempt from it) and the read-only mounts are
also read-only by permission. Otherwise ``bwrap --unshare-user`` runs them in
a user namespace of their own, where the process limit counts only them.

What it does not cover: disk space beyond one file's size in ``/grade``, CPU
time (the per-cell wall-clock limit is the grader's), the kernel's own attack
surface (a kernel exploit escapes any namespace), and reading what any user
may read in ``/usr`` and ``/etc``.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["Sandbox", "SandboxUnavailable", "INSTALL_HINT", "address_space_limit", "why_unavailable"]

INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap)"
GRADE_DIR = "/grade"  # the run's folder, as the contained processes see it
LIB_DIR = "/course/lib"  # the read-only copy of the helpers package
_SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_GB = 1 << 30
_uid_lock = threading.Lock()
_uid_next = [0]


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create the namespaces here."""


def _copy_package(dest, extra_modules):
    import helpers

    src = Path(helpers.__file__).resolve().parent
    shutil.copytree(src, dest / "helpers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for module in extra_modules:
        shutil.copy(module, dest / Path(module).name)
    for path in [dest, *dest.rglob("*")]:  # readable by the unprivileged user the contained code runs as
        path.chmod(0o755 if path.is_dir() else 0o644)


def address_space_limit():
    """The hard address-space limit (``RLIMIT_AS``, what ``ulimit -v`` sets) this process inherited, in bytes;
    None when there is none. No process it starts can be given more: ``prlimit`` cannot raise it."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    return None if hard == resource.RLIM_INFINITY else hard


class Sandbox:
    """One grading run's containment: a read-only course copy and the command line that wraps a worker.

    ``memory``: bytes of address space per process, clamped to the limit this
    process inherited (:func:`address_space_limit`; ``clamped`` is then the
    amount asked for, else None); ``processes``: processes and threads at once;
    ``file_size``: bytes of one written file.
    """

    def __init__(self, extra_modules=(), memory=8 << 30, processes=512, file_size=256 << 20):
        self.bwrap = shutil.which("bwrap")
        self.setpriv, self.prlimit = shutil.which("setpriv"), shutil.which("prlimit")
        if not self.bwrap:
            raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
        if not self.prlimit or (os.geteuid() == 0 and not self.setpriv):
            raise SandboxUnavailable("prlimit and setpriv (util-linux) are needed to bound the contained processes")
        self.root = os.geteuid() == 0
        self.version = _version(self.bwrap)
        inherited = address_space_limit()
        self.clamped = memory if inherited is not None and memory > inherited else None
        self.memory, self.processes, self.file_size = min(memory, inherited or memory), processes, file_size
        self._staging = tempfile.TemporaryDirectory(prefix="vi-grade-course-")
        self.lib = Path(self._staging.name) / "lib"
        self.lib.mkdir()
        _copy_package(self.lib, extra_modules)
        Path(self._staging.name).chmod(0o755)
        self._probe()

    def close(self):
        self._staging.cleanup()

    def _uid(self):
        """An unprivileged user id for one contained run (root only): its process limit is its own."""
        with _uid_lock:
            _uid_next[0] += 1
            return 200_000 + (os.getpid() % 100_000) * 64 + _uid_next[0] % 64

    def prepare(self, run_dir):
        """Make ``run_dir`` writable by the contained run; return the uid it will run as (or None)."""
        uid = self._uid() if self.root else None
        run_dir = Path(run_dir)
        if uid is not None:
            for path in [run_dir, *run_dir.rglob("*")]:
                os.chown(path, uid, uid, follow_symlinks=False)
        return uid

    def command(self, run_dir, argv, env, uid=None):
        """The command line that runs ``argv`` contained, with ``run_dir`` as ``/grade`` and ``env`` only."""
        args = [self.bwrap, "--die-with-parent", "--new-session"]
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.root:
            args += ["--unshare-user"]
            if self.version >= (0, 8):
                args += ["--disable-userns"]  # and no further user namespace inside
        for top in _SYSTEM:
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        # /proc, /dev and the private /tmp first: a later --tmpfs /tmp would hide a course or virtual environment
        # that lives under /tmp (a fresh clone in a temporary folder), bound below
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "01777", "--size", str(512 << 20), "--tmpfs", "/tmp"]
        made = {"/tmp", "/proc", "/dev"}
        for path in sorted(_python_paths()):
            for parent in reversed(Path(path).parents[:-1]):  # traversable by the contained user, emptied
                if str(parent) not in made and not any(str(parent).startswith(t) for t in _SYSTEM):
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", path, path]
        args += ["--perms", "0755", "--dir", "/course", "--ro-bind", str(self.lib), LIB_DIR]
        args += ["--bind", str(run_dir), GRADE_DIR]
        args += ["--chdir", GRADE_DIR, "--clearenv"]
        python_bin = str(Path(sys.executable).parent)
        base = {
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONPATH": LIB_DIR,
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "JUPYTER_RUNTIME_DIR": "/tmp/jupyter",
            "JUPYTER_PLATFORM_DIRS": "1",
            "IPYTHONDIR": "/tmp/ipython",
            "MPLCONFIGDIR": "/tmp/matplotlib",
        }
        for key, value in {**base, **env}.items():
            args += ["--setenv", key, value]
        args += ["--"]
        if uid is not None:
            args += [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
            args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        args += [self.prlimit, f"--as={self.memory}", f"--nproc={self.processes}"]
        args += [f"--fsize={self.file_size}", "--core=0", "--"]
        return args + list(argv)

    def _probe(self):
        """Run one contained command; raise :class:`SandboxUnavailable` with bwrap's own words if it fails."""
        with tempfile.TemporaryDirectory(prefix="vi-grade-probe-") as tmp:
            uid = self.prepare(tmp)
            code = "import helpers.exercise_format, socket; open('/grade/ok', 'w').write('ok')"
            try:
                done = subprocess.run(
                    self.command(tmp, [sys.executable, "-c", code], {}, uid),
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SandboxUnavailable(f"bubblewrap could not start ({exc})") from None
            if done.returncode != 0 or not (Path(tmp) / "ok").exists():
                words = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
                inherited = address_space_limit()
                if inherited is not None:  # the contained kernel gets no more than this process may use
                    words += f"; this process has an address-space limit (ulimit -v) of {inherited / _GB:.3g} GB"
                raise SandboxUnavailable(f"bubblewrap is installed but failed here ({words})")


def why_unavailable():
    """Why learner code cannot be contained on this machine (bubblewrap missing, or unable to create its
    namespaces here), in bwrap's or our words; None when it can. Starts one contained probe."""
    try:
        Sandbox().close()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


def _version(bwrap):
    try:
        words = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.split()
        return tuple(int(p) for p in words[-1].split(".")[:2])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return (0, 0)


def _python_paths():
    """The folders this Python needs, read-only: its installation and its environment (the venv)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(str(Path(sys.executable).resolve().parent.parent))
    paths = {os.path.realpath(p) for p in paths} | {p for p in paths}
    # never a parent of another: bind each tree once, outermost first
    keep = sorted(p for p in paths if os.path.isdir(p))
    return [p for p in keep if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in keep)]
