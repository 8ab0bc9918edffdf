"""The task model, pure: ids, checks, the snapshot document and its transitions.

A task is kept as its snapshot, the JSON object of SPEC (a superset of the seed skill's task
file). The transitions here are the reference for ``scripts/update.lua``, which applies the
same ones atomically inside Redis; tests hold the two to the same results.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta

from .errors import AmbiguousId, BadValue, StepConflict, TaskFinished, TaskNotFound
from .keys import HISTORY_MIN_RUNS, HISTORY_RUNS
from .render import clean

OPS: tuple[str, ...] = ("next", "heartbeat", "done", "error", "wait")

# Size caps. Names and ids are refused past them (they become keys, file names and headings);
# free text is cut with a visible mark, so a runaway log line never fills Redis or a chat.
MAX_NAME = 200
MAX_STEPS = 100
MAX_TEXT = 4000
MAX_ID = 120
# Ids become file names (``ID.json``, and a temp file a little longer): 200 bytes in UTF-8 keep
# them under the 255 bytes every common file system allows, whatever the script.
MAX_ID_BYTES = 200
ID_NAME_CHARS = 60
# ``-YYYYmmdd-HHMMSS-xxxx`` after the name part of a created id
_ID_SUFFIX_BYTES = 21

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ID_RE = re.compile(r"^\w[\w.-]*\Z")  # \Z: "$" would let a trailing newline in
_UNSAFE = re.compile(r"[^\w.-]+")


# The snapshot's types, for type checkers only: the typing module costs milliseconds at import,
# and at run time a task is the plain dict that json gives.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TypedDict

    class Step(TypedDict, total=False):
        name: str
        status: str  # pending | running | done | error
        startedAt: str
        finishedAt: str
        message: str
        progress: float

    class Task(TypedDict):
        taskId: str
        taskName: str
        status: str  # running | done | error
        stalled: bool
        startedAt: str
        updatedAt: str
        finishedAt: str | None
        steps: list[Step]
        error: str | None
        result: str | None
        version: int
        namespace: str
        host: str | None
        agent: str | None
        stallSeconds: int
        waiting: bool
        question: str | None
        stallAfter: int
        eta: Eta | None

    class Eta(TypedDict):
        remainingSeconds: int
        finishAt: str
        runs: int


FIELDS = (
    "taskId", "taskName", "status", "stalled", "startedAt", "updatedAt", "finishedAt", "steps",
    "error", "result", "version", "namespace", "host", "agent", "stallSeconds", "waiting",
    "question", "stallAfter", "eta",
)  # fmt: skip


# -- ids ---------------------------------------------------------------------------------


def safe_name(name: str) -> str:
    """The name as a safe file name part: word characters, '.', '-', at most 60 chars."""
    safe = _UNSAFE.sub("_", name).strip("._-")
    safe = re.sub(r"\.{2,}", ".", safe)[:ID_NAME_CHARS].strip("._-")
    safe = _cut_bytes(safe, MAX_ID_BYTES - _ID_SUFFIX_BYTES).strip("._-")
    return safe or "task"


def _cut_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, on a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")  # "ignore" drops a character cut in two


def make_id(name: str, now: datetime) -> str:
    """``<safe name>-<YYYYmmdd-HHMMSS>-<4 random hex>``, as the seed skill made them."""
    return f"{safe_name(name)}-{now:%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"


def check_id(task_id: str) -> str:
    """Refuse anything that could leave the mirror folder or the namespace's keys."""
    if not task_id or len(task_id) > MAX_ID or not _ID_RE.match(task_id) or ".." in task_id:
        raise BadValue(
            f"not a task id: {_show(task_id)} (ids are letters, digits, '_', '.', '-'; no '..')"
        )
    if len(task_id.encode()) > MAX_ID_BYTES:
        raise BadValue(f"not a task id: {_show(task_id)} (over {MAX_ID_BYTES} bytes in UTF-8)")
    return task_id


def resolve(prefix: str, candidates: list[str], *, total: int | None = None) -> str:
    """The one id that is ``prefix`` or starts with it; names the candidates otherwise.

    ``total``: how many ids match in all, when ``candidates`` holds only the first of them."""
    if prefix in candidates:
        return prefix
    matches = sorted(c for c in candidates if c.startswith(prefix))
    if not matches:
        raise TaskNotFound(f"no task {_show(prefix)}")
    if len(matches) > 1:
        count = max(total or 0, len(matches))
        shown = ", ".join(matches[:5]) + (", ..." if count > 5 else "")
        raise AmbiguousId(f"{_show(prefix)} matches {count} tasks: {shown}")
    return matches[0]


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


