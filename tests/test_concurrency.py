"""Many agents updating one task at once: every update is one atomic step with one event.

Eight processes hammer one task through the Python API and two more through the real CLI;
afterwards the task's version, the event stream and the mirror account for every update.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EVENTS = "pulse:{test}:events"

# One agent: waits for the start signal, then makes `count` updates with unique messages,
# every `every`-th a `next` and the rest heartbeats; prints what succeeded and what failed.
WORKER = r"""
import json, os, subprocess, sys, time

how, task_id, tag, count, every, go = sys.argv[1:7]
if how == "api":
    import pulse

    client = pulse.connect()  # PULSE_REDIS_URL, PULSE_NAMESPACE, PULSE_DIR from the env


    def update(op, message):
        try:
            client.update(task_id, op, message)
            return None
        except pulse.PulseError as e:
            return str(e)
else:
    def update(op, message):
        done = subprocess.run(
            [sys.executable, "-m", "pulse", op, task_id, message],
            capture_output=True, text=True,
        )
        return None if done.returncode == 0 and not done.stderr else done.stderr or "failed"

while not os.path.exists(go):
    time.sleep(0.001)
made, failed = [], []
for i in range(int(count)):
    op = "next" if i % int(every) == int(every) - 1 else "heartbeat"
    message = f"{tag}:{op}:{i}"
    problem = update(op, message)
    (failed.append(f"{message}: {problem}") if problem else made.append(message))
print(json.dumps({"made": made, "failed": failed}))
"""

API_WORKERS, API_UPDATES = 8, 40  # each: 36 heartbeats, 4 nexts
CLI_WORKERS, CLI_UPDATES = 2, 8  # each: 7 heartbeats, 1 next
EVERY = 10
STEPS = 40  # more than the 34 nexts, so the task stays running


def test_concurrent_updates_are_atomic_and_none_is_lost(
    pulse_env, pulse_api, redis_client, tmp_path
):
    task_id = pulse_api.create("shared", [f"step{i}" for i in range(STEPS)]).id
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, how, task_id, f"{how}{n}", str(count), str(EVERY), go],
            env=pulse_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for how, n, count in [("api", n, API_UPDATES) for n in range(API_WORKERS)]
        + [("cli", n, CLI_UPDATES) for n in range(CLI_WORKERS)]
    ]
    go.touch()  # all start together
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        reports.append(json.loads(out))

    sent = [m for r in reports for m in r["made"]]
    assert [f for r in reports for f in r["failed"]] == []
    assert len(sent) == API_WORKERS * API_UPDATES + CLI_WORKERS * CLI_UPDATES

    task = pulse_api.get(task_id)
    assert task["version"] == 1 + len(sent)
    assert task["status"] == "running"
    nexts = [m for m in sent if ":next:" in m]
    assert sum(s["status"] == "done" for s in task["steps"]) == len(nexts)

    # one event per update, in the order the updates happened: versions 1, 2, 3, ...
    events = [
        (fields["kind"], json.loads(fields["task"])) for _, fields in redis_client.xrange(EVENTS)
    ]
    assert [snap["version"] for _, snap in events] == list(range(1, len(sent) + 2))
    assert [kind for kind, _ in events[:1]] == ["create"]
    messages = [_message_of(kind, snap) for kind, snap in events[1:]]
    assert sorted(messages) == sorted(sent)  # each exactly once
    for kind, message in zip((k for k, _ in events[1:]), messages, strict=True):
        assert f":{kind}:" in message

    # the mirror ends on the last version, whichever process wrote last
    mirrored = json.loads((Path(pulse_env["PULSE_DIR"]) / "test" / f"{task_id}.json").read_text())
    assert mirrored == task


def _message_of(kind: str, snap: dict) -> str:
    """The message an event's update brought: a heartbeat's is on the running step, a next's on
    the step it finished (the last done one)."""
    if kind == "heartbeat":
        return next(s for s in snap["steps"] if s["status"] == "running")["message"]
    return [s for s in snap["steps"] if s["status"] == "done"][-1]["message"]
