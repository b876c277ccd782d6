"""Each exercise's verdict, from the grader's replay of its check and what the kernel claimed.

The replay decides; the kernel's claims (its results file, the status a record says the kernel saw) only
serve to catch an answer that made its check pass inside the kernel, which is *flagged*. A run that ended
abnormally (a cell past the time limit, a dead kernel) gives the exercise it stopped in a ``timeout`` or
``error``.
"""

from ..exercise_format import (
    ERROR,
    FLAGGED,
    NOT_ATTEMPTED,
    NOT_ATTEMPTED_ADVICE,
    PASSED,
    STATUSES,
    TIMEOUT,
    UNVERIFIED,
)

__all__ = ["verdicts", "drop_interrupted", "abnormal"]


def verdicts(numbers, claims, replays):
    """Each exercise's grade from the grader's replay, compared with what the kernel claimed.

    The replay decides. A pass the kernel reported but the replay does not
    confirm, a check recorded twice with different verdicts, or a record that
    does not match the checker, is *flagged*, with what was seen.
    """
    out = {}
    stray = [r for r in replays if r.get("exercise") not in numbers]
    for n in numbers:
        mine = [r for r in replays if r.get("exercise") == n]
        claimed = claims.get(n, [])
        recorded_pass = any(r.get("claimed") == PASSED for r in mine)
        kernel_passed = PASSED in claimed or recorded_pass
        if mine:
            flagged = [r for r in mine if r.get("status") == FLAGGED]
            seen = {(str(r.get("status")), str(r.get("message"))) for r in mine}
            if flagged:
                out[n] = (FLAGGED, f"its check's record does not match the checker: {flagged[0].get('message')}")
            elif len({v[0] for v in seen}) > 1:
                out[n] = (FLAGGED, "its check ran more than once, with different verdicts (a forged record?)")
            else:
                status, message = sorted(seen)[0]
                status = status if status in STATUSES else ERROR
                if status == UNVERIFIED and not kernel_passed:
                    status, message = _claimed(claimed) or (ERROR, message)
                elif kernel_passed and status not in (PASSED, UNVERIFIED):
                    how = (
                        "the check was made to pass inside the kernel (its checker, its recording or what it "
                        "compares was changed)"
                        if recorded_pass
                        else "a passed verdict the check did not give was written to the results"
                    )
                    status, message = FLAGGED, f"{how}; the grader's own check of its answers says {status}: {message}"
                out[n] = (status, message)
        elif claimed:
            if kernel_passed:
                why = "a record that names no exercise of this lesson" if stray else "no record of a check"
                out[n] = (
                    FLAGGED,
                    f"a passed verdict was written for it with {why} (the results file was written to, or the "
                    "check's recording switched off)",
                )
            else:
                out[n] = _claimed(claimed)
    return out


def _claimed(claimed):
    last = claimed[-1] if claimed else None
    if last in (NOT_ATTEMPTED,):
        return NOT_ATTEMPTED, NOT_ATTEMPTED_ADVICE
    if last in STATUSES:
        return last, "the notebook's own check reported this; the grader found no record of it to replay"
    return None


def drop_interrupted(verdicts, ended):
    """Forget a verdict the time limit's interrupt cut short: the KeyboardInterrupt that stops a cell can land
    inside a check and leave its record half-written, which is the timeout's doing, not the answer's."""
    if ended != "timeout":
        return verdicts
    return {n: v for n, v in verdicts.items() if not (v[0] == FLAGGED and "KeyboardInterrupt" in v[1])}


def abnormal(ended, timeout):
    if ended == "timeout":
        return TIMEOUT, f"a cell did not finish within {timeout:g} s (an endless loop?)"
    return ERROR, "the kernel died while checking this exercise (os._exit, a crash, or memory exhausted)"
