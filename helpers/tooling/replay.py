"""Verdicts the learner's code cannot forge: record in the kernel, replay in the grader.

Anything in the kernel that runs a learner's notebook can be patched by the
learner's code: the checkers, their recording, the results file, the printed
line. So the grader does not take the kernel's word for a verdict.

**In the kernel** (contained), :class:`Recorder` sees every check through the
hook of :mod:`helpers.checks._core`: for each crossing into the learner's code
(:func:`~helpers.checks._core.call_learner`, and every ``torch.autograd.grad``
through a graph the learner's code built, which is what
:func:`~helpers.checks._core.learner_grad` does) it writes what went in (a
digest), what came out (tensors, numbers and containers of them), what the
learner's code called back (the checker's own functions, such as an update
it is given), what it left changed in the checker's modules and optimizers (the
weights after a training step, the optimizer's step count) and the random
state after the call. One record file per check.

**In the grader** (a separate process, after the sandbox is gone, running no
learner code), :func:`replay` runs the *same* checker, from the grader's own
copy of :mod:`helpers.checks`, and answers each of its crossings from the
record, in order. The checker compares what the learner's code returned with
its own references, computed here, so the verdict is the checker's: a record
can only make an exercise pass by holding outputs that are right for the
inputs the checker asks about, which is computing the answer. A record that
does not match the checker's calls (another input, a call too many or too few,
a tensor subclass, a malformed file) makes the exercise *flagged*.

Records are read with ``torch.load(weights_only=True)``: tensors, numbers,
strings and containers only, never code.

Not covered: which cell computed the outputs (code in one exercise's answer
can compute another's, for instance by calling the reference, which is
allowed); the random state after a learner call is the learner's to set, so a
checker's later random draws could be steered; an answer whose output the
record cannot hold (a Pyro trace, a module, a closure) cannot be replayed and
is reported *unverified*.
"""

import contextlib
import io
import json
import math
import sys
import types
from pathlib import Path

import torch

from ..checks import _core

__all__ = ["Recorder", "install", "replay", "Diverged", "Unverifiable"]

_SAFE = (bool, int, float, str, type(None))


class Diverged(BaseException):  # noqa: N818 (a BaseException: it must pass through the checker's except Exception)
    """The record does not match what the checker asks: the replay cannot confirm the verdict."""


class Unverifiable(BaseException):  # noqa: N818
    """The record holds an output that cannot be replayed outside the kernel."""


# ------------------------------------------------------------------ values to and from records


def _export(value, depth=0):
    """A record-safe copy of ``value``: tagged lists of tensors, numbers and strings."""
    if depth > 20:
        return ["x", "a structure nested too deep"]
    if isinstance(value, torch.Tensor):
        plain = value.detach().clone()
        if type(plain) is not torch.Tensor:
            plain = plain.as_subclass(torch.Tensor)
        return ["t", plain, bool(value.requires_grad)]
    if type(value) in _SAFE:
        return ["v", value]
    for base in (bool, int, float, str):  # a subclass (with its own == or !=) is recorded as its plain value
        if isinstance(value, base):
            return [
                "v",
                base(base.__index__(value) if base in (bool, int) else getattr(base, f"__{base.__name__}__")(value)),
            ]
    if isinstance(value, (tuple, list)):
        return ["tuple" if isinstance(value, tuple) else "list", [_export(v, depth + 1) for v in value]]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return ["dict", [[k, _export(v, depth + 1)] for k, v in value.items()]]
    if type(value).__module__ == "numpy":
        try:
            return ["np", torch.from_numpy(__import__("numpy").asarray(value).copy())]
        except Exception:
            pass
    return ["x", type(value).__name__]


