"""``pulse watch``: a live table of tasks that redraws as events arrive on the channel.

With a terminal, rich draws the table; otherwise (a pipe, a log file) each event is one plain
line, so ``pulse watch | tee`` is useful too.
"""

from __future__ import annotations

import sys
from typing import Any

from .. import render
from ..connection import redis_client
from ..events import Event, listen
from .commands import Globals, out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Task


def watch(g: Globals, task_id: str | None) -> None:
    client = g.client()
    lang = client.settings.lang
    tasks: dict[str, Task] = {}
    if task_id:
        first = client.get(task_id)
        task_id = first["taskId"]
        tasks[task_id] = first
    else:
        tasks = {t["taskId"]: t for t in client.status()}
    # redis.Redis, or RedisCluster on a cluster: listen subscribes on the right node
    events = listen(redis_client(client.settings), client.settings.namespace)
    if not sys.stdout.isatty():
        for event in events:
            if event and (task_id is None or event.task["taskId"] == task_id):
                out(_line(event, lang))
                sys.stdout.flush()
        return
    from rich.live import Live

    with Live(_table(tasks, lang), auto_refresh=False) as live:
        for event in events:
            if event is not None:
                tid = event.task["taskId"]
                if task_id is not None and tid != task_id:
                    continue
                known = tasks.get(tid)
                if known is None or known["version"] <= event.task["version"]:
                    tasks[tid] = event.task
            tasks = {t["taskId"]: t for t in client.derive_stalled(list(tasks.values()))}
            live.update(_table(tasks, lang), refresh=True)


def _line(event: Event, lang: str) -> str:
    text = render.render_push(event.kind, event.task, lang).replace("\n", " | ")
    return f"{event.at} {event.kind} {event.task['taskId']} {text}"


def _table(tasks: dict[str, Task], lang: str) -> Any:
    from rich.table import Table

    table = Table(expand=True)
    for title in ("", "task", "progress", "step", "left", "updated"):
        table.add_column(title, overflow="fold")
    icons = {"running": "🔄", "done": "✅", "error": "❌"}
    ordered = sorted(tasks.values(), key=lambda t: t["updatedAt"], reverse=True)
    for t in ordered[:50]:
        done, total = render.counts(t)
        step = render.current_step(t)
        detail = ""
        if step is not None:
            detail = render.clean(step["name"])
            if step.get("message"):
                detail += f": {render.clean(step['message'])}"
        elif t["status"] == "done" and (result := t.get("result")):
            detail = render.clean(result)
        icon = "⚠️" if t.get("stalled") else icons.get(t["status"], "?")
        if t.get("waiting") and t["status"] == "running":
            icon, detail = "⏸", f"{detail} ⏸ {render.clean(t.get('question') or '')}".strip()
        left = render.eta_text(t, lang) or ""
        table.add_row(
            icon,
            render.clean(t["taskName"]),
            f"{render.progress_bar(done, total)} {done}/{total}",
            detail,
            left,
            t["updatedAt"][11:19],
        )
    return table
