"""The central mirror, `pulse-relay --mirror DIR`, as the team stack runs it: a process of its
own that keeps DIR/<namespace>/<id>.json equal to each task's latest snapshot, through a kill -9
with events in hand and a Redis restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pulse.events import Feed
from pulse.mirror import Mirror
from tests.redis_proc import redis_proc

NS = "test"
RELAY = [sys.executable, "-m", "pulse_workers"]  # pulse-relay


@pytest.fixture
def server():
    with redis_proc(persist=True) as s:
        yield s


@pytest.fixture
def env(pulse_env, server) -> dict[str, str]:
    return {**pulse_env, "PULSE_REDIS_URL": server.url, "PULSE_NAMESPACE": NS}


@pytest.fixture
def central(tmp_path) -> Path:
    return tmp_path / "central"


@pytest.fixture
def workers(env, central):
    """``start(name)``: a mirror worker as its own process; all are killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(name: str) -> subprocess.Popen:
        args = ["--mirror", str(central), "--name", name, "--claim-idle", "1"]
        started.append(subprocess.Popen([*RELAY, *args], env=env, stderr=subprocess.PIPE))
        return started[-1]

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def pulse(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pulse", *args], env=env, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
    return done.stdout


def snapshot(env: dict[str, str], task_id: str) -> dict:
    return json.loads(pulse(env, "status", task_id, "--json"))


def wait_for(what: Callable[[], bool], why: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"gave up waiting for {why}"
        time.sleep(0.05)


def mirrored(central: Path, task_id: str) -> dict | None:
    try:
        return json.loads((central / NS / f"{task_id}.json").read_text())
    except FileNotFoundError:
        return None


def all_current(env: dict[str, str], central: Path, ids: list[str]) -> Callable[[], bool]:
    from pulse.client import Client
    from pulse.settings import Settings

    def check() -> bool:
        with Client(Settings.from_env(env)) as client:
            return all(mirrored(central, t) == client.store.get(t) for t in ids)

    return check


def test_the_central_mirror_keeps_every_tasks_latest_snapshot(env, central, workers):
    workers("mirror-1")
    task_id = pulse(env, "create", "deploy", "build", "test", "ship").strip()
    pulse(env, "next", task_id, "built")
    pulse(env, "heartbeat", task_id, "--progress", "40", "testing")
    wait_for(lambda: (mirrored(central, task_id) or {}).get("version") == 3, "version 3")
    assert mirrored(central, task_id) == snapshot(env, task_id)
    pulse(env, "done", task_id, "shipped")
    wait_for(lambda: mirrored(central, task_id) == snapshot(env, task_id), "the done snapshot")
    # the same file format as the writers' own mirror
    own = json.loads((Path(env["PULSE_DIR"]) / NS / f"{task_id}.json").read_text())
    assert mirrored(central, task_id) == own

    # an older version never overwrites a newer one
    mirror = Mirror(central, NS)
    newest = mirrored(central, task_id)
    older = {**newest, "version": newest["version"] - 1, "status": "running"}
    assert mirror.write_if_newer(older) is False
    assert mirror.write_if_newer(dict(newest)) is False  # nor the same one again
    assert mirrored(central, task_id) == newest
    assert mirror.write_if_newer({**newest, "version": newest["version"] + 1}) is True


def test_a_worker_killed_with_events_in_hand_is_taken_over(env, central, workers, server):
    first = workers("mirror-1")
    ids = [pulse(env, "create", f"t{i}", "a", "b", "c").strip() for i in range(6)]
    wait_for(all_current(env, central, ids), "the first snapshots")
    first.send_signal(signal.SIGKILL)
    first.wait()

    # updates the dead worker was given and never acknowledged (as if it died mid-batch)
    for task_id in ids:
        pulse(env, "next", task_id, "a done")
    conn = server.client()
    dead = Feed(conn, NS, "mirror", "mirror-1")
    in_hand = dead.read(100).events
    assert len(in_hand) == len(ids)
    assert conn.xpending(f"pulse:{{{NS}}}:events", "mirror")["pending"] == len(ids)
    for task_id in ids[:3]:  # and some it was never given
        pulse(env, "next", task_id, "b done")

    workers("mirror-2")  # another name: it must take the dead worker's events over
    wait_for(all_current(env, central, ids), "every snapshot current")
    wait_for(
        lambda: conn.xpending(f"pulse:{{{NS}}}:events", "mirror")["pending"] == 0,
        "nothing left pending",
    )
    for task_id in ids:
        assert mirrored(central, task_id) == snapshot(env, task_id)


def test_the_worker_rides_out_a_redis_restart(env, central, workers, server):
    worker = workers("mirror-1")
    task_id = pulse(env, "create", "deploy", "a", "b", "c").strip()
    wait_for(all_current(env, central, [task_id]), "the first snapshot")
    server.restart()
    pulse(env, "next", task_id, "a done")
    server.stop()
    time.sleep(0.5)  # the worker finds Redis gone for a moment
    server.start()
    pulse(env, "next", task_id, "b done")
    wait_for(all_current(env, central, [task_id]), "the snapshot after the restarts")
    assert mirrored(central, task_id)["version"] == 3

    # Redis emptied (its consumer groups with it), the tasks recovered from the mirror
    server.client().flushall()
    assert json.loads(pulse(env, "recover", "--json"))["restored"] == 1
    pulse(env, "next", task_id, "c done")
    wait_for(all_current(env, central, [task_id]), "the snapshot after FLUSHALL")
    assert mirrored(central, task_id)["status"] == "done"
    assert worker.poll() is None


def test_one_bad_entry_is_parked_and_the_mirror_goes_on(env, central, workers, server):
    worker = workers("mirror-1")
    first = pulse(env, "create", "before", "a").strip()
    wait_for(all_current(env, central, [first]), "the first snapshot")
    client = server.client()
    events = f"pulse:{{{NS}}}:events"
    client.xadd(events, {"kind": "next", "task": "{not json"})  # a snapshot that does not parse
    long_id = "x" * 300  # no file system takes this name
    task = {"taskId": long_id, "version": 1, "status": "running", "steps": []}
    client.xadd(events, {"kind": "create", "task": json.dumps(task)})
    after = pulse(env, "create", "after", "a").strip()
    wait_for(all_current(env, central, [first, after]), "the snapshot after the bad ones")
    assert worker.poll() is None
    letters = RELAY + ["--mirror", str(central), "--dead-letters", "--json"]
    doc = json.loads(subprocess.run(letters, env=env, capture_output=True, text=True).stdout)
    assert doc["count"] == 2 and {d["sink"] for d in doc["dead_letters"]} == {"mirror:mirror"}
    check = subprocess.run(RELAY + ["--mirror", str(central), "--check"], env=env,
                           capture_output=True, text=True)
    assert "dead_letters=2" in check.stdout and check.returncode == 0
    assert worker.stderr is not None