def _import(item, leaves):
    """The value of an exported ``item``; tensors that required a gradient come back as leaves (``leaves``)."""
    try:
        tag = item[0]
        if tag == "t":
            tensor, requires_grad = item[1], item[2]
            if type(tensor) is not torch.Tensor or not isinstance(requires_grad, bool):
                raise Diverged("the record holds something that is not a plain tensor")
            tensor = tensor.clone()
            if requires_grad and (tensor.is_floating_point() or tensor.is_complex()):
                tensor.requires_grad_(True)
                leaves.add(id(tensor))
                leaves.keep.append(tensor)
            return tensor
        if tag == "v":
            if not isinstance(item[1], _SAFE):
                raise Diverged("the record holds a value of an unexpected type")
            return item[1]
        if tag in ("tuple", "list"):
            values = [_import(v, leaves) for v in item[1]]
            return tuple(values) if tag == "tuple" else values
        if tag == "dict":
            return {str(k): _import(v, leaves) for k, v in item[1]}
        if tag == "np":
            if type(item[1]) is not torch.Tensor:
                raise Diverged("the record holds something that is not a plain tensor")
            return item[1].numpy()
        if tag == "x":
            raise Unverifiable(str(item[1]))
    except (IndexError, TypeError, KeyError, ValueError) as exc:
        raise Diverged(f"a malformed record ({type(exc).__name__})") from None
    raise Diverged("a malformed record")


def _digest(value, depth=0):
    """What a call was given, in a form two processes can compare: shapes, dtypes, sums; types otherwise."""
    if depth > 5:
        return ["deep"]
    if isinstance(value, torch.Tensor):
        v = value.detach()
        if v.is_floating_point() or v.is_complex() or v.dtype in (torch.int32, torch.int64, torch.bool):
            d = (torch.view_as_real(v) if v.is_complex() else v).to(torch.float64)
            finite = torch.isfinite(d)
            total, size = float(d[finite].sum()), float(d[finite].abs().sum())
            return ["t", list(v.shape), str(v.dtype), total, size, int((~finite).sum())]
        return ["t", list(v.shape), str(v.dtype)]
    if isinstance(value, (bool, int, str, type(None))):
        return ["v", value]
    if isinstance(value, float):
        return ["f", value if math.isfinite(value) else str(value)]
    if isinstance(value, (tuple, list)):
        return ["seq", [_digest(v, depth + 1) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[str(k), _digest(v, depth + 1)] for k, v in value.items()]]
    return ["obj", type(value).__name__]


def _same(a, b):
    """Two digests agree (sums within rounding: the two processes may add in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-9
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _tensors(value, out, depth=0):
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (tuple, list)) and depth < 20:
        for v in value:
            _tensors(v, out, depth + 1)
    elif isinstance(value, dict) and depth < 20:
        for v in value.values():
            _tensors(v, out, depth + 1)
    return out


class _Targets:
    """The learner's outputs in this check: graph nodes (non-leaf tensors) and leaf ids."""

    def __init__(self):
        self.nodes, self.leaves, self.keep = set(), set(), []

    def add(self, leaf_id):
        self.leaves.add(leaf_id)

    def add_tensor(self, tensor):
        self.keep.append(tensor)
        if tensor.grad_fn is not None:
            self.nodes.add(tensor.grad_fn)
        elif tensor.requires_grad:
            self.leaves.add(id(tensor))

    def reached_from(self, outputs):
        """True if the graph of ``outputs`` reaches one of the learner's outputs."""
        if not self.nodes and not self.leaves:
            return False
        stack, seen = [], set()
        for t in _tensors(outputs, []):
            if id(t) in self.leaves:
                return True
            if t.grad_fn is not None:
                stack.append(t.grad_fn)
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node in self.nodes:
                return True
            variable = getattr(node, "variable", None)
            if variable is not None and id(variable) in self.leaves:
                return True
            stack.extend(next_node for next_node, _ in node.next_functions)
        return False


_original_grad = torch.autograd.grad


# ------------------------------------------------------------------ the kernel's side


