"""The checker machinery: run a learner's function safely, print one line, record it.

A checker never raises. It returns a :class:`CheckResult`, true when the
exercise passed, and prints exactly one
line, which either passes or names the exercise and what is wrong. A stub that
still raises ``NotImplementedError`` reads "not attempted yet".

Every result is appended to :data:`RESULTS` and, when the environment variable
``VI_COURSE_RESULTS`` names a file, written there as one JSON object per line
(``{"exercise", "task", "status", "message"}``) for a grading tool to collect.
"""

import functools
import inspect
import math
import time
import zlib

import torch

from ..estimators import standard_error
from ..exercise_format import (
    ERROR,
    FAILED,
    NOT_ATTEMPTED,
    NOT_ATTEMPTED_ADVICE,
    PASSED,
    RESULTS_ENV,
    check_line,
    is_stub_message,
    report,
)

__all__ = [
    "RESULTS",
    "RESULTS_ENV",
    "CheckResult",
    "checker",
    "fail",
    "call_learner",
    "learner_grad",
    "learner_backward",
    "expect_gradient",
    "results",
    "require",
]

RESULTS = []  # dicts, in the order the checks ran in this kernel
CHECKERS = {}  # exercise number -> its checker, for the grader's replay (helpers.tooling.replay)
# Grading only (None in a notebook): the recorder of helpers.tooling.replay in the grading kernel, or its
# replayer in the grader, which sees every check and every crossing into the learner's code.
_channel = None


class Mistake(Exception):
    """Raised inside a checker body to report what is wrong with the answer."""


class _NotAttempted(Exception):
    pass


def fail(message):
    """Stop the check and report ``message`` as the diagnosis."""
    raise Mistake(message)


_INPLACE = (
    "your function changes a tensor in place that autograd still needs for the gradient (an operation such as "
    "`x += ...`, `x[i] = ...`, `x.clamp_(...)` or another method ending in `_`); write `x = x + ...` instead, "
    "which makes a new tensor"
)


def _learner_error(exc, during=""):
    """A diagnosis for an exception raised by the learner's code (or by autograd inside the learner's graph)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "modified by an inplace operation" in text or "leaf Variable that requires grad" in text:
        return Mistake(_INPLACE + during)
    if "does not require grad and does not have a grad_fn" in text:
        return Mistake(
            "no gradient flows through your result: later cells differentiate through this function, so compute "
            "it with torch operations on the inputs (no .item(), float(), .detach(), NumPy or torch.tensor(...) "
            "of computed values)" + during
        )
    hint = ""
    if isinstance(exc, SystemExit):  # sys.exit() or exit() in an answer: it raised, like any other error
        hint = " (sys.exit() or exit() ends the program; a function returns its result instead)"
    if "only one element tensors can be converted" in text or "must be real number, not Tensor" in text:
        hint = " (use torch.log, torch.exp, torch.sqrt on tensors, not math.log, math.exp, math.sqrt)"
    what = "your function raised" if not during else "taking the gradient through your function raised"
    return Mistake(f"{what} {type(exc).__name__}" + (f": {text}" if text else "") + hint)


def _snapshot(values):
    return [(i, v, v.detach().clone()) for i, v in enumerate(values) if isinstance(v, torch.Tensor)]


def call_learner(fn, *args, **kwargs):
    """Call the learner's function; turn a stub or a crash into a diagnosis, never a traceback.

    The tensors it is given must come back unchanged: a function that modifies
    its caller's tensor in place (``mean += ...``) is told so, because the
    caller's later cells would silently use the changed values. ``sys.exit()`` in
    the learner's code is the learner's code raising too (``SystemExit``), never
    the end of the check.
    """
    if _channel is not None:  # grading: recorded in the kernel, answered from the record by the grader
        return _channel.call(_call_learner, fn, args, kwargs)
    return _call_learner(fn, *args, **kwargs)


def _parameter_names(fn, args, kwargs):
    """What the learner's own signature calls each argument (``None`` where it has no name for it)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
        positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # a callable without a signature
        positional = []
    return [positional[i] if i < len(positional) else None for i in range(len(args))] + list(kwargs)


def _changed_in_place(name, position, shape):
    """The diagnosis of an argument the learner's function modified, named as the learner's signature names it."""
    which = f"argument `{name}`" if name else f"argument {position + 1}"
    copy = f"`{name} = {name} + ...` instead of `{name} += ...`, or `{name}.clone()`" if name else "`.clone()`"
    return (
        f"your function changed its {which} in place (shape {tuple(shape)}): the caller still needs it; work on a "
        f"copy ({copy}) instead of modifying what you are given"
    )


