"""pulse.events: what the relays share in Redis, on fakeredis and on the real server."""

from __future__ import annotations

import time

import pytest

from pulse import model
from pulse.events import Event, Feed, Pushes, entry_order, group_positions
from pulse.store import Store

NS = "ev"
SINK = "webhook+http://example/hook"


def event(entry_id: str, kind: str = "heartbeat", task_id: str = "t1") -> Event:
    return Event(entry_id, kind, "", {"taskId": task_id})  # type: ignore[typeddict-item]


@pytest.fixture
def pushes(conn: object) -> Pushes:
    return Pushes(conn, NS, ttl=60)  # type: ignore[arg-type]


def test_push_order_is_kept_per_sink(pushes):
    assert pushes.decide(event("5-0", "next"), SINK, 1000, 0).verdict == "send"
    assert pushes.decide(event("4-9", "next"), SINK, 1000, 0).verdict == "stale"
    # the marked event again is a redelivery after a crash: at least once
    assert pushes.decide(event("5-0", "next"), SINK, 1000, 0).verdict == "send"
    # another sink, another task: marks of their own
    assert pushes.decide(event("4-9", "next"), "console://", 1000, 0).verdict == "send"
    assert pushes.decide(event("4-9", "next", "t2"), SINK, 1000, 0).verdict == "send"
    v = pushes.decide(event("5-1", "done"), SINK, 1000, 0)
    assert (v.verdict, v.last) == ("send", "5-1")


def test_heartbeats_take_one_window_each(pushes):
    first = pushes.decide(event("1-0"), SINK, 10_000, 3000)
    assert (first.verdict, first.heartbeat_ms) == ("send", 10_000)
    held = pushes.decide(event("2-0"), SINK, 11_000, 3000)
    assert (held.verdict, held.wait_ms, held.last) == ("wait", 2000, "1-0")  # nothing marked
    # a step change goes at once and leaves the window alone
    assert pushes.decide(event("3-0", "next"), SINK, 11_500, 3000).verdict == "send"
    assert pushes.decide(event("2-0"), SINK, 13_000, 3000).verdict == "stale"  # older now
    assert pushes.decide(event("4-0"), SINK, 13_000, 3000).verdict == "send"  # window over
    assert pushes.decide(event("5-0"), SINK, 13_001, 0).verdict == "send"  # no throttle


def test_a_mark_ahead_marks_whatever_it_would_have_decided(pushes):
    pushes.decide(event("1-0"), SINK, 10_000, 3000)
    pushes.mark_ahead(event("2-0"), SINK, 11_000, 3000)
    would = pushes.marked()
    assert (would.verdict, would.last, would.heartbeat_ms) == ("wait", "2-0", 11_000)
    pushes.mark_ahead(event("1-5", "next"), SINK, 11_000, 0)
    assert pushes.marked().verdict == "stale"  # never moves a mark back
    assert pushes.decide(event("2-0"), SINK, 11_000, 3000).last == "2-0"


def test_relays_count_each_other_and_leave(pushes):
    assert pushes.register("relay", "a", 5000) == (1, True)  # arrived
    assert pushes.register("relay", "a", 5000) == (1, False)  # a renewal, not another relay
    assert pushes.register("relay", "b", 5000) == (2, True)
    assert pushes.register("other-group", "c", 5000) == (1, True)
    assert pushes.register("relay", "b", 0) == (0, False)  # left
    assert pushes.register("relay", "a", 5000) == (1, False)


def test_a_relay_that_stops_renewing_lapses(raw, pushes):
    pushes.register("relay", "gone", 100)
    time.sleep(0.2)  # on the server's own clock (TIME)
    assert pushes.register("relay", "here", 5000) == (1, True)
    assert pushes.register("relay", "gone", 5000) == (2, True)  # back: arrives again
    assert 0 < raw.ttl(pushes.keys.relays("relay")) <= 5


def create(store: Store, task_id: str) -> None:
    task = model.new_task(
        task_id, "deploy", ["x"], "2026-01-01T00:00:00+00:00", stall_seconds=60, namespace=NS
    )
    store.create(task, int(time.time() * 1000), 60)


def test_group_positions_and_lag(conn):
    assert group_positions(conn, NS) == {}  # no stream yet
    store = Store(conn, NS)  # type: ignore[arg-type]
    create(store, "a")
    feed = Feed(conn, NS, "relay:one", "c")  # type: ignore[arg-type]
    lag = feed.lag()  # a group not made yet: everything is still to read
    assert (lag["pending"], lag["undelivered"]) == (0, 1)
    feed.ensure_group("$")
    assert feed.lag()["undelivered"] == 0
    create(store, "b")
    got = feed.read(10)
    assert [e.kind for e in got] == ["create"]
    assert group_positions(conn, NS) == {"relay:one": got[0].id}
    assert feed.lag()["pending"] == 1
    assert feed.read(10, ack=[got[0].id]) == []  # acked in the same round trip as the read
    assert feed.lag()["pending"] == 0


def test_entry_order():
    assert entry_order("10-2") < entry_order("10-10") < entry_order("11-0")
    assert sorted(["9-1", "10-0", "9-10"], key=entry_order) == ["9-1", "9-10", "10-0"]


def test_entries_deleted_while_pending_are_dropped_on_takeover(conn, raw):
    # Servers differ here: Redis 6.2's XAUTOCLAIM returns a deleted entry as (id, nil) and
    # keeps it pending until acked; Redis 7.0+ and Valkey leave it out and drop it themselves.
    # Either way a takeover gets the live entries only, and nothing deleted stays pending.
    store = Store(conn, NS)  # type: ignore[arg-type]
    dead = Feed(conn, NS, "relay:one", "dead")  # type: ignore[arg-type]
    dead.ensure_group("0")
    for name in ("a", "b", "c"):
        create(store, name)
    given = dead.read(10)  # then the consumer dies without acking
    raw.xdel(f"pulse:{{{NS}}}:events", given[1].id)  # trimmed away meanwhile
    taker = Feed(conn, NS, "relay:one", "taker")  # type: ignore[arg-type]
    got = taker.autoclaim(0, 10)
    assert [e.id for e in got] == [given[0].id, given[2].id]
    assert taker.lag()["pending"] == 2
