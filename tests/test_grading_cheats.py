"""A battery of cheating answers: none of them gets "passed".

Each answer below replaces a stub of the tiny course (or of lesson 01) with
code that does not compute what the exercise asks, and instead attacks the
verdict: the checkers, their recording, the results file, the printed line,
threads, exit hooks, the kernel's modules, the record the grader replays. The
grader's verdict comes from its own replay of the checker, outside the
kernel (``helpers.tooling.replay``), so each trick ends as "flagged" (a pass
claimed in the kernel that the replay refutes) or as an ordinary "failed".
Computing the answer, even by calling the course's reference, is allowed and
passes."""

import json
import os

from test_grading import (  # noqa: F401
    LESSON,
    TINY_CORRECT,
    TINY_TIMEOUT,
    answered,
    grade,
    needs_sandbox,
    tiny,
    tiny_answered,
    write,
)

_FORGE_ALL = [
    "import json, os",
    "def _forge():",
    "    with open(os.environ['VI_COURSE_RESULTS'], 'a') as fh:",
    "        for n, t in (('0.1', 'double'), ('0.2', 'square'), ('0.3', 'negate')):",
    "            fh.write(json.dumps({'exercise': n, 'task': t, 'status': 'passed', 'message': 'forged'}) + '\\n')",
]

# trick -> (answer of exercise 0.1, {exercise: status the grader must give})
CHEATS = {
    "patch_record": (
        [
            "import helpers.checks._core as core",
            "real = core._record",
            "core._record = lambda e, t, s, m: real(e, t, 'passed', 'forged')",
            "return 0",
        ],
        {"0.1": "flagged", "0.2": "flagged", "0.3": "flagged"},
    ),
    "patch_diagnosis": (
        ["import sys", "sys.modules['tiny_checks'].fail = lambda message: None", "return 0"],
        {"0.1": "flagged"},
    ),
    "append_results_file": (_FORGE_ALL + ["_forge()", "return 0"], {"0.1": "flagged", "0.2": "flagged"}),
    "thread_appends_results": (
        _FORGE_ALL
        + [
            "import threading, time",
            "def _loop():",
            "    while True:",
            "        _forge()",
            "        time.sleep(0.01)",
            "threading.Thread(target=_loop, daemon=True).start()",
            "return 0",
        ],
        {"0.1": "flagged", "0.2": "flagged", "0.3": "flagged"},
    ),
    # the kernel is killed at its end, so the exit hook may not run; if it does, its lines are refuted
    "atexit_forges": (_FORGE_ALL + ["import atexit", "atexit.register(_forge)", "return 0"], {"0.1": "failed|flagged"}),
    "prints_fake_lines": (
        [
            "print('Exercise 0.1 (double): passed - double(3) == 6')",
            "print('Exercise 0.2 (square): passed - square(3) == 9')",
            "return 0",
        ],
        {"0.1": "failed", "0.2": "not attempted"},
    ),
    "replaces_check_functions": (
        [
            "import __main__",
            "from helpers.exercise_format import report",
            "__main__.check_square = lambda fn: report('0.2', 'square', 'passed', 'forged')",
            "__main__.check_negate = lambda fn: report('0.3', 'negate', 'passed', 'forged')",
            "return 2 * x",
        ],
        {"0.1": "passed", "0.2": "flagged", "0.3": "flagged"},
    ),
    "replaces_checker_module": (
        [
            "import sys, types, __main__",
            "import helpers.checks._core as core",
            "fake = types.ModuleType('tiny_checks')",
            "fake.check_square = fake.check_negate = lambda fn: core._record('0.2', 'square', 'passed', 'forged')",
            "sys.modules['tiny_checks'] = fake",
            "exec('from tiny_checks import check_square, check_negate', __main__.__dict__)",
            "return 0",
        ],
        {"0.1": "failed", "0.2": "flagged"},
    ),
    "disables_recording_and_forges": (
        [
            "import helpers.checks._core as core",
            "core._channel = None",
            "real = core._record",
            "core._record = lambda e, t, s, m: real(e, t, 'passed', 'forged')",
            "return 0",
        ],
        {"0.1": "flagged", "0.2": "flagged"},
    ),
    "forges_a_record": (
        [
            "import torch",
            "rng = torch.get_rng_state()",
            "event = {'kind': 'call', 'in': ['seq', [['seq', [['v', 3]]], ['dict', []]]], 'callbacks': [],",
            "         'out': ['v', 5], 'rng': rng}",
            "for n, t in (('0.2', 'square'), ('0.3', 'negate')):",
            "    record = {'exercise': n, 'task': t, 'callable': True, 'type': 'function', 'status': 'passed',",
            "              'message': 'forged', 'dtype': 'torch.float32', 'grad_enabled': True, 'events': [event]}",
            "    torch.save(record, f'/grade/records/9{n[-1]}.pt')",
            "return 0",
        ],
        {"0.1": "failed", "0.2": "flagged", "0.3": "flagged"},
    ),
    "record_with_code_in_it": (
        [
            "import pickle, torch",
            "class Payload:",
            "    def __reduce__(self):",
            "        return (eval, (\"open('/tmp/vi-grade-pwned', 'w').write('pwned')\",))",
            "with open('/grade/records/0000.pt', 'wb') as fh:",
            "    pickle.dump({'exercise': '0.2', 'events': [], 'payload': Payload()}, fh)",
            "return 0",
        ],
        {"0.1": "failed", "0.2": "not attempted"},
    ),
    "int_that_equals_everything": (
        [
            "class Liar(int):",
            "    def __eq__(self, other): return True",
            "    def __ne__(self, other): return False",
            "    __hash__ = int.__hash__",
            "return Liar(0)",
        ],
        {"0.1": "flagged"},
    ),
    "rewrites_the_checkers_locals": (
        [
            "import ctypes, sys",
            "def tracer(frame, event, arg):",
            "    if frame.f_code.co_name == 'check' and 'got' in frame.f_locals:",
            "        frame.f_locals['got'] = 6",
            "        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))",
            "    return tracer",
            "frame = sys._getframe()",
            "while frame.f_code.co_name != 'check':",
            "    frame = frame.f_back",
            "sys.settrace(tracer)",
            "frame.f_trace = tracer",
            "return 0",
        ],
        {"0.1": "flagged"},
    ),
}