# -- input checks ------------------------------------------------------------------------


def check_name(name: str, what: str = "task name") -> str:
    name = name.strip()
    if not name:
        raise BadValue(f"the {what} is empty")
    if _CONTROL.search(name):
        raise BadValue(f"the {what} {_show(name)} contains control characters")
    if len(name) > MAX_NAME:
        raise BadValue(f"the {what} is {len(name)} characters long; at most {MAX_NAME} allowed")
    return name


def check_steps(steps: list[str]) -> list[str]:
    if not steps:
        raise BadValue("a task needs at least one step")
    if len(steps) > MAX_STEPS:
        raise BadValue(f"{len(steps)} steps; at most {MAX_STEPS} allowed")
    return [check_name(s, "step name") for s in steps]


def check_text(text: str | None) -> tuple[str | None, bool]:
    """Message or result with terminal escape sequences and control characters (but newline
    and tab) dropped, cut past MAX_TEXT with a mark.

    Returns the text and whether it was cut, so the caller can say so.
    """
    if text is None:
        return None, False
    text = clean(text)
    if len(text) <= MAX_TEXT:
        return text, False
    cut = len(text) - MAX_TEXT
    return f"{text[:MAX_TEXT]}… [cut {cut} chars]", True


def check_progress(progress: float | None) -> float | None:
    if progress is None:
        return None
    if not 0 <= progress <= 100:  # also refuses NaN
        raise BadValue(f"progress {progress:g} is outside 0-100")
    return int(progress) if progress == int(progress) else round(progress, 2)


# A year: past it a stall alert means nothing, and inf or 1e400 would not fit an integer.
MAX_STALL = 365 * 86400


def check_stall(seconds: float) -> int:
    if not 1 <= seconds <= MAX_STALL:  # also refuses NaN and infinities
        raise BadValue(
            f"stall seconds must be at least 1 and at most {MAX_STALL} (a year), not {seconds:g}"
        )
    return int(seconds)


# -- text that looks different from what it is ------------------------------------------

# Bidi embeddings, overrides and isolates (they reorder what follows, in a terminal or a chat)
# and invisible characters (zero width space, word joiner, BOM). The joiners U+200C and U+200D
# stay: emoji sequences and several scripts need them.
_INVISIBLE = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200B, 0x2060, 0xFEFF])


def strip_invisible(text: str) -> tuple[str, bool]:
    """``text`` without bidi controls and invisible characters, and whether any were there."""
    if text.isascii():  # the usual case, and cheap
        return text, False
    out = text.translate(_INVISIBLE)
    return out, len(out) != len(text)


# -- the snapshot ------------------------------------------------------------------------


def new_task(
    task_id: str,
    name: str,
    steps: list[str],
    now: str,
    *,
    stall_seconds: int,
    namespace: str,
    host: str | None = None,
    agent: str | None = None,
) -> Task:
    """A task just created: its first step running, the rest pending, version 1."""
    step_list: list[Step] = [{"name": s, "status": "pending"} for s in steps]
    step_list[0]["status"], step_list[0]["startedAt"] = "running", now
    return {
        "taskId": task_id,
        "taskName": name,
        "status": "running",
        "stalled": False,
        "startedAt": now,
        "updatedAt": now,
        "finishedAt": None,
        "steps": step_list,
        "error": None,
        "result": None,
        "version": 1,
        "namespace": namespace,
        "host": host,
        "agent": agent,
        "stallSeconds": stall_seconds,
        "waiting": False,
        "question": None,
        "stallAfter": stall_seconds,
        "eta": None,
    }


def running_index(task: Task) -> int | None:
    for i, step in enumerate(task["steps"]):
        if step.get("status") == "running":
            return i
    return None


# Updates that act on the running step: made for one step (offline, say), they must not land
# on another. ``done`` and ``error`` end the whole task, whatever step runs.
STEP_OPS = ("next", "heartbeat")


