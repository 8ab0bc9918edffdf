"""The store's scripts, on fakeredis and again on a real redis-server."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from pulse import model
from pulse.errors import AmbiguousId, TaskFinished, TaskNotFound
from pulse.keys import Keys
from pulse.store import Store

NS = "t"
K = Keys(NS)
T0 = 1_780_000_000_000
TTL = 7 * 86400


def at(seconds: int) -> dict:
    ms = T0 + seconds * 1000
    return {"now": model.iso(datetime.fromtimestamp(ms / 1000, timezone.utc)), "now_ms": ms}


def new(
    store: Store,
    task_id: str = "deploy-20260101-000000-abcd",
    steps=("build", "test"),
    stall: int = 60,
):
    task = model.new_task(
        task_id, "deploy", list(steps), at(0)["now"], stall_seconds=stall, namespace=NS, host="h"
    )
    return store.create(task, T0, TTL)


def upd(store: Store, task_id: str, op: str, seconds: int = 1, message=None, progress=None):
    return store.update(task_id, op, message=message, progress=progress, ttl=TTL, **at(seconds))


def test_create_stores_indexes_and_emits(store, raw):
    change = new(store)
    tid = change.task["taskId"]
    assert change.kind == "create" and change.task["version"] == 1
    assert json.loads(raw.hget(K.task(tid), "snap"))["taskName"] == "deploy"
    assert 0 < raw.ttl(K.task(tid)) <= TTL
    assert raw.zscore(K.updated, tid) == T0
    assert raw.zscore(K.running, tid) == T0 + 60_000
    [(sid, fields)] = raw.xrange(K.events)
    assert sid == change.event_id and fields["kind"] == "create"
    assert json.loads(fields["task"])["taskId"] == tid


def test_a_whole_task(store, raw):
    tid = new(store).task["taskId"]
    hb = upd(store, tid, "heartbeat", 1, "60%", 60)
    assert hb.kind == "heartbeat" and hb.task["steps"][0]["progress"] == 60
    nx = upd(store, tid, "next", 2, "built")
    assert nx.task["steps"][0]["message"] == "built" and nx.task["steps"][1]["status"] == "running"
    assert raw.zscore(K.running, tid) == T0 + 2000 + 60_000
    dn = upd(store, tid, "done", 3, "https://x")
    assert dn.task["status"] == "done" and dn.task["result"] == "https://x"
    assert dn.task["version"] == 4
    assert raw.zscore(K.running, tid) is None
    assert [f["kind"] for _, f in raw.xrange(K.events)] == ["create", "heartbeat", "next", "done"]


def test_script_and_model_agree(store):
    """update.lua and model.apply are the same transitions."""
    change = new(store, steps=("a", "b", "c"))
    expected = change.task
    for i, (op, msg, prog) in enumerate(
        [
            ("heartbeat", "x", 5.5),
            ("next", None, None),
            ("heartbeat", "", None),
            ("next", "m", None),
            ("next", "last", None),
        ],
        start=1,
    ):
        got = upd(store, expected["taskId"], op, i, msg, prog)
        expected, kind = model.apply(expected, op, at(i)["now"], msg, prog)
        assert (got.kind, got.task) == (kind, expected)


def test_finished_task_refuses_and_nothing_changes(store, raw):
    tid = new(store).task["taskId"]
    upd(store, tid, "error", 1, "boom")
    before = (raw.hgetall(K.task(tid)), raw.xlen(K.events))
    for op in model.OPS:
        with pytest.raises(TaskFinished, match="already error"):
            upd(store, tid, op, 2, "again")
    assert (raw.hgetall(K.task(tid)), raw.xlen(K.events)) == before


def test_unknown_and_prefix_ids(store, raw):
    new(store, "deploy-20260101-000000-aaaa")
    new(store, "deploy-20260101-000000-bbbb")
    new(store, "build-20260101-000000-cccc")
    assert upd(store, "build", "heartbeat").task["taskId"] == "build-20260101-000000-cccc"
    with pytest.raises(AmbiguousId, match="aaaa.*bbbb"):
        upd(store, "deploy", "next")
    with pytest.raises(TaskNotFound):
        upd(store, "ship", "next")
    assert raw.xlen(K.events) == 4  # 3 creates and the heartbeat: the refusals emitted nothing


def test_expired_tasks_are_pruned_from_the_indexes(store, raw):
    a = new(store, "a-20260101-000000-aaaa").task["taskId"]
    b = new(store, "a-20260101-000000-bbbb").task["taskId"]
    raw.delete(K.task(a))  # as the TTL would
    assert [t["taskId"] for t in store.recent(10)] == [b]
    assert raw.zscore(K.updated, a) is None and raw.zscore(K.ids, a) is None
    assert upd(store, "a-", "heartbeat").task["taskId"] == b  # no longer ambiguous


def test_status_reads_newest_first_and_running_by_due_time(store):
    for i in range(5):
        task = model.new_task(
            f"t{i}-20260101-000000-0000", "t", ["s"], at(i)["now"], stall_seconds=10, namespace=NS
        )
        store.create(task, T0 + i * 1000, TTL)
    upd(store, "t0", "done", 10)
    assert [t["taskId"][:2] for t in store.recent(3)] == ["t0", "t4", "t3"]
    assert {t["taskId"][:2] for t in store.running()} == {"t1", "t2", "t3", "t4"}
    assert {t[:2] for t in store.due(T0 + 12_500)} == {"t1", "t2"}


def test_restore_only_where_missing_or_older(store, raw):
    change = new(store)
    task = change.task
    tid = task["taskId"]
    assert not store.restore(task, updated_ms=T0, expire_at_ms=T0 + 10**9)
    newer = upd(store, tid, "next", 5).task
    assert not store.restore(task, updated_ms=T0, expire_at_ms=T0 + 10**9)  # older: kept newer
    raw.flushall()
    expire = 4_000_000_000_000
    assert store.restore(newer, updated_ms=T0 + 5000, expire_at_ms=expire)
    assert store.get(tid) == newer
    assert raw.pttl(K.task(tid)) > 0 and raw.xlen(K.events) == 0
    assert raw.zscore(K.running, tid) == T0 + 5000 + 60_000
    assert not store.restore(newer, updated_ms=T0 + 5000, expire_at_ms=expire)


def test_noscript_reloads(store, raw):
    tid = new(store).task["taskId"]
    raw.script_flush()
    assert upd(store, tid, "heartbeat").task["version"] == 2


def test_stream_is_trimmed(raw, conn):
    store = Store(conn, NS, stream_maxlen=10)
    tid = new(store).task["taskId"]
    for i in range(300):
        upd(store, tid, "heartbeat", i, str(i))
    assert raw.xlen(K.events) < 300
    assert store.get(tid)["version"] == 301


def test_error_codes_are_read_whatever_the_server_puts_before_them() -> None:
    # Redis 7 and Valkey send a one-word Lua error_reply as "ERR PULSE_NOTFOUND".
    from pulse.errors import reply_code
    from pulse.transport import ReplyError

    assert reply_code("ERR PULSE_NOTFOUND") == ("PULSE_NOTFOUND", "")
    assert reply_code("PULSE_VERSION 3") == ("PULSE_VERSION", "3")
    assert reply_code("ERR unknown command") == ("ERR", "unknown command")
    assert ReplyError("NOSCRIPT No matching script").code == "NOSCRIPT"


# -- operation ids, the step an update was made for, time that never goes back --------------


def test_an_operation_id_applies_once(store, raw):
    from pulse.errors import AlreadyApplied

    task_id = new(store, steps=("a", "b", "c")).task["taskId"]
    first = store.update(task_id, "next", message="a done", ttl=TTL, op_id="op1", **at(1))
    with pytest.raises(AlreadyApplied) as again:
        store.update(task_id, "next", message="a done", ttl=TTL, op_id="op1", **at(2))
    assert again.value.version == first.task["version"] == 2
    assert store.get(task_id)["version"] == 2 and raw.xlen(K.events) == 2
    with pytest.raises(AlreadyApplied):  # even once the task is finished
        store.update(task_id, "done", ttl=TTL, op_id="op2", **at(3))
        store.update(task_id, "done", ttl=TTL, op_id="op2", **at(4))


def test_a_create_with_an_operation_id_makes_one_task(store, raw):
    from pulse.errors import AlreadyApplied

    def create(task_id: str, op_id: str):
        task = model.new_task(
            task_id, "deploy", ["a"], at(0)["now"], stall_seconds=60, namespace=NS, host="h"
        )
        return store.create(task, T0, TTL, op_id=op_id)

    made = create("deploy-20260101-000000-aaaa", "retry-me")
    # the retry draws a fresh task id: the operation id, not the id, stops a second task
    with pytest.raises(AlreadyApplied) as again:
        create("deploy-20260101-000000-bbbb", "retry-me")
    assert again.value.task_id == made.task["taskId"] == "deploy-20260101-000000-aaaa"
    assert not raw.exists(K.task("deploy-20260101-000000-bbbb"))
    assert [f["kind"] for _, f in raw.xrange(K.events)] == ["create"]
    assert 0 < raw.ttl(K.op("retry-me")) <= 86400  # remembered a day, not for ever
    other = create("deploy-20260101-000000-cccc", "another")
    assert other.task["taskId"] == "deploy-20260101-000000-cccc"
    assert raw.zcard(K.ids) == 2 and raw.xlen(K.events) == 2


def test_a_create_without_an_operation_id_keeps_no_key(store, raw):
    new(store)
    assert not raw.keys(K.op("*"))


def test_only_the_last_256_operation_ids_are_kept(store, raw):
    task_id = new(store, steps=("a",)).task["taskId"]
    for i in range(300):
        store.update(task_id, "heartbeat", ttl=TTL, op_id=f"op{i:03d}", **at(1))
    ops = raw.hget(K.task(task_id), "ops").split()
    assert len(ops) == 256 and ops[0] == "op044:46" and ops[-1] == "op299:301"


@pytest.mark.parametrize("op", ["next", "heartbeat"])
def test_an_update_made_for_another_step_changes_nothing(store, raw, op):
    from pulse.errors import StepConflict

    task_id = new(store, steps=("a", "b", "c")).task["taskId"]
    upd(store, task_id, "next", 1, "a done")
    before = raw.hgetall(K.task(task_id))
    with pytest.raises(StepConflict) as e:
        store.update(task_id, op, message="for a", ttl=TTL, op_id="x", step=1, **at(2))
    assert e.value.running == 2
    assert raw.hgetall(K.task(task_id)) == before
    with pytest.raises(StepConflict):  # and the model agrees
        model.apply(store.get(task_id), op, at(2)["now"], "for a", step=1)
    moved = store.update(task_id, op, message="for b", ttl=TTL, op_id="y", step=2, **at(2))
    assert moved.task["steps"][1]["message"] == "for b"


@pytest.mark.parametrize("op", ["done", "error"])
def test_done_and_error_made_for_an_earlier_step_still_end_the_task(store, op):
    task_id = new(store, steps=("a", "b", "c")).task["taskId"]
    upd(store, task_id, "next", 1, "a done")
    change = store.update(task_id, op, message="over", ttl=TTL, op_id="z", step=1, **at(2))
    assert change.task["status"] == ("done" if op == "done" else "error")


def test_time_never_goes_back_and_the_model_agrees(store):
    task_id = new(store, steps=("a", "b", "c")).task["taskId"]
    later = upd(store, task_id, "heartbeat", 10, "later").task
    earlier = store.update(task_id, "next", message="made before", ttl=TTL, op_id="e", **at(5))
    assert earlier.task["updatedAt"] == later["updatedAt"] == at(10)["now"]
    assert earlier.task["steps"][0]["finishedAt"] == at(10)["now"]
    want, _ = model.apply(later, "next", at(5)["now"], "made before")
    assert want == earlier.task
    after = upd(store, task_id, "heartbeat", 11, "on").task  # a later update keeps its time
    assert after["updatedAt"] == at(11)["now"]
