"""The Python API, on a real redis-server: tasks, the mirror, status views, recovery."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import pulse
import pulse.settings
from pulse import model
from pulse.client import Client
from pulse.errors import BadValue, TaskFinished
from pulse.mirror import Mirror


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Client:
    tz = pulse.settings.parse_tz("8")
    with pulse.connect(redis_url, dir=tmp_path / "mirror", namespace="api", tz=tz) as c:
        yield c


def test_a_task_through_the_api(client: Client):
    task = client.create("deploy", ["build", "test", "ship"])
    task.next("built in 40s")
    task.heartbeat("60%", progress=60)
    assert task.task["steps"][1]["progress"] == 60
    task.next()
    task.done("https://example.com")
    got = client.get(task.id)
    assert got["status"] == "done" and got["result"] == "https://example.com"
    assert got["version"] == 5 and got["startedAt"].endswith("+08:00")


def test_track_marks_done_or_failed(client: Client):
    with client.track("ok", ["a"]) as t:
        pass
    assert client.get(t.id)["status"] == "done"
    with pytest.raises(ZeroDivisionError):
        with client.track("bad", ["a", "b"]) as t:
            t.next("a went fine")
            1 / 0  # noqa: B018
    failed = client.get(t.id)
    assert failed["status"] == "error" and failed["error"] == "ZeroDivisionError: division by zero"
    assert [s["status"] for s in failed["steps"]] == ["done", "error"]


def test_every_update_is_mirrored(client: Client):
    task = client.create("mirror me", ["a", "b"])
    path = client.mirror.path(task.id)
    for update in (lambda: task.next("x"), lambda: task.heartbeat("y")):
        change = update()
        client.flush_mirror()  # pulse.connect's client writes the mirror in the background
        assert json.loads(path.read_text()) == change.task == client.get(task.id)
    assert not list(path.parent.glob(".*.tmp"))  # no temp file left behind


def test_status_views(client: Client, redis_client):
    a = client.create("a", ["s"], stall=1)
    b = client.create("b", ["s"])
    c = client.create("c", ["s"])
    c.done()
    # make `a` quiet for longer than its stall time, as the clock would
    key = client.store.keys
    redis_client.zadd(key.running, {a.id: 0})
    snap = json.loads(redis_client.hget(key.task(a.id), "snap"))
    snap["updatedAt"] = "2000-01-01T00:00:00+00:00"
    redis_client.hset(key.task(a.id), "snap", json.dumps(snap))
    assert {t["taskId"] for t in client.status()} == {a.id, b.id, c.id}
    assert {t["taskId"] for t in client.status("running")} == {a.id, b.id}
    stalled = client.status("stalled")
    assert [t["taskId"] for t in stalled] == [a.id] and stalled[0]["stalled"]
    assert len(client.status("all", limit=2)) == 2
    with pytest.raises(BadValue):
        client.status("mine")


def test_refused_update_changes_nothing(client: Client):
    task = client.create("t", ["s"])
    task.error("boom")
    client.flush_mirror()
    before = client.get(task.id)
    mirrored = client.mirror.path(task.id).read_text()
    with pytest.raises(TaskFinished):
        client.next(task.id, "more")
    assert client.get(task.id) == before
    assert client.mirror.path(task.id).read_text() == mirrored


def test_recover_after_flushall_restores_every_snapshot(client: Client, redis_client):
    tasks = [client.create(f"t{i}", ["a", "b"]) for i in range(5)]
    tasks[0].next("half")
    tasks[1].done("r")
    tasks[2].error("e")
    before = {t.id: client.get(t.id) for t in tasks}
    redis_client.flushall()
    report = client.recover()
    assert (report.restored, report.unchanged, report.refused) == (5, 0, [])
    assert {t.id: client.get(t.id) for t in tasks} == before
    assert client.recover().restored == 0  # twice changes nothing
    assert redis_client.xlen(client.store.keys.events) == 0  # no pushes for history
    tasks[0].next("after recovery")  # and the task goes on where it was
    assert client.get(tasks[0].id)["version"] == before[tasks[0].id]["version"] + 1


def test_recover_keeps_absolute_expiry(client: Client, redis_client, tmp_path: Path):
    old = client.create("old", ["a"])
    client.flush_mirror()
    redis_client.flushall()
    path = client.mirror.path(old.id)
    snap = json.loads(path.read_text())
    snap["updatedAt"] = "2000-01-01T00:00:00+00:00"  # should have expired long ago
    path.write_text(json.dumps(snap))
    report = client.recover()
    assert (report.restored, report.expired) == (0, 1)
    assert redis_client.exists(client.store.keys.task(old.id)) == 0


def test_recover_reads_seed_skill_files(client: Client, tmp_path: Path):
    seed = tmp_path / "seed"
    seed.mkdir()
    now = "2026-11-25T10:00:00+08:00"
    (seed / "pub-20261125-100000-abcd.json").write_text(
        json.dumps(
            {
                "taskId": "pub-20261125-100000-abcd",
                "taskName": "发布",
                "status": "running",
                "startedAt": now,
                "updatedAt": model.iso(datetime.now().astimezone()),
                "steps": [{"name": "写", "status": "done"}, {"name": "发", "status": "running"}],
            },
            ensure_ascii=False,
        )
    )
    (seed / "junk.json").write_text("{not json")
    report = client.recover(seed)
    assert report.restored == 1 and len(report.refused) == 1
    task = client.get("pub")
    assert task["taskName"] == "发布" and task["namespace"] == "api"
    client.flush_mirror()
    assert client.mirror.path(task["taskId"]).exists()  # now mirrored like any other task
    client.next("pub", "sent")
    assert client.get("pub")["status"] == "done"


def test_cleanup_removes_finished_tasks_and_their_files(client: Client):
    done = client.create("d", ["a"])
    done.done()
    running = client.create("r", ["a"])
    assert client.cleanup(days=0) == 1  # waits for the background mirror writes first
    assert [t["taskId"] for t in client.status("all")] == [running.id]
    assert not client.mirror.path(done.id).exists() and client.mirror.path(running.id).exists()


def test_mirror_paths_never_leave_the_folder(tmp_path: Path):
    mirror = Mirror(tmp_path, "ns")
    for bad in ["../x", "/etc/passwd", "a/../../b", ".."]:
        with pytest.raises(BadValue):
            mirror.path(bad)


def test_a_create_whose_id_is_taken_draws_another(client: Client, monkeypatch):
    # Two creates of one name in one second share the id's date part: only the 4 random hex
    # digits tell them apart, and those collide once in 65,536.
    first = client.create("busy", ["a"])
    drawn = iter([first.id, "busy-20990101-000000-beef"])
    monkeypatch.setattr(model, "make_id", lambda name, now: next(drawn))
    second = client.create("busy", ["a"])
    assert second.id == "busy-20990101-000000-beef"
    assert client.get(first.id)["version"] == 1  # the first task is untouched


def test_a_create_retried_with_its_operation_id_makes_one_task(client: Client, redis_client):
    first = client.create("deploy", ["build", "test"], op_id="deploy-42")
    first.next("built")
    retry = client.create("deploy", ["build", "test"], op_id="deploy-42")
    assert retry.id == first.id and retry.change.kind == "applied"
    assert retry.task == client.get(first.id) and retry.task["version"] == 2  # as it is now
    another = client.create("deploy", ["build", "test"], op_id="deploy-43")
    assert another.id != first.id and another.change.kind == "create"
    events = redis_client.xrange(client.store.keys.events)
    assert [f["kind"] for _, f in events] == ["create", "next", "create"]
    with pytest.raises(BadValue):
        client.create("deploy", ["build"], op_id="not an id")


def test_a_create_retried_offline_with_its_operation_id_replays_as_one_task(tmp_path: Path):
    import redis

    from tests.redis_proc import redis_proc

    with redis_proc(persist=True) as server:
        with pulse.connect(server.url, dir=tmp_path / "m", namespace="off") as client:
            client.create("warm up", ["a"])  # learns which Redis this is, for the journal
            server.stop()
            first = client.create("deploy", ["a"], op_id="deploy-7")
            retry = client.create("deploy", ["a"], op_id="deploy-7")
            assert first.id != retry.id  # offline, each drew its own id
            server.start()
            report = client.replay()
            assert (report.applied, report.already, report.conflicts) == (1, 1, 0)
        r = redis.Redis.from_url(server.url, decode_responses=True)
        ids = r.zrange(client.store.keys.ids, 0, -1)
        r.close()
    assert len(ids) == 2 and first.id in ids and retry.id not in ids