def apply(
    task: Task,
    op: str,
    now: str,
    message: str | None = None,
    progress: float | None = None,
    agent: str | None = None,
    *,
    step: int | None = None,
    pace: dict[str, Any] | None = None,
    history: dict[str, list[list[int]]] | None = None,
    now_ms: int | None = None,
    min_runs: int = HISTORY_MIN_RUNS,
    keep: int = HISTORY_RUNS,
) -> tuple[Task, str]:
    """The task after ``op``, and the event kind it emits. Same rules as update.lua.

    ``step``: the 1-based index of the step the update was made for (a journaled update);
    ``next`` and ``heartbeat`` then apply only while that step runs, else StepConflict. A
    task's time never goes back: ``now`` before its ``updatedAt`` (an update made offline,
    replayed after another host's) is stamped with ``updatedAt``.

    With ``pace`` (the running step's hidden state, see ``new_pace``), ``history`` and
    ``now_ms``, also what update.lua learns and records: both are changed in place, and the
    task gets its stallAfter and eta. Without them (an update journaled while Redis is
    unreachable) only ``waiting`` and ``question`` follow the update.
    """
    if task["status"] != "running":
        raise TaskFinished(f"task {task['taskId']} is already {task['status']}")
    t: Any = normalize(task)
    steps = t["steps"]
    i = running_index(t)
    check_step(t, op, step, i)
    now = not_before(now, t["updatedAt"])
    step = steps[i] if i is not None else None
    kind = op
    if op == "next":
        if step is not None:
            _finish_step(step, "done", now, message)
        following = (i + 1) if i is not None else 0
        pending = next(
            (j for j in range(following, len(steps)) if steps[j]["status"] == "pending"), None
        )
        if pending is None:
            t.update(status="done", finishedAt=now)
            kind = "done"
        else:
            steps[pending].update(status="running", startedAt=now)
    elif op == "heartbeat":
        if step is not None:
            if message is not None:
                step["message"] = message
            if progress is not None:
                step["progress"] = progress
    elif op == "done":
        if step is not None:
            _finish_step(step, "done", now, None)
        t.update(status="done", finishedAt=now, result=message)
    elif op == "error":
        if step is not None:
            _finish_step(step, "error", now, None)
        t.update(status="error", finishedAt=now, error=message)
    elif op != "wait":  # a wait changes only what pace_update sets
        raise BadValue(f"unknown update {op!r}")
    t["updatedAt"] = now
    t["version"] += 1
    t["stalled"] = False
    if agent:
        t["agent"] = agent
    if pace is None or history is None or now_ms is None:
        _wait_flags(t, op, message)
    else:
        pace_update(pace, t, op, i, message, now, now_ms, history, keep=keep, min_runs=min_runs)
    return t, kind


def check_step(task: Task, op: str, step: int | None, running: int | None) -> None:
    """StepConflict unless ``op`` made for ``step`` (1-based) fits the running step."""
    if step is None or op not in STEP_OPS:
        return
    if running is None or running + 1 != step:
        now_running = "no step" if running is None else f"step {running + 1}"
        raise StepConflict(
            f"task {task['taskId']}: the {op} was made for step {step}, but {now_running} runs",
            running=0 if running is None else running + 1,
        )


def not_before(now: str, last: str) -> str:
    """``now``, or ``last`` if that is later (compared to the second, as they are written)."""
    try:
        if int(parse_time(last).timestamp()) > int(parse_time(now).timestamp()):
            return last
    except BadValue:
        pass
    return now


def _finish_step(step: Step, status: str, now: str, message: str | None) -> None:
    step["status"] = status
    step["finishedAt"] = now
    step.pop("progress", None)
    if message is not None:
        step["message"] = message


def normalize(raw: Mapping[str, Any], *, namespace: str | None = None) -> Task:
    """A snapshot in SPEC's field order, with missing fields filled (seed files lack some).

    BadValue naming the field if one has a type no snapshot has (a file from elsewhere)."""
    steps = []
    raw_steps = raw.get("steps") or []
    if not isinstance(raw_steps, list):
        raise BadValue("'steps' is not a list")
    for s in raw_steps:
        if not isinstance(s, dict):
            raise BadValue("a step is not an object")
        step: dict[str, Any] = {
            "name": str(s.get("name", "")),
            "status": s.get("status", "pending"),
        }
        for k in ("startedAt", "finishedAt", "message", "progress"):
            if s.get(k) is not None:
                step[k] = s[k]
        steps.append(step)
    started = raw.get("startedAt") or raw.get("createdAt") or raw.get("updatedAt")
    task: dict[str, Any] = {
        "taskId": raw.get("taskId") or raw.get("id"),
        "taskName": raw.get("taskName") or raw.get("name") or raw.get("taskId"),
        "status": raw.get("status", "running"),
        "stalled": bool(raw.get("stalled", False)),
        "startedAt": started,
        "updatedAt": raw.get("updatedAt") or started,
        "finishedAt": raw.get("finishedAt"),
        "steps": steps,
        "error": raw.get("error"),
        "result": raw.get("result"),
        "version": _whole(raw, "version") or 1,
        "namespace": raw.get("namespace") or namespace,
        "host": raw.get("host"),
        "agent": raw.get("agent"),
        "stallSeconds": _whole(raw, "stallSeconds") or None,
        "waiting": bool(raw.get("waiting", False)),
        "question": raw.get("question"),
        "stallAfter": _whole(raw, "stallAfter") or _whole(raw, "stallSeconds") or None,
        "eta": raw.get("eta") or None,
    }
    return task  # type: ignore[return-value]