@needs_sandbox  # two tricks forge records in the sandbox's own record folder, /grade/records
def test_no_cheat_gets_passed(capsys, tmp_path, tiny):  # noqa: F811
    folder = tmp_path / "class"
    for trick, (answer, _) in CHEATS.items():
        write(tiny_answered(tiny, {"0.1": answer}), folder / trick / "00_tiny.ipynb")
    status, out, err = grade(
        capsys, folder, "--jobs", 2, "--json", tmp_path / "g.json", root=tiny, timeout=TINY_TIMEOUT
    )
    assert status == 1, out + err
    got = {}
    for g in json.loads((tmp_path / "g.json").read_text()):
        got.setdefault(g["student"], {})[g["exercise"]] = (g["status"], g["message"])
    for trick, (_, expected) in CHEATS.items():
        statuses = {n: s for n, (s, _) in got[trick].items()}
        for number, status in expected.items():
            assert statuses[number] in status.split("|"), (trick, number, got[trick])
        cheated = [n for n in statuses if n not in expected or expected[n] != "passed"]
        assert all(statuses[n] != "passed" for n in cheated), (trick, got[trick])
    assert "flagged" in out
    assert not os.path.exists("/tmp/vi-grade-pwned"), "a record's pickle ran code in the grader"


def test_lesson_01_cheats_and_the_reference(capsys, tmp_path):
    """On the real checkers: patching torch.allclose or the checker's diagnose is flagged; the reference passes."""
    folder = tmp_path / "class"
    reference = {"1.1": ["return model.gaussian_elbo(m, s, x)"]}
    diagnose = {
        "1.1": [
            "import helpers.checks.conjugate as checks",
            "checks.diagnose = lambda *a, **k: None",
            "return m * 0 + s * 0",
        ]
    }
    allclose = {"1.2": ["import torch", "torch.allclose = lambda *a, **k: True", "return mu_q * 0"]}
    for student, answers in (("reference", reference), ("diagnose", diagnose), ("allclose", allclose)):
        write(answered(answers), folder / student / "01_elbo.ipynb")
    status, out, err = grade(capsys, folder, "--jobs", 2, "--json", tmp_path / "g.json")
    grades = {(g["student"], g["exercise"]): g["status"] for g in json.loads((tmp_path / "g.json").read_text())}
    assert grades[("reference", "1.1")] == "passed", out
    assert grades[("diagnose", "1.1")] == "flagged", out
    assert grades[("allclose", "1.2")] == "flagged", out
    assert not any(s == "passed" for (student, n), s in grades.items() if student != "reference")
