"""What each verb does, over the library's public API; the parsers in ``fast`` and ``app``
only turn arguments into calls of these functions."""

from __future__ import annotations

import json
import sys

from .. import render
from ..client import Client
from ..settings import Settings, check_namespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..store import Change


class Globals:
    """Options every verb takes; each wins over its environment variable."""

    __slots__ = ("namespace", "lang", "url")

    def __init__(
        self, namespace: str | None = None, lang: str | None = None, url: str | None = None
    ) -> None:
        self.namespace = namespace
        self.lang = lang
        self.url = url

    def settings(self) -> Settings:
        s = Settings.from_env()
        if self.namespace:
            s = s.replace(namespace=check_namespace(self.namespace))
        if self.lang:
            s = s.replace(lang="zh" if self.lang.lower().startswith("zh") else "en")
        if self.url:
            s = s.replace(redis_url=self.url)
        return s

    def client(self) -> Client:
        return Client(self.settings(), warn=warn)


def warn(message: str) -> None:
    sys.stderr.write(f"pulse: warning: {message}\n")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def out_json(doc: Any) -> None:
    out(json.dumps(doc, ensure_ascii=False, indent=2))


def _event(change: Change, lang: str, push: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": change.event_id, "kind": change.kind, "task": change.task}
    if push:
        doc["push"] = render.render_push(change.kind, change.task, lang)
    return doc


def create(
    g: Globals, name: str, steps: list[str], stall: float | None, as_json: bool, push: bool
) -> None:
    client = g.client()
    change = client.create(name, steps, stall=stall).change
    lang = client.settings.lang
    if as_json:
        out_json(_event(change, lang, push))
        return
    out(change.task["taskId"])  # alone on its line, for TASK_ID=$(pulse create ...)
    if push:
        out(render.render_push(change.kind, change.task, lang))


def update(
    g: Globals,
    op: str,
    task_id: str,
    words: list[str],
    progress: float | None,
    as_json: bool,
    push: bool,
) -> None:
    client = g.client()
    message = " ".join(words) if words else None
    change = client.update(task_id, op, message, progress)
    lang = client.settings.lang
    if as_json:
        out_json(_event(change, lang, push))
    elif push:
        out(render.render_push(change.kind, change.task, lang))
    else:
        out(render.render_cli(change.kind, change.task, lang))


def status(g: Globals, task_id: str | None, view: str, limit: int, as_json: bool) -> None:
    client = g.client()
    lang = client.settings.lang
    if task_id:
        task = client.get(task_id)
        out_json(task) if as_json else out(render.render_status([task], lang))
        return
    tasks, total = client.listing(view, limit=limit)
    if as_json:
        out_json({"tasks": tasks, "count": len(tasks), "total": total})
        return
    out(render.render_status(tasks, lang))
    if total > len(tasks):  # say what the limit left out, never cut quietly
        if lang == "zh":
            out(f"仅显示{len(tasks)}个，共{total}个；用 --limit N 查看更多（0：全部）")
        else:
            out(f"showing {len(tasks)} of {total}, --limit N for more (0: all)")


def history(g: Globals, name: str | None, as_json: bool) -> None:
    client = g.client()
    rows = client.history(name)
    if as_json:
        out_json({"steps": rows})
        return
    out(render.render_history(rows, client.settings.lang))


def cleanup(g: Globals, days: float | None, as_json: bool) -> None:
    client = g.client()
    removed = client.cleanup(days)
    if as_json:
        out_json({"removed": removed})
    elif client.settings.lang == "zh":
        out(f"已清理{removed}个已结束的任务")
    else:
        out(f"removed {removed} finished task{'s' if removed != 1 else ''}")


def recover(g: Globals, folder: str | None, as_json: bool) -> None:
    from pathlib import Path

    client = g.client()
    report = client.recover(Path(folder) if folder else None)
    for problem in report.refused:
        warn(f"skipped {problem}")
    if as_json:
        out_json(vars(report))
    elif client.settings.lang == "zh":
        out(
            f"已恢复{report.restored}个任务（{report.unchanged}个无需恢复，"
            f"{report.expired}个已过期）"
        )
    else:
        out(
            f"restored {report.restored} tasks ({report.unchanged} unchanged, "
            f"{report.expired} expired)"
        )


def sync(g: Globals, as_json: bool, conflicts: bool = False) -> None:
    client = g.client()
    if conflicts:
        _conflicts(client, as_json)
        return
    report = client.replay()  # warns of conflicts and of entries for another Redis
    replayed = report.applied
    if as_json:
        out_json(
            {
                "replayed": replayed,
                "alreadyApplied": report.already,
                "conflicts": report.conflicts,
                "waiting": report.waiting,
                "elsewhere": report.elsewhere,
            }
        )
    elif client.settings.lang == "zh":
        out(f"已补发{replayed}条离线记录的更新")
    else:
        out(f"replayed {replayed} journaled update{'s' if replayed != 1 else ''}")


def _conflicts(client: Client, as_json: bool) -> None:
    """The journaled updates that could not apply: one line each, oldest first."""
    kept = client.conflicts()
    if as_json:
        out_json({"conflicts": kept, "file": str(client.journal.conflicts_path)})
        return
    for c in kept:
        task = c["task"]["taskId"] if c.get("op") == "create" else c.get("taskId")
        step = f" (made for step {c['step']})" if c.get("step") else ""
        text = render.clean(str(c.get("message") or "")).replace("\n", " ")
        said = f": {text}" if text else ""
        out(f"{c.get('now') or ''} {c.get('op')} {task}{step}{said} -- {c.get('conflict')}")
    if client.settings.lang == "zh":
        out(f"{len(kept)}条冲突，保存在 {client.journal.conflicts_path}")
    else:
        out(
            f"{len(kept)} conflict{'s' if len(kept) != 1 else ''}, kept in "
            f"{client.journal.conflicts_path}"
        )


def server(g: Globals, action: str, as_json: bool) -> None:
    from ..embedded import EmbeddedServer

    settings = g.settings()
    if settings.redis_url:
        warn("PULSE_REDIS_URL is set, so pulse does not use the embedded server")
    embedded = EmbeddedServer()
    if action == "start":
        embedded.start()
    if action == "stop":
        stopped = embedded.stop()
        if as_json:
            out_json({"stopped": stopped})
        else:
            out("embedded Redis stopped" if stopped else "embedded Redis was not running")
        return
    info = embedded.status()
    if as_json:
        out_json({"running": info is not None, **(info or {}), "url": embedded.url})
    elif info is None:
        out(f"embedded Redis is not running (it starts on first use at {embedded.url})")
    else:
        out(f"embedded Redis running at {embedded.url} (pid {info['pid']}, data in {info['dir']})")