def _whole(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadValue(f"{key!r} is not a number: {_show(str(value))}")
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise BadValue(f"{key!r} is not a whole number: {_show(str(value))}") from None
    if number < 0:
        raise BadValue(f"{key!r} is negative: {number}")
    return number


def check_snapshot(task: Task) -> Task:
    """Refuse a loaded file that is not a task we could store and show."""
    if not isinstance(task["taskId"], str):
        raise BadValue(f"the task id is not a string: {_show(str(task['taskId']))}")
    check_id(task["taskId"])
    if not isinstance(task["status"], str) or task["status"] not in ("running", "done", "error"):
        raise BadValue(f"task {task['taskId']}: unknown status {_show(str(task['status']))}")
    if not task["steps"] or not task["startedAt"]:
        raise BadValue(f"task {task['taskId']}: no steps or no start time")
    for s in task["steps"]:
        if s["status"] not in ("pending", "running", "done", "error"):
            raise BadValue(f"task {task['taskId']}: a step has status {_show(str(s['status']))}")
    for k in ("taskName", "error", "result", "host", "agent", "namespace"):
        if task[k] is not None and not isinstance(task[k], str):  # type: ignore[literal-required]
            raise BadValue(f"task {task['taskId']}: {k!r} is not a string")
    for k in ("startedAt", "updatedAt", "finishedAt"):
        if task[k] is not None:  # type: ignore[literal-required]
            parse_time(task[k])  # type: ignore[literal-required]
    return task


# -- time --------------------------------------------------------------------------------


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        raise BadValue(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def is_stalled(task: Task, now: datetime, default_stall: int) -> bool:
    """Running, not waiting for a person, and quiet for longer than its stallAfter."""
    if task["status"] != "running" or task.get("waiting"):
        return False
    quiet = (now - parse_time(task["updatedAt"])).total_seconds()
    return quiet > (task.get("stallAfter") or task.get("stallSeconds") or default_stall)


# -- history, waiting and the ETA ---------------------------------------------------------
# The same rules as scripts/include/history.lua, on integer ms so both round alike. A step
# history is a list of [duration ms, longest quiet spell ms], oldest first; the pace is the
# running step's hidden state the scripts keep in the task hash (fields named alike).


def history_field(name: str, step: str) -> str:
    """The history hash's field of (task name, step name): names hold no control characters."""
    return f"{name}\n{step}"


def median_ms(values: list[int]) -> int:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) // 2


def p95_ms(values: list[int]) -> int:
    """The 95th percentile by nearest rank: the smallest value at least 95% are not above."""
    v = sorted(values)
    return v[(95 * len(v) + 99) // 100 - 1]


def step_stats(samples: list[list[int]]) -> dict[str, int]:
    """runs, median and p95 duration, median and p95 longest quiet spell (ms) of a history."""
    durations = [d for d, _ in samples]
    quiet = [q for _, q in samples]
    return {
        "runs": len(samples),
        "median": median_ms(durations),
        "p95": p95_ms(durations),
        "quietMedian": median_ms(quiet),
        "quietP95": p95_ms(quiet),
    }


def learned_stall(stall_seconds: int, quiet_samples: list[int]) -> int:
    """stallAfter: the larger of stallSeconds and 1.5 x the p95 quiet spell, whole seconds up."""
    return max(stall_seconds, (3 * p95_ms(quiet_samples) + 1999) // 2000)


def new_pace(*, adaptive: bool = True) -> dict[str, Any]:
    return {
        "adaptive": adaptive, "after": None, "sstart": None, "qlast": None, "qmax": 0,
        "paused": 0, "waitfrom": None, "med": None, "ahead": None, "runs": None,
    }  # fmt: skip


def pace_start(
    pace: dict[str, Any],
    task: Task,
    j: int,
    now_ms: int,
    history: dict[str, list[list[int]]],
    min_runs: int = HISTORY_MIN_RUNS,
) -> None:
    """Step ``j`` (0-based) starts now: what history knows of it and of the steps after."""
    name = task["taskName"]
    known = [history.get(history_field(name, s["name"])) for s in task["steps"][j:]]
    after = task["stallSeconds"]
    first = known[0]
    if pace["adaptive"] and first and len(first) >= min_runs:
        after = learned_stall(after, [q for _, q in first])
    med = ahead = runs = None
    if all(h and len(h) >= min_runs for h in known):
        med = median_ms([d for d, _ in known[0]])  # type: ignore[index,union-attr]
        ahead = sum(median_ms([d for d, _ in h]) for h in known[1:])  # type: ignore[union-attr,misc]
        runs = min(len(h) for h in known)  # type: ignore[arg-type]
    pace.update(
        sstart=now_ms, qlast=now_ms, qmax=0, paused=0, waitfrom=None,
        after=after, med=med, ahead=ahead, runs=runs,
    )  # fmt: skip
    task["stallAfter"] = after


def pace_eta(pace: dict[str, Any], task: Task, now: str, now_ms: int) -> None:
    """The task's eta as of now (null unless history knows every step ahead)."""
    if task["status"] != "running" or pace["ahead"] is None or pace["sstart"] is None:
        task["eta"] = None
        return
    ran = now_ms - pace["sstart"] - pace["paused"]
    if pace["waitfrom"] is not None:
        ran -= now_ms - pace["waitfrom"]
    remaining = (pace["ahead"] + max(0, pace["med"] - ran) + 500) // 1000
    finish = iso(parse_time(now) + timedelta(seconds=remaining))
    task["eta"] = {"remainingSeconds": remaining, "finishAt": finish, "runs": pace["runs"]}


def pace_update(
    pace: dict[str, Any],
    task: Task,
    op: str,
    i: int | None,
    message: str | None,
    now: str,
    now_ms: int,
    history: dict[str, list[list[int]]],
    *,
    keep: int = HISTORY_RUNS,
    min_runs: int = HISTORY_MIN_RUNS,
) -> None:
    """One update at ``now_ms`` after the snapshot's own transition (``i``: the step running
    before it): the finished step's run into the history, a wait begun or ended, and the
    task's waiting, question, stallAfter and eta. Time waited counts neither as the step's
    duration nor as quiet; heartbeats end a quiet spell but not a wait."""
    was_waiting = bool(task.get("waiting"))
    if op == "wait" and not was_waiting:
        pace["waitfrom"] = now_ms
    elif op not in ("wait", "heartbeat"):
        if was_waiting:
            waitfrom = pace["waitfrom"]
            pace["paused"] += now_ms - (now_ms if waitfrom is None else waitfrom)
        pace["waitfrom"] = None
    _wait_flags(task, op, message)
    if not was_waiting and pace["qlast"] is not None:
        pace["qmax"] = max(pace["qmax"], now_ms - pace["qlast"])
    pace["qlast"] = now_ms
    steps = task["steps"]
    if i is not None and pace["sstart"] is not None and steps[i]["status"] == "done":
        duration = max(0, now_ms - pace["sstart"] - pace["paused"])
        runs = history.setdefault(history_field(task["taskName"], steps[i]["name"]), [])
        runs.append([duration, pace["qmax"]])
        del runs[:-keep]
    j = running_index(task)
    if j is not None and j != i:
        pace_start(pace, task, j, now_ms, history, min_runs)
    pace_eta(pace, task, now, now_ms)


def _wait_flags(task: Task, op: str, message: str | None) -> None:
    if op == "wait":
        task["waiting"], task["question"] = True, message
    elif op != "heartbeat":
        task["waiting"], task["question"] = False, None


def refresh_eta(task: Task, now: datetime) -> None:
    """The eta's remaining seconds as of ``now`` (read later than the update that set it);
    a wait holds it where it was."""
    eta = task.get("eta")
    if not eta or task["status"] != "running" or task.get("waiting"):
        return
    try:
        left = (parse_time(eta["finishAt"]) - now).total_seconds()
    except (BadValue, KeyError, TypeError):
        return
    eta["remainingSeconds"] = max(0, min(int(eta["remainingSeconds"]), round(left)))