def _call_learner(fn, *args, **kwargs):
    before = _snapshot(list(args) + list(kwargs.values()))
    names = _parameter_names(fn, args, kwargs)
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError as exc:
        raise _NotAttempted(str(exc)) from None
    except (Exception, SystemExit) as exc:  # the learner's code raised: say what, do not crash the notebook
        raise _learner_error(exc) from None
    for i, value, copy in before:
        same = value.shape == copy.shape and torch.equal(value.detach(), copy)
        if not same and not (torch.isnan(copy).any() and torch.equal(value.detach().isnan(), copy.isnan())):
            fail(_changed_in_place(names[i], i, copy.shape))
    return out


def learner_grad(outputs, inputs, **kwargs):
    """``torch.autograd.grad`` through a graph the learner's code built; its errors are the learner's.

    An in-place operation on a tensor autograd needs, or a result cut off from
    the inputs, raises inside the backward pass, after the learner's function
    returned; it is reported as the learner's mistake, with what to do.
    ``allow_unused`` defaults to true (a missing gradient is ``None``).
    """
    kwargs.setdefault("allow_unused", True)
    try:
        return torch.autograd.grad(outputs, inputs, **kwargs)
    except RuntimeError as exc:
        raise _learner_error(exc, during=" (while taking the gradient through it)") from None


def learner_backward(value):
    """``value.backward()`` through a graph the learner built; its errors are the learner's, as in learner_grad."""
    try:
        value.backward()
    except RuntimeError as exc:
        raise _learner_error(exc, during=" (while taking the gradient through it)") from None


def expect_gradient(out, inputs, reference, names, context="", directions=3, rtol=1e-6, atol=1e-9):
    r"""The learner's ``out`` must have the gradient of ``reference`` with respect to every tensor in ``inputs``.

    Checked along ``directions`` random directions :math:`v` of the output
    (vector-Jacobian products :math:`v^\top \partial\,\mathrm{out}/\partial\,\mathrm{input}`), so an
    answer whose gradient is right only on average, or only along the sum, fails.
    """
    if not out.requires_grad:
        fail(
            f"no gradient reaches {' and '.join(names)}{context}: later cells differentiate through this function; "
            "compute the result with torch operations on the inputs (no .item(), float(), .detach(), NumPy or "
            "torch.tensor(...) of computed values)"
        )
    for k in range(directions):
        v = torch.randn(out.shape, dtype=out.dtype) if k else torch.ones_like(out)
        got = learner_grad((out * v).sum(), inputs, retain_graph=True)
        want = torch.autograd.grad(
            (reference * v.to(reference.dtype)).sum(), inputs, retain_graph=True, allow_unused=True
        )
        for name, g, r in zip(names, got, want, strict=True):
            r = torch.zeros_like(inputs[names.index(name)]) if r is None else r
            if g is None:
                if torch.count_nonzero(r):
                    fail(f"no gradient reaches {name}{context}: keep it in the computation with torch operations")
                continue
            if not close(g, r, rtol=rtol, atol=atol):
                i = int((g.double() - r.double()).abs().flatten().argmax())
                fail(
                    f"the value is right but its gradient with respect to {name} is not{context}: "
                    f"expected {fmt(r.flatten()[i])}, got {fmt(g.flatten()[i])} (something is detached, "
                    "or computed outside torch)"
                )


def require(*functions):
    """Raise the exercise's own ``NotImplementedError`` if one of ``functions`` is still a stub.

    A cell that uses results of earlier exercises (a trained encoder, say)
    starts with ``require(...)``, so an unfinished exercise stops it with the
    exercise's message instead of a confusing ``NameError`` further down.
    A stub is recognised by its compiled code, which raises
    ``NotImplementedError`` with an "Exercise N.M: ..." message; that works
    for functions defined in notebook cells, whose source file is not kept.
    """
    for fn in functions:
        code = getattr(fn, "__code__", None)
        if code is None or "NotImplementedError" not in code.co_names:
            continue
        for const in code.co_consts:
            if is_stub_message(const):
                raise NotImplementedError(const)


def results():
    """The results recorded so far in this kernel, as a list of dicts."""
    return list(RESULTS)


def _record(exercise, task, status, message):
    RESULTS.append(report(exercise, task, status, message))
    return CheckResult(exercise, task, status, message)


