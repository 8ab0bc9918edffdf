"""pulse.events: the stream as the workers read it, on the real server."""

from __future__ import annotations

import json
import time
from datetime import timezone

from pulse import model
from pulse.events import Feed, entry_order, group_positions, mark_stalled, parse_entries
from pulse.store import Store

NS = "ev"


def create(store: Store, task_id: str, stall: int = 60) -> None:
    task = model.new_task(
        task_id, "deploy", ["x"], "2026-01-01T00:00:00+00:00", stall_seconds=stall, namespace=NS
    )
    store.create(task, int(time.time() * 1000), 60)


def test_group_positions_and_lag(raw, conn):
    assert group_positions(raw, NS) == {}  # no stream yet
    store = Store(conn, NS)  # type: ignore[arg-type]
    create(store, "a")
    feed = Feed(raw, NS, "relay:one", "c")
    lag = feed.lag()  # a group not made yet starts at the end of the stream: nothing to read
    assert (lag["pending"], lag["undelivered"], lag["stream_length"]) == (0, 0, 1)
    feed.ensure_group("$")
    assert feed.lag()["undelivered"] == 0
    create(store, "b")
    assert feed.lag()["undelivered"] == 1
    got = feed.read(10).events
    assert [e.kind for e in got] == ["create"] and got[0].task["taskId"] == "b"
    assert group_positions(raw, NS) == {"relay:one": got[0].id}
    assert feed.lag()["pending"] == 1
    feed.ack([got[0].id])
    assert feed.lag()["pending"] == 0


def test_a_group_redis_lost_is_made_again_from_the_start(redis_client, redis_url):
    from pulse.transport import connect

    feed = Feed(redis_client, NS, "mirror", "c")  # the real server: NOGROUP as Redis says it
    feed.ensure_group("0")
    redis_client.delete(f"pulse:{{{NS}}}:events")  # Redis lost everything
    assert feed.read(10).events == []  # NOGROUP: made again, not an error
    create(Store(connect(redis_url), NS), "a")
    assert [e.kind for e in feed.read(10).events] == ["create"]


def test_entries_that_do_not_parse_are_set_apart():
    good = json.dumps({"taskId": "t", "version": 1, "steps": []})
    got = parse_entries(
        [
            ("1-0", ["kind", "next", "task", good]),
            ("2-0", ["kind", "next", "task", "{nope"]),
            ("3-0", ["kind", "next"]),  # no task at all
            ("4-0", None),  # trimmed while pending
        ]
    )
    assert [e.id for e in got.events] == ["1-0"]
    assert [b[0] for b in got.bad] == ["2-0", "3-0"] and "does not parse" in got.bad[0][2]
    assert got.bad[0][1] == {"kind": "next", "task": "{nope"}
    assert got.gone == ["4-0"]


def test_a_stall_is_marked_once(raw, conn):
    create(Store(conn, NS), "slow", stall=1)  # type: ignore[arg-type]
    later = time.time() + 5
    [stall] = mark_stalled(raw, NS, later, timezone.utc)
    assert stall.kind == "stall" and stall.task["taskId"] == "slow"
    assert mark_stalled(raw, NS, later + 1, timezone.utc) == []


def test_entry_order():
    assert entry_order("10-2") < entry_order("10-10") < entry_order("11-0")
    assert sorted(["9-1", "10-0", "9-10"], key=entry_order) == ["9-1", "9-10", "10-0"]


def test_entries_deleted_while_pending_are_dropped_on_takeover(conn, raw):
    # Servers differ here: Redis 6.2's XAUTOCLAIM returns a deleted entry as (id, nil) and
    # keeps it pending until acked; Redis 7.0+ and Valkey leave it out and drop it themselves.
    # Either way a takeover gets the live entries only, and nothing deleted stays pending.
    store = Store(conn, NS)  # type: ignore[arg-type]
    dead = Feed(raw, NS, "relay:one", "dead")
    dead.ensure_group("0")
    for name in ("a", "b", "c"):
        create(store, name)
    given = dead.read(10).events  # then the consumer dies without acking
    raw.xdel(f"pulse:{{{NS}}}:events", given[1].id)  # trimmed away meanwhile
    taker = Feed(raw, NS, "relay:one", "taker")
    got = taker.autoclaim(0, 10).events
    assert [e.id for e in got] == [given[0].id, given[2].id]
    assert taker.lag()["pending"] == 2
