#!/usr/bin/env python3
"""The seed skill's ``task_pulse.py`` cut down to what bench_cli.py times: stdlib only.

    seed_task_pulse.py create NAME STEP [STEP...]   prints the task id
    seed_task_pulse.py next ID [MESSAGE...]         [done/total] bar -> next step
    seed_task_pulse.py heartbeat ID [MESSAGE...]    sets the running step's message

Like the seed it keeps one JSON file per task in TASK_PULSE_DIR (found by exact id, else by
prefix), stamps times with the TASK_PULSE_TZ offset (hours, default 8) and pretty-prints
the file; unlike the seed it writes the file atomically (a temp file renamed over the old
one), as a fair baseline for pulse's mirror. Imports what the seed imports, so its start-up
costs the same.
"""

import json
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

TASK_DIR = Path(os.environ.get("TASK_PULSE_DIR", os.path.expanduser("~/.openclaw/workspace/tasks")))
TZ = timezone(timedelta(hours=float(os.environ.get("TASK_PULSE_TZ", "8"))))


def now_iso():
    return datetime.now(TZ).isoformat()


def find(task_id):
    path = TASK_DIR / f"{task_id}.json"
    if path.exists():
        return path
    return next((p for p in sorted(TASK_DIR.glob("*.json")) if p.stem.startswith(task_id)), None)


def load(task_id):
    path = find(task_id)
    if path is None:
        sys.exit(f"Error: task '{task_id}' not found")
    with open(path, encoding="utf-8") as f:
        return json.load(f), path


def save(task, path):
    task["updatedAt"] = now_iso()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(task, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


def bar(done, total, width=10):
    filled = int(width * done / total) if total else 0
    return "█" * filled + "░" * (width - filled)


def create(name, *steps):
    stamp = datetime.now(TZ).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^\w-]", "-", name).strip("-")[:60]
    task_id = f"{safe}-{stamp}-{os.urandom(2).hex()}"  # the seed had no random part
    now = now_iso()
    task = {
        "taskId": task_id,
        "taskName": name,
        "status": "running",
        "startedAt": now,
        "updatedAt": now,
        "finishedAt": None,
        "steps": [{"name": s, "status": "pending"} for s in steps],
        "error": None,
        "result": None,
    }
    task["steps"][0].update(status="running", startedAt=now)
    save(task, TASK_DIR / f"{task_id}.json")
    print(task_id)


def next_step(task_id, *words):
    task, path = load(task_id)
    steps = task.get("steps", [])
    for i, step in enumerate(steps):
        if step["status"] == "running":
            step.update(status="done", finishedAt=now_iso())
            if words:
                step["message"] = " ".join(words)
            if i + 1 < len(steps):
                steps[i + 1].update(status="running", startedAt=now_iso())
            break
    else:
        print("Warning: no running step to advance", file=sys.stderr)
    save(task, path)
    done = sum(1 for s in steps if s["status"] == "done")
    current = next((s["name"] for s in steps if s["status"] == "running"), "—")
    print(f"[{done}/{len(steps)}] {bar(done, len(steps))} → {current}")


def heartbeat(task_id, *words):
    task, path = load(task_id)
    if words:
        step = next((s for s in task.get("steps", []) if s["status"] == "running"), None)
        if step is not None:
            step["message"] = " ".join(words)
    save(task, path)
    print("💓 ok")


COMMANDS = {"create": create, "next": next_step, "heartbeat": heartbeat}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