class CheckResult:
    """What a checker returns: true when the exercise passed.

    It displays nothing in a notebook (the checker already printed its line),
    so a check cell shows exactly one line of output.
    """

    __slots__ = ("exercise", "task", "status", "message")

    def __init__(self, exercise, task, status, message):
        self.exercise, self.task, self.status, self.message = exercise, task, status, message

    def __bool__(self):
        return self.status == PASSED

    def __repr__(self):
        return f"CheckResult(exercise={self.exercise!r}, status={self.status!r})"

    def _ipython_display_(self):
        pass

    def raise_if_failed(self):
        """Raise ``AssertionError`` with the check line unless the exercise passed (for nbgrader's test cells)."""
        if not self:
            raise AssertionError(check_line(self.exercise, self.task, self.status, self.message))
        return self


def checker(exercise, task, seed=1234):
    """Decorate a checker body ``body(fn) -> success message``.

    The body calls the learner's function through :func:`call_learner` and
    reports mistakes with :func:`fail`. It runs with its own random stream
    (``seed``), so checking an answer never shifts the notebook's numbers.
    """

    def decorate(body):
        @functools.wraps(body)
        def check(fn):
            if _channel is not None:
                return _channel.check(exercise, task, run, fn)
            return run(fn)

        def run(fn):
            if not callable(fn):
                return _record(
                    exercise, task, FAILED, f"expected your function, got {type(fn).__name__}; pass the function itself"
                )
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    message = body(fn)
            except _NotAttempted as exc:
                other = str(exc).split(":")[0]
                if is_stub_message(str(exc)) and other != f"Exercise {exercise}":  # an earlier stub it calls
                    return _record(
                        exercise,
                        task,
                        FAILED,
                        f"your function calls {other.lower()}'s function, which is still a stub (it raises "
                        "NotImplementedError): finish that exercise first, then rerun this check",
                    )
                return _record(exercise, task, NOT_ATTEMPTED, NOT_ATTEMPTED_ADVICE)
            except Mistake as exc:
                return _record(exercise, task, FAILED, str(exc))
            except Exception as exc:  # a bug in the checker itself, never the learner's fault
                return _record(
                    exercise,
                    task,
                    ERROR,
                    f"the checker itself failed ({type(exc).__name__}: {exc}); please report this.",
                )
            return _record(exercise, task, PASSED, message)

        check.exercise = exercise
        check.task = task
        CHECKERS[exercise] = check
        return check

    return decorate


# ---------------------------------------------------------------- comparisons


def as_tensor_result(out, what="your function"):
    """The learner's return value as a tensor, or a diagnosis."""
    if out is None:
        fail(f"{what} returned None; did you forget `return`?")
    if isinstance(out, (tuple, list)):
        fail(f"{what} returned a {type(out).__name__}; return a single tensor")
    try:
        return torch.as_tensor(out)
    except Exception:
        fail(f"{what} returned a {type(out).__name__}, not a tensor or number")


def expect_shape(out, shape, context=""):
    if tuple(out.shape) != tuple(shape):
        fail(f"wrong shape{context}: expected {tuple(shape)}, got {tuple(out.shape)}")


def expect_finite(out, context=""):
    if not torch.isfinite(out).all():
        bad = "NaN" if torch.isnan(out).any() else "inf"
        fail(f"the result has {bad}{context}")


def close(a, b, rtol=1e-6, atol=1e-8):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol)


def diagnose(out, reference, mistakes, context="", rtol=1e-6, atol=1e-8, labels=None):
    """Pass if ``out`` matches ``reference``; else name the first mistake it matches.

    ``mistakes`` maps a diagnosis to the value that mistake would produce.
    ``labels``: one name per element of ``out.flatten()`` (for tuple answers
    flattened with :func:`flat`), so a plain mismatch says which output is off.
    """
    if close(out, reference, rtol, atol):
        return
    for message, wrong in mistakes.items():
        if close(out, wrong, rtol, atol):
            fail(message + context)
    diff = (out.double() - reference.double()).abs()
    i = int(diff.flatten().argmax())
    which = f" for {labels[i]}" if labels else ""
    fail(
        f"does not match the reference{which}{context}: expected {fmt(reference.flatten()[i])}, "
        f"got {fmt(out.flatten()[i])}"
    )


# ---------------------------------------------------------------- Monte Carlo comparisons


def mean_of_calls(estimate, reps):
    """Average ``reps`` calls of ``estimate()``: ``(mean, standard error)``, float64 tensors of one call's shape.

    In a checker, ``estimate`` calls the learner's function through :func:`call_learner`, or computes the
    reference's value (or a mistake's) the same way, so that both are averaged alike.
    """
    values = torch.stack([torch.as_tensor(estimate(), dtype=torch.float64) for _ in range(reps)])
    return values.mean(0), standard_error(values)


