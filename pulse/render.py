"""Text for humans: push messages, CLI lines and status blocks, rendered from a task snapshot.

Pure functions of their arguments (no I/O). The CLI imports this on every call, so it needs
only ``datetime``; ``re`` (a few ms to import) is loaded only when text needs cleaning.
"""

from __future__ import annotations

from datetime import datetime, timezone

TYPE_CHECKING = False  # typing costs milliseconds on every CLI call: for the checker only
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    Snapshot = Mapping[str, Any]  # a model.Task, or any snapshot-shaped mapping

# Escape sequences first, so their parameters go with them instead of surviving as text:
# CSI (7- and 8-bit), OSC/DCS/SOS/PM/APC strings (ended by BEL or ST, or unterminated),
# then any other two-byte ESC sequence.
_ESCAPES = (
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROLS = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"

# (en, zh) per phrase; zh is the original skill's wording, en uses the words SPEC lists.
_PHRASES = {
    "start": ("🚀 Started [{name}]", "🚀 开始【{name}】"),
    "plan": ("📋 {n} {steps}: {chain}", "📋 共{n}步: {chain}"),
    "now": ("🔄 Now: {step}", "🔄 当前: {step}"),
    "step_done": ("✅ [{d}/{t}] {step} done", "✅ [{d}/{t}] {step}完成"),
    "paren": (" ({text})", "（{text}）"),
    "finished": ("🎉 [{name}] Finished!", "🎉 【{name}】完成！"),
    "took": (" ({took})", "({took})"),
    "result": ("Result: {text}", "结果: {text}"),
    "failed": ("❌ [{name}] Failed", "❌ 【{name}】失败"),
    "error": ("Error: {text}", "错误: {text}"),
    "at_step": ("Step: {step} [{d}/{t}]", "当前步骤: {step} [{d}/{t}]"),
    "stuck": ("⚠️ [{name}] may be stuck", "⚠️ 【{name}】可能卡住了"),
    "last_update": ("Last update: {time} ({ago} ago)", "最后更新: {time}（{ago}前）"),
    "resumed": ("▶️ [{name}] is moving again", "▶️ 【{name}】恢复运行"),
    "idle": ("no update for {ago}", "已{ago}无更新"),
    "waiting": ("⏸ [{name}] waiting for you", "⏸ 【{name}】等你回复"),
    "waits": ("⏸ waiting for you: {text}", "⏸ 等你回复: {text}"),
    "eta": ("≈ {left} left", "预计还需 {left}"),
    "sec": ("{n} s", "{n} 秒"),
    "min": ("{n} min", "{n} 分钟"),
    "hour": ("{n} h", "{n} 小时"),
    "none": ("no tasks", "没有任务"),
}
_WORDS = {lang: {k: v[i] for k, v in _PHRASES.items()} for i, lang in enumerate(("en", "zh"))}
_TASK_ICONS = {"running": "🔄", "done": "✅", "error": "❌"}
_STEP_ICONS = {"done": "✅", "running": "🔄", "error": "❌", "pending": "⏳"}
_MAX_PUSH_LINES = 3


def format_duration(seconds: float) -> str:
    """Compact duration: ``42s``, ``3m5s``, ``1h2m``, ``2d3h``; negative or unknown is ``0s``."""
    try:
        s = int(seconds)
    except (TypeError, ValueError, OverflowError):
        return "0s"
    if s < 60:
        return f"{max(s, 0)}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def eta_text(task: Snapshot, lang: str = "en") -> str | None:
    """``≈ 12 min left`` / ``预计还需 12 分钟`` from the task's eta, or None without one.

    Seconds under a minute, whole minutes rounded up to 90 min, then hours and minutes
    (``≈ 2 h 5 min left``).
    """
    eta = task.get("eta")
    if not isinstance(eta, dict) or task.get("status", "running") != "running":
        return None
    try:
        seconds = max(0, int(eta["remainingSeconds"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    w = _words(lang)
    if seconds < 60:
        left = w["sec"].format(n=seconds)
    else:
        minutes = -(-seconds // 60)
        if minutes <= 90:
            left = w["min"].format(n=minutes)
        else:
            left = w["hour"].format(n=minutes // 60)
            if minutes % 60:
                left += " " + w["min"].format(n=minutes % 60)
    return w["eta"].format(left=left)


def progress_bar(done: int, total: int, width: int = 10) -> str:
    """A bar of ``width`` cells, ``█`` for the done share and ``░`` for the rest."""
    width = max(int(width), 0)
    if total <= 0:
        return "░" * width
    filled = int(width * min(max(done, 0), total) // total)
    return "█" * filled + "░" * (width - filled)


def counts(task: Snapshot) -> tuple[int, int]:
    """(steps done, total steps) of a task."""
    steps = task.get("steps") or []
    return sum(1 for s in steps if s.get("status") == "done"), len(steps)


def current_step(task: Snapshot) -> dict | None:
    """The running step, else the failed step, else None."""
    steps = task.get("steps") or []
    for status in ("running", "error"):
        for step in steps:
            if step.get("status") == status:
                return step
    return None


def clean(text: str) -> str:
    """Strip terminal escape sequences and control characters except newline and tab."""
    text = str(text)
    if text.isprintable():  # the usual case: no control character, nothing to strip
        return text
    import re

    return re.sub(_CONTROLS, "", re.sub(_ESCAPES, "", text))


def render_push(kind: str, task: Snapshot, lang: str = "en", now: datetime | None = None) -> str:
    """The chat text (at most 3 lines) for one event kind of a task."""
    w = _words(lang)
    now = _aware(now) if now else datetime.now(timezone.utc)
    d, t = counts(task)
    name = _text(task.get("taskName"))
    step = current_step(task)
    if kind == "next" and task.get("status") == "done":
        kind = "done"  # the last `next` finished the task: say so, not "→ nothing"

    if kind == "create":
        names = [_text(s.get("name")) for s in task.get("steps") or []]
        running = _running(task)
        steps_word = "step" if len(names) == 1 else "steps"
        lines = [
            w["start"].format(name=name),
            names and w["plan"].format(n=len(names), steps=steps_word, chain=" → ".join(names)),
            running and w["now"].format(step=_text(running.get("name"))),
        ]
    elif kind == "next":
        finished = next(
            (s for s in reversed(task.get("steps") or []) if s.get("status") == "done"), None
        )
        if finished is None:  # nothing finished yet: no "done" line to show, report where it is
            return _cap([_step_line("🔄", task, step, d, t)])
        running = _running(task)
        message = _text(finished.get("message"))
        lines = [
            w["step_done"].format(d=d, t=t, step=_text(finished.get("name")))
            + (message and w["paren"].format(text=message)),
            running and f"🔄 → {_text(running.get('name'))}",
            eta_text(task, lang),
        ]
    elif kind == "heartbeat":
        lines = [_step_line("💓", task, step, d, t)]
    elif kind == "done":
        result = _text(task.get("result"))
        lines = [_finished_line(task, w, now), result and w["result"].format(text=result)]
    elif kind == "error":
        error = _text(task.get("error"))
        lines = [
            w["failed"].format(name=name),
            error and w["error"].format(text=error),
            _at_step(step, w, d, t),
        ]
    elif kind == "stall":
        updated = _parse_time(task.get("updatedAt"))
        last = ""
        if updated:  # time of day as the snapshot wrote it: the zone the task's owner reads
            ago = format_duration((now - updated).total_seconds())
            last = w["last_update"].format(time=updated.strftime("%H:%M:%S"), ago=ago)
        lines = [w["stuck"].format(name=name), last, _at_step(step, w, d, t)]
    elif kind == "wait":
        lines = [
            w["waiting"].format(name=name),
            _text(task.get("question")),
            _at_step(step, w, d, t),
        ]
    elif kind == "resume":
        lines = [w["resumed"].format(name=name), step and _step_line("🔄", task, step, d, t)]
    else:
        raise ValueError(f"unknown event kind: {kind!r}")
    return _cap(lines)


def task_url(web_url: str | None, task_id: str) -> str | None:
    """The task's page on the dashboard (``PULSE_WEB_URL/?task=ID``), or None without one."""
    if not web_url or not task_id:
        return None
    from urllib.parse import quote

    return f"{web_url.rstrip('/')}/?task={quote(task_id, safe='')}"


def render_card(task: Snapshot, lang: str = "en", now: datetime | None = None) -> str:
    """The whole task in a few lines, for a chat message edited in place as the task goes:
    name, progress bar, the current step with its latest message, elapsed time and ETA."""
    w = _words(lang)
    zh = w is _WORDS["zh"]
    now = _aware(now) if now else datetime.now(timezone.utc)
    d, t = counts(task)
    status = str(task.get("status") or "running")
    name = _text(task.get("taskName"))
    lines = [f"{_TASK_ICONS.get(status, '🔄')} {f'【{name}】' if zh else name}"]
    lines.append(f"{progress_bar(d, t)} {d}/{t}")
    step = current_step(task)
    if status == "done":
        result = _text(task.get("result"))
        lines.append(w["result"].format(text=result) if result else w["finished"].format(name=name))
    elif status == "error":
        error = _text(task.get("error"))
        lines.append(w["error"].format(text=error) if error else w["failed"].format(name=name))
    elif step:
        lines.append(_step_line(_STEP_ICONS.get(str(step.get("status")), "🔄"), task, step, d, t))
    started = _parse_time(task.get("startedAt"))
    timing = []
    if started:
        ended = _parse_time(task.get("finishedAt")) if status in ("done", "error") else None
        took = format_duration(((ended or now) - started).total_seconds())
        timing.append(f"⏱ 已用 {took}" if zh else f"⏱ {took} elapsed")
    eta = eta_text(task, lang) if status == "running" else None
    if eta:
        timing.append(eta)
    if timing:
        lines.append(" · ".join(timing))
    return "\n".join(lines)


def render_cli(kind: str, task: Snapshot, lang: str = "en") -> str:
    """The one plain stdout line of an update verb (create, next, heartbeat, done, error)."""
    w = _words(lang)
    d, t = counts(task)
    if kind == "create":
        return _text(task.get("taskId"))
    if kind == "done" or (kind == "next" and task.get("status") == "done"):
        return _finished_line(task, w, datetime.now(timezone.utc))
    if kind == "next":
        running = _running(task)
        return f"[{d}/{t}] {progress_bar(d, t)} → {_text(running.get('name')) if running else '—'}"
    if kind in ("heartbeat", "resume"):  # a heartbeat of a stalled task is emitted as resume
        return _step_line("💓", task, current_step(task), d, t)
    if kind == "wait":
        return _step_line("⏸", task, current_step(task), d, t, _text(task.get("question")))
    if kind == "error":
        error = _text(task.get("error"))
        return w["failed"].format(name=_text(task.get("taskName"))) + (error and f": {error}")
    raise ValueError(f"unknown update verb: {kind!r}")


def render_status(tasks: Sequence[Snapshot], lang: str = "en", now: datetime | None = None) -> str:
    """One block per task, then a count line (or a single 'no tasks' line)."""
    w = _words(lang)
    if not tasks:
        return w["none"]
    now = _aware(now) if now else datetime.now(timezone.utc)
    tally = {"running": 0, "done": 0, "error": 0, "stalled": 0}
    blocks = []
    for task in tasks:
        status = task.get("status", "")
        stalled = bool(task.get("stalled"))
        # A stalled task counts as stalled only, so the four numbers add up to the total.
        bucket = "stalled" if stalled else status
        if bucket in tally:
            tally[bucket] += 1
        d, t = counts(task)
        icon = "⚠️" if stalled else _TASK_ICONS.get(status, "❓")
        lines = [
            f"{icon} {_text(task.get('taskName'))} [{d}/{t}] {progress_bar(d, t)}"
            f" ({_text(task.get('taskId'))})"
        ]
        for step in task.get("steps") or []:
            line = f"  {_STEP_ICONS.get(step.get('status'), '❓')} {_text(step.get('name'))}"
            percent = _percent(step) if step.get("status") == "running" else None
            if percent is not None:
                line += f" {percent}%"
            message = _text(step.get("message"))
            lines.append(line + (message and f" — {message}"))
        result, error = _text(task.get("result")), _text(task.get("error"))
        if status == "done" and result:
            lines.append("  " + w["result"].format(text=result))
        if status == "error" and error:
            lines.append("  " + w["error"].format(text=error))
        if status == "running" and task.get("waiting"):
            lines.append("  " + w["waits"].format(text=_text(task.get("question"))))
        left = eta_text(task, lang)
        if left:
            lines.append("  " + left)
        updated = _parse_time(task.get("updatedAt"))
        if stalled and updated:
            ago = format_duration((now - updated).total_seconds())
            lines.append("  " + w["idle"].format(ago=ago))
        blocks.append("\n".join(lines))
    n, r, dn, e, s = len(tasks), tally["running"], tally["done"], tally["error"], tally["stalled"]
    if w is _WORDS["zh"]:
        summary = f"共{n}个任务：运行中{r}，完成{dn}，失败{e}，卡住{s}"
    else:
        summary = f"{n} task{'' if n == 1 else 's'}: {r} running, {dn} done, {e} error, {s} stalled"
    return "\n\n".join(blocks + [summary])


def render_history(rows: list[dict], lang: str = "en") -> str:
    """``pulse history``: a block per task name, a line per step (durations in seconds)."""
    zh = _words(lang) is _WORDS["zh"]
    if not rows:
        return "还没有历史记录" if zh else "no history yet"
    blocks: dict[str, list[str]] = {}
    for r in rows:
        f = format_duration
        took = f"{f(r['median'])} / p95 {f(r['p95'])}"
        quiet = f"{f(r['quietMedian'])} / p95 {f(r['quietP95'])}"
        step = _text(r["step"])
        if zh:
            line = f"  {step}: {r['runs']}次, 用时中位 {took}, 最长无更新中位 {quiet}"
        else:
            runs = f"{r['runs']} run{'' if r['runs'] == 1 else 's'}"
            line = f"  {step}: {runs}, took median {took}, longest quiet median {quiet}"
        blocks.setdefault(_text(r["taskName"]), []).append(line)
    return "\n\n".join("\n".join([name, *lines]) for name, lines in blocks.items())


def _words(lang: str | None) -> dict:
    # Accept locale-ish values ("zh_CN", "zh-Hans") as well as the bare code.
    return _WORDS["zh" if str(lang or "").lower().startswith("zh") else "en"]


def _text(value: object) -> str:
    """User text as one clean line: a newline in a message must not add lines to a push."""
    if value is None:
        return ""
    return " ".join(clean(str(value)).split())


def _cap(lines: list) -> str:
    return "\n".join([line for line in lines if line][:_MAX_PUSH_LINES])


def _running(task: Snapshot) -> dict | None:
    return next((s for s in task.get("steps") or [] if s.get("status") == "running"), None)


def _percent(step: dict | None) -> int | None:
    try:
        value = float(step["progress"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None
    if value != value:  # NaN
        return None
    return int(min(max(value, 0.0), 100.0) + 0.5)


def _step_line(
    icon: str, task: Snapshot, step: dict | None, d: int, t: int, message: str | None = None
) -> str:
    """``💓 [1/3] build ████░░░░░░ 40%: message``; the bar only when the step reports progress."""
    label = _text(step.get("name")) if step else _text(task.get("taskName"))
    line = f"{icon} [{d}/{t}] {label}"
    percent = _percent(step)
    if percent is not None:
        line += f" {progress_bar(percent, 100)} {percent}%"
    if message is None:
        message = _text(step.get("message")) if step else ""
    return line + (message and f": {message}")


def _at_step(step: dict | None, w: dict, d: int, t: int) -> str:
    return w["at_step"].format(step=_text(step.get("name")), d=d, t=t) if step else ""


def _finished_line(task: Snapshot, w: dict, now: datetime) -> str:
    line = w["finished"].format(name=_text(task.get("taskName")))
    started = _parse_time(task.get("startedAt"))
    if started is None:
        return line
    ended = _parse_time(task.get("finishedAt")) or now
    return line + w["took"].format(took=format_duration((ended - started).total_seconds()))


def _aware(moment: datetime) -> datetime:
    # A naive time is taken as local time, the way a person would have written it.
    return moment if moment.tzinfo else moment.astimezone()


def _parse_time(value: object) -> datetime | None:
    """An ISO 8601 string as an aware datetime, or None; tolerates ``Z`` and odd fractions."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        pass
    # Python 3.10 only reads fractions of exactly 3 or 6 digits; JS and Go write others.
    import re

    text = re.sub(r"(\.\d+)", lambda m: (m.group(1) + "000000")[:7], text, count=1)
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None