class Recorder:
    """Installed in the grading kernel (:func:`install`): writes one record file per check into ``folder``."""

    def __init__(self, folder):
        self.folder, self.count = Path(folder), 0
        self.active, self.depth, self.targets = None, 0, None

    def check(self, exercise, task, run, fn):
        if self.active is not None:  # a check inside a check is part of the outer one
            return run(fn)
        self.active = {
            "exercise": str(exercise),
            "task": str(task),
            "callable": callable(fn),
            "type": type(fn).__name__,
            "dtype": str(torch.get_default_dtype()),  # the notebook's setting, which the checker's tensors follow
            "grad_enabled": torch.is_grad_enabled(),
            "events": [],
        }
        self.targets = _Targets()
        try:
            result = run(fn)
            self.active["status"], self.active["message"] = str(result.status), str(result.message)
            return result
        finally:
            record, self.active, self.targets = self.active, None, None
            self.count += 1
            try:
                torch.save(record, self.folder / f"{self.count:04d}.pt")
            except Exception:
                pass  # the grader reports a check without a record

    def call(self, run, fn, args, kwargs):
        if self.active is None or self.depth:
            return run(fn, *args, **kwargs)
        event = {"kind": "call", "in": _digest([list(args), kwargs]), "callbacks": []}
        outer = list(args) + list(kwargs.values())

        def wrap(position, value):
            if not isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
                return value

            def callback(*cargs, **ckwargs):
                refs = [_ref(v, outer) for v in cargs]
                event["callbacks"].append([position, refs, {k: _ref(v, outer) for k, v in ckwargs.items()}])
                return value(*cargs, **ckwargs)

            return callback

        args = [wrap(i, v) for i, v in enumerate(args)]
        kwargs = {k: wrap(len(args) + i, v) for i, (k, v) in enumerate(kwargs.items())}
        self.depth += 1
        try:
            out = run(fn, *args, **kwargs)
        except BaseException as exc:
            event["raised"] = [type(exc).__name__, str(exc)]
            raise
        finally:
            self.depth -= 1
            event["rng"] = torch.get_rng_state()
            event["effects"] = _effects(outer)
            self.active["events"].append(event)
        event["out"] = _export(out)
        for tensor in _tensors(out, []):
            self.targets.add_tensor(tensor)
        return out

    def grad(self, outputs, inputs, *args, **kwargs):
        if self.active is None or self.depth or not self.targets.reached_from(outputs):
            return _original_grad(outputs, inputs, *args, **kwargs)
        event = {"kind": "grad", "in": _digest(outputs)}
        try:
            result = _original_grad(outputs, inputs, *args, **kwargs)
        except RuntimeError as exc:
            event["raised"] = ["RuntimeError", str(exc)]
            raise
        finally:
            event["rng"] = torch.get_rng_state()
            self.active["events"].append(event)
        event["out"] = _export(tuple(result))
        return result


def _effects(outer):
    """What a call left changed in the checker's objects it was given: a module's weights and gradients, an
    optimizer's state and its plain counters (``steps``). The replay puts them back, so a checker that looks at
    the model after a training step sees what the learner's step did."""
    effects = []
    for position, value in enumerate(outer):
        try:
            if isinstance(value, torch.nn.Module):
                state = {name: _plain(t) for name, t in value.state_dict(keep_vars=True).items()}
                grads = {name: None if p.grad is None else _plain(p.grad) for name, p in value.named_parameters()}
                effects.append(["module", position, state, grads])
            elif isinstance(value, torch.optim.Optimizer):
                attrs = {
                    k: v
                    for k, v in vars(value).items()
                    if type(v) in _SAFE and not k.startswith("_") and k not in ("state", "param_groups", "defaults")
                }
                effects.append(["optimizer", position, value.state_dict(), attrs])
        except Exception:
            effects.append(["unrecordable", position])
    return effects


def _plain(tensor):
    plain = tensor.detach().clone()
    return plain if type(plain) is torch.Tensor else plain.as_subclass(torch.Tensor)


def _ref(value, outer):
    for index, candidate in enumerate(outer):
        if value is candidate:
            return ["arg", index]
    return _export(value)


def install(folder):
    """Record every check of this kernel into ``folder`` (the grader puts this in a notebook's first cell)."""
    recorder = Recorder(folder)
    _core._channel = recorder
    torch.autograd.grad = lambda outputs, inputs, *a, **kw: _core._channel.grad(outputs, inputs, *a, **kw)
    return recorder


# ------------------------------------------------------------------ the grader's side


class _Placeholder:
    """What the replayed checker gets instead of the learner's function: calling it directly is not replayable."""

    def __call__(self, *args, **kwargs):
        raise Diverged("the checker called the learner's function outside call_learner")