_REFERENCE_MEANS = {}


def reference_mean(key, estimate, reps):
    """:func:`mean_of_calls` for a value that does not depend on the answer: the reference's, or a mistake's.

    It is computed once per process and ``key`` (with the default dtype), under a seed of its own derived from
    ``key``, inside :func:`torch.random.fork_rng`: it neither uses nor changes the random stream that the
    learner's calls see, and it is the same value in the learner's kernel and in the grader's replay. A checker
    that is run again (by the learner, or for each student by the grader) then pays only for the answer's calls.
    ``key``: anything with a stable ``repr`` that names what ``estimate`` computes (exercise, variant, sizes).
    """
    full = (key, reps, str(torch.get_default_dtype()))
    if full not in _REFERENCE_MEANS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(repr(full).encode()))
            _REFERENCE_MEANS[full] = mean_of_calls(estimate, reps)
    return _REFERENCE_MEANS[full]


def _mean_and_se(value):
    """An exact value, or a ``(mean, se)`` pair, as two float64 tensors (an exact value's standard error is 0)."""
    if isinstance(value, tuple):
        mean, se = value
    else:
        mean, se = value, 0.0
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return mean, torch.as_tensor(se, dtype=torch.float64).expand_as(mean)


def _misfit(a, b, z, rtol, atol):
    """Per entry, how far ``a`` is from ``b`` in units of the tolerance: at most 1 where the two agree."""
    (mean_a, se_a), (mean_b, se_b) = a, b
    diff = torch.where(mean_a == mean_b, 0.0, (mean_a - mean_b).abs())  # equal infinities agree
    tol = z * torch.hypot(se_a, se_b) + rtol * mean_b.abs() + atol
    ratio = torch.where(diff == 0, 0.0, diff / tol)
    return torch.nan_to_num(ratio, nan=math.inf, posinf=math.inf).reshape(-1)


def _mistake_misfit(answer, wrong, order, z, rtol, atol):
    """The answer's misfit to a mistake's value, per entry; a list of values, one per entry, is computed in
    ``order`` and only until an entry rules the mistake out (the others are left at infinity)."""
    if not isinstance(wrong, list):
        return _misfit(answer, _mean_and_se(wrong() if callable(wrong) else wrong), z, rtol, atol)
    mean, se = (t.reshape(-1) for t in answer)
    misfit = torch.full((len(wrong),), math.inf, dtype=torch.float64)
    for i in order:
        value = _mean_and_se(wrong[i]() if callable(wrong[i]) else wrong[i])
        misfit[i] = _misfit((mean[i], se[i]), value, z, rtol, atol)[0]
        if misfit[i] > 1:
            break
    return misfit


def diagnose_mean(estimate, reference, mistakes, context="", z=4.0, rtol=0.0, atol=0.0, labels=None, unmatched=None):
    r"""The Monte Carlo counterpart of :func:`diagnose`: pass if an average is within ``z`` standard errors of
    ``reference``; else name the mistake whose value it is closest to, within as many; else say how far it is.

    ``estimate`` is the answer's ``(mean, se)``: :func:`mean_of_calls`, or the mean of the terms the answer
    returned with their :func:`helpers.estimators.standard_error`. ``reference`` is an exact value or a
    ``(mean, se)`` pair of its own; ``mistakes`` maps a diagnosis to the value that mistake would produce, as
    in :func:`diagnose`, each value exact, a pair, or a function of no arguments that returns one, called only
    when the answer misses the reference (a mistake's expectation costs calls too); or a list of those, one
    per entry of the mean (one per sample size, say), computed from the entry where the answer is furthest
    from the reference and only until one rules the mistake out. Two values agree when, in every entry,

    .. math::
        |a - b| \le z\sqrt{\mathrm{se}_a^2 + \mathrm{se}_b^2} + \mathrm{rtol}\,|b| + \mathrm{atol},

    where ``atol`` covers what the standard errors do not (a standard error from a few calls is itself
    uncertain). Of the mistakes that agree with the answer, the nearest one is named: the one with the least
    sum over the entries of the squared differences in units of that tolerance. ``labels``: one name per entry
    of the mean, so a plain mismatch says which is off. ``unmatched``: the message when no mistake agrees, a
    format string with the fields ``label``, ``got``, ``got_se``, ``expected``, ``expected_se`` (floats, of the
    entry furthest off) and ``sigmas`` (how many standard errors apart they are); ``context`` is appended to it
    and to each diagnosis.
    """
    answer = _mean_and_se(estimate)
    reference = tuple(t.expand_as(answer[0]) for t in _mean_and_se(reference))
    off = _misfit(answer, reference, z, rtol, atol)
    if off.max() <= 1:
        return
    order = off.argsort(descending=True).tolist()
    best, nearest = None, math.inf
    for message, wrong in mistakes.items():
        misfit = _mistake_misfit(answer, wrong, order, z, rtol, atol)
        if misfit.max() <= 1 and float((misfit**2).sum()) < nearest:  # the first of equally near ones
            best, nearest = message, float((misfit**2).sum())
    if best is not None:
        fail(best + context)
    i = int(off.argmax())
    got, got_se = (float(t.reshape(-1)[i]) for t in answer)
    expected, expected_se = (float(t.reshape(-1)[i]) for t in reference)
    spread = math.hypot(got_se, expected_se)
    fields = {
        "label": labels[i] if labels else "",
        "got": got,
        "got_se": got_se,
        "expected": expected,
        "expected_se": expected_se,
        "sigmas": abs(got - expected) / spread if spread > 0 else math.inf,
    }
    if unmatched is not None:
        fail(unmatched.format(**fields) + context)
    which = f" for {fields['label']}" if labels else ""
    expected_text = fmt(expected) + (f" (s.e. {expected_se:.2g})" if expected_se else "")
    fail(f"does not match the reference{which}{context}: expected {expected_text}, got {fmt(got)} (s.e. {got_se:.2g})")