class _Replayer:
    def __init__(self, record):
        self.events = list(record["events"])
        self.leaves = _Targets()

    def _next(self, kind):
        word = {"call": "call of the learner's function", "grad": "gradient"}[kind]
        if not self.events:
            raise Diverged(f"the record has fewer crossings than the checker makes (a {word} is missing)")
        event = self.events.pop(0)
        if not isinstance(event, dict) or event.get("kind") != kind:
            raise Diverged(f"the record's next crossing is not a {word}")
        return event

    def check(self, exercise, task, run, fn):
        return run(fn)

    def _restore_rng(self, event):
        try:
            torch.set_rng_state(event["rng"])
        except Exception:
            raise Diverged("the record's random state is malformed") from None

    def call(self, run, fn, args, kwargs):
        event = self._next("call")
        if not _same(event.get("in"), _digest([list(args), kwargs])):
            raise Diverged("the learner's function was recorded with other inputs than the checker gives it")
        outer = list(args) + list(kwargs.values())
        for callback in event.get("callbacks", []):  # the checker's own functions, as the learner's code called them
            position, cargs, ckwargs = callback
            target = outer[position] if isinstance(position, int) and 0 <= position < len(outer) else None
            if not callable(target):
                raise Diverged("the record calls back something the checker did not give")
            try:
                values = [_resolve(v, outer) for v in cargs]
                kw = {str(k): _resolve(v, outer) for k, v in ckwargs.items()}
            except Unverifiable:
                continue
            try:
                target(*values, **kw)
            except Exception:
                pass
        self._apply_effects(event.get("effects", []), outer)
        self._restore_rng(event)
        raised = event.get("raised")
        if raised is not None:
            name, message = str(raised[0]), str(raised[1])
            if name == "_NotAttempted":
                raise _core._NotAttempted(message)
            if name == "Mistake":
                raise _core.Mistake(message)
            raise Diverged(f"the learner's code raised {name} through the check")
        return _import(event["out"], self.leaves)

    def _apply_effects(self, effects, outer):
        """Put the recorded state of the checker's modules and optimizers back (see :func:`_effects`)."""
        if not isinstance(effects, list):
            raise Diverged("the record's effects on the checker's objects are malformed")
        for effect in effects:
            try:
                kind, position = effect[0], effect[1]
                target = outer[position] if isinstance(position, int) and 0 <= position < len(outer) else None
            except (IndexError, TypeError, KeyError):
                raise Diverged("the record's effects on the checker's objects are malformed") from None
            if kind == "module" and isinstance(target, torch.nn.Module):
                _load_module_state(target, effect[2], effect[3])
            elif kind == "optimizer" and isinstance(target, torch.optim.Optimizer):
                _load_optimizer_state(target, effect[2], effect[3])
            elif kind == "unrecordable":
                raise Unverifiable("change to the checker's objects")
            else:
                raise Diverged("the record changes an object the checker did not give")

    def grad(self, outputs, inputs, *args, **kwargs):
        if not self.leaves.reached_from(outputs):
            return _original_grad(outputs, inputs, *args, **kwargs)
        event = self._next("grad")
        if not _same(event.get("in"), _digest(outputs)):
            raise Diverged("a gradient was recorded for other values than the checker differentiates")
        self._restore_rng(event)
        if event.get("raised") is not None:
            raise RuntimeError(str(event["raised"][1]))
        grads = _import(event["out"], _Targets())
        n = len(inputs) if isinstance(inputs, (tuple, list)) else 1
        if not isinstance(grads, tuple) or len(grads) != n:
            raise Diverged("a recorded gradient has the wrong number of parts")
        return grads


def _load_module_state(module, state, grads):
    own = module.state_dict(keep_vars=True)
    params = dict(module.named_parameters())
    if not isinstance(state, dict) or not isinstance(grads, dict):
        raise Diverged("the record's weights are malformed")
    if set(state) != set(own) or set(grads) != set(params):
        raise Diverged("the record's weights do not match the checker's model")
    for name, value in list(state.items()) + [(n, g) for n, g in grads.items() if g is not None]:
        if type(value) is not torch.Tensor or value.shape != own.get(name, params.get(name)).shape:
            raise Diverged("the record's weights do not match the checker's model")
        if value.dtype != own.get(name, params.get(name)).dtype:
            raise Diverged("the record's weights do not match the checker's model")
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)
    for name, param in params.items():
        param.grad = None if grads[name] is None else grads[name].clone()


def _load_optimizer_state(optimizer, state, attrs):
    try:
        optimizer.load_state_dict(state)
    except Exception:
        raise Diverged("the record's optimizer state does not match the checker's optimizer") from None
    if not isinstance(attrs, dict):
        raise Diverged("the record's optimizer state is malformed")
    for key, value in attrs.items():
        current = vars(optimizer).get(key, _Placeholder)
        if not isinstance(key, str) or type(value) is not type(current):
            raise Diverged("the record's optimizer state does not match the checker's optimizer")
        setattr(optimizer, key, value)