def _timed(fn, reference, *args, repeats=3, grad=None):
    """Time ``fn(*args)`` and ``reference(*args)``: ``(fn's output, fn's seconds, reference's seconds)``.

    Each time is the CPU time this process spent, the shortest of ``repeats`` runs (of the forward pass and, with
    ``grad``, of the gradient with respect to the tensors ``grad``): other processes' load does not count, as a
    wall clock's would (a correct answer timed while the machine was busy and its reference while it was not
    could read twenty times slower), and the shortest run leaves out a garbage collection or a first call's
    set-up. Called through :func:`call_learner`, the times are recorded with the output and the grader's replay
    reads the same verdict. An answer slower than a second on its first run is not run again: it is already too
    slow.
    """

    def run(f):
        start = time.process_time()
        out = f(*args)
        if grad is not None:
            torch.autograd.grad(torch.as_tensor(out).sum(), grad, allow_unused=True)
        return out, time.process_time() - start

    out, seconds = run(fn)
    if seconds < 1.0:
        seconds = min([seconds] + [run(fn)[1] for _ in range(repeats - 1)])
    reference_seconds = min(run(reference)[1] for _ in range(repeats))
    return out, seconds, reference_seconds


def expect_fast(fn, reference, args, what, slower=20, grace=0.005, grad=None):
    """Fail, naming ``what``, when one call of the answer takes ``slower`` times the reference's, plus ``grace`` s.

    Both are timed in one :func:`call_learner` crossing, so the record holds the times and the grader's replay
    reads the same verdict.
    """
    # the answer is bound into the function called, as in checks.pyro_bridge._trained: the record digests the
    # tensors only
    _, seconds, reference_seconds = call_learner(functools.partial(_timed, fn, reference, grad=grad), *args)
    if seconds > slower * reference_seconds + grace:
        fail(
            f"right so far, but too slow: one call took {seconds:.2g} s where the reference takes "
            f"{reference_seconds:.2g} s ({seconds / max(reference_seconds, 1e-9):.0f} times longer). {what}"
        )


def fmt(x):
    x = float(x.detach() if isinstance(x, torch.Tensor) else x)  # float() of a tensor that needs grad warns
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.6g}"


def as_tensor_tuple(out, names, what="your function"):
    """The learner's ``(a, b, ...)`` return value as tensors, or a diagnosis naming what is expected."""
    expected = "(" + ", ".join(names) + ")"
    if not isinstance(out, (tuple, list)):
        fail(f"{what} returned a {type(out).__name__}; return the tuple {expected}")
    if len(out) != len(names):
        fail(f"{what} returned {len(out)} values; return the tuple {expected}")
    for value, name in zip(out, names, strict=True):
        if not isinstance(value, torch.Tensor):
            fail(
                f"{name} is a {type(value).__name__}; return tensors (e.g. torch.tensor(...)), "
                "because later cells use tensor methods on them"
            )
    return tuple(out)


def flat(*parts):
    """Concatenate tensors into one float64 vector, for comparing tuple answers with :func:`diagnose`."""
    return torch.cat([torch.as_tensor(p, dtype=torch.float64).reshape(-1) for p in parts])