def _resolve(item, outer):
    if isinstance(item, list) and len(item) == 2 and item[0] == "arg" and isinstance(item[1], int):
        if 0 <= item[1] < len(outer):
            return outer[item[1]]
        raise Diverged("a callback refers to an input the checker did not give")
    return _import(item, _Targets())


def replay_record(record):
    """``(status, message)`` of the grader's own checker on ``record``, or ``("flagged" | "unverified", why)``."""
    if not isinstance(record, dict) or not isinstance(record.get("events"), list):
        return "flagged", "its check left a malformed record"
    exercise = str(record.get("exercise"))
    check = _checker(exercise)
    if check is None:
        return "flagged", f"its record names exercise {exercise}, which has no checker"
    dtype = {"torch.float32": torch.float32, "torch.float64": torch.float64}.get(record.get("dtype", "torch.float32"))
    if dtype is None or not isinstance(record.get("grad_enabled", True), bool):
        return "flagged", "its record names a torch setting a notebook does not use"
    replayer = _Replayer(record)
    fn = _Placeholder() if record.get("callable", True) else type(str(record.get("type", "object")), (), {})()
    previous = _core._channel
    _core._channel = replayer
    torch.autograd.grad = replayer.grad
    previous_dtype, previous_grad = torch.get_default_dtype(), torch.is_grad_enabled()
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(record.get("grad_enabled", True))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = check(fn)
        if replayer.events:
            return "flagged", "its record holds crossings the checker never made (more calls than the check makes)"
        return str(result.status), str(result.message)
    except Diverged as exc:
        return "flagged", str(exc)
    except Unverifiable as exc:
        return "unverified", f"the answer returned a {exc} to the check, which the grader cannot replay"
    finally:
        _core._channel = previous
        torch.autograd.grad = _original_grad
        torch.set_default_dtype(previous_dtype)
        torch.set_grad_enabled(previous_grad)


def _load(path):
    import os

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            return torch.load(fh, weights_only=True)
    except Exception as exc:
        return {"malformed": f"{type(exc).__name__}"}


def replay(folder):
    """Replay every record in ``folder``; a list of dicts (``exercise``, ``status``, ``message``, ``claimed``)."""
    out = []
    for path in sorted(Path(folder).glob("*.pt")):
        record = _load(path)
        if not isinstance(record, dict) or "malformed" in record:
            out.append({"exercise": None, "status": "flagged", "message": "a check left a malformed record"})
            continue
        status, message = replay_record(record)
        claimed = record.get("status")
        out.append(
            {
                "exercise": str(record.get("exercise")),
                "status": status,
                "message": message,
                "claimed": claimed if isinstance(claimed, str) else None,
            }
        )
    return out


def _load_module(path, _loaded={}):  # noqa: B006 (a cache: each extra checker module is loaded once)
    import importlib.util

    if path not in _loaded:
        spec = importlib.util.spec_from_file_location(f"_vi_grade_checks_{len(_loaded)}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _loaded[path] = module
    return _loaded[path]


def _main(argv):
    """``python -m helpers.tooling.replay FOLDER [MODULE.py ...]``: print the replayed verdicts as JSON.

    ``--serve``: read one request a line (``{"folder": ..., "checks": [...]}``) and answer each with one line,
    so that a grading run imports torch and the checkers once.
    """
    torch.set_num_threads(1)
    if argv[:1] != ["--serve"]:
        for module in argv[1:]:
            _load_module(module)
        print(json.dumps(replay(argv[0])))
        return
    for line in sys.stdin:
        try:
            request = json.loads(line)
            for module in request.get("checks", []):
                _load_module(module)
            answer = replay(request["folder"])
        except Exception as exc:
            answer = [{"exercise": None, "status": "flagged", "message": f"the replay failed ({type(exc).__name__})"}]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def _checker(exercise):
    """The grader's own checker of ``exercise``: an extra module's, else the course's (imported when needed)."""
    if exercise not in _core.CHECKERS:
        import helpers.checks

        helpers.checks.load_all()  # registers the course's checkers (the package imports them lazily)
    return _core.CHECKERS.get(exercise)


if __name__ == "__main__":
    _main(sys.argv[1:])
