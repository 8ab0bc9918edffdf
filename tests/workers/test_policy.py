"""The lane's policy on an injected clock: order per task, throttle, overtaken pushes dropped,
retry timing, the bound on pushes in flight. No Redis, no threads, no sleeping."""

from __future__ import annotations

from pulse_workers.policy import EDITS, Policy

from pulse.events import Event

_seq = iter(range(1, 10_000))


def ev(task: str, kind: str = "next", version: int = 1) -> Event:
    return Event(f"{next(_seq)}-0", kind, "", {"taskId": task, "version": version})  # type: ignore[typeddict-item]


def ids(events: list[Event]) -> list[str]:
    return [e.id for e in events]


def test_one_push_per_task_in_flight_tasks_side_by_side():
    p = Policy(limit=8)
    a1, a2, b1 = ev("a"), ev("a"), ev("b")
    for e in (a1, a2, b1):
        p.add(e)
    assert ids(p.ready(0.0)) == [a1.id, b1.id]  # a2 waits for a1
    assert p.ready(0.0) == []
    p.delivered(a1, 0.1)
    assert ids(p.ready(0.1)) == [a2.id]
    p.delivered(a2, 0.2)
    p.delivered(b1, 0.2)
    assert p.take_acks() == [a1.id, a2.id, b1.id] and p.waiting == 0 and p.in_flight == 0


def test_a_failing_push_holds_back_its_task_only_until_it_is_delivered():
    p = Policy(limit=8, tries=5, backoff=1.0, rand=lambda: 1.0)  # the full backoff
    a1, a2, b1 = ev("a"), ev("a"), ev("b")
    for e in (a1, a2, b1):
        p.add(e)
    p.ready(0.0)
    assert p.failed(a1, 0.0) is False  # retried after 1 s
    p.delivered(b1, 0.0)
    assert p.ready(0.5) == [] and p.next_due(0.5) == 1.0
    assert ids(p.ready(1.0)) == [a1.id]  # a1 again, never a2 before it
    assert p.failed(a1, 1.0) is False
    assert p.next_due(1.0) == 3.0  # doubled
    assert ids(p.ready(3.0)) == [a1.id]
    p.delivered(a1, 3.0)
    assert ids(p.ready(3.0)) == [a2.id]


def test_after_the_last_try_it_is_given_up_and_the_task_goes_on():
    p = Policy(limit=8, tries=2, backoff=0.0)
    a1, a2 = ev("a"), ev("a")
    p.add(a1)
    p.add(a2)
    p.ready(0.0)
    assert p.failed(a1, 0.0) is False
    p.ready(0.0)
    assert p.failed(a1, 0.0) is True  # dead-letter it (acked there, not here)
    assert a1.id not in p.take_acks()
    assert ids(p.ready(0.0)) == [a2.id]


def test_permanent_failures_are_not_retried_and_retry_after_is_honoured():
    p = Policy(limit=8, tries=5, backoff=0.01, rand=lambda: 0.0)
    a1, b1 = ev("a"), ev("b")
    p.add(a1)
    p.add(b1)
    p.ready(0.0)
    assert p.failed(a1, 0.0, permanent=True) is True
    assert p.failed(b1, 0.0, retry_after=7.0) is False
    assert p.ready(6.9) == [] and ids(p.ready(7.0)) == [b1.id]


def test_heartbeats_overtaken_are_dropped_step_changes_never():
    p = Policy(limit=8, window=30.0)
    hb1, nx, hb2, hb3 = (
        ev("a", "heartbeat"),
        ev("a", "next"),
        ev("a", "heartbeat"),
        ev("a", "heartbeat"),
    )
    p.add(hb1)
    assert ids(p.ready(0.0)) == [hb1.id]  # in flight: a newer event does not drop it
    p.add(nx)
    p.add(hb2)
    p.add(hb3)  # hb2 is overtaken by hb3 before it was sent
    assert p.take_acks() == [hb2.id] and p.dropped == 1
    p.delivered(hb1, 1.0)
    assert ids(p.ready(1.0)) == [nx.id]
    p.delivered(nx, 1.0)
    assert p.ready(1.0) == [] and p.next_due(1.0) == 31.0  # one heartbeat per window
    assert ids(p.ready(31.0)) == [hb3.id]  # the latest wins


def test_a_failing_heartbeat_gives_way_to_a_newer_event():
    p = Policy(limit=8, tries=5)
    hb, nx = ev("a", "heartbeat"), ev("a", "next")
    p.add(hb)
    p.ready(0.0)
    p.add(nx)
    assert p.failed(hb, 0.0) is False and p.take_acks() == [hb.id]  # dropped, not retried
    assert ids(p.ready(0.0)) == [nx.id]


def test_edits_coalesce_on_a_sink_that_edits_one_message_per_task():
    p = Policy(limit=1, coalesce=EDITS)  # a chat: one at a time, at its pace
    c, n1, n2, n3, done = ev("a", "create"), ev("a"), ev("a"), ev("a"), ev("a", "done")
    b1 = ev("b")
    p.add(c)
    p.ready(0.0)
    for e in (n1, n2, b1, n3, done):
        p.add(e)
    assert p.take_acks() == [n1.id, n2.id, n3.id]  # only the task's newest state is sent
    p.delivered(c, 1.0)
    assert ids(p.ready(1.0)) == [b1.id]  # and the other task gets its turn
    p.delivered(b1, 2.0)
    assert ids(p.ready(2.0)) == [done.id]  # messages that notify are all sent


def test_the_bound_on_pushes_in_flight_is_shared_fairly():
    p = Policy(limit=2)
    a1, a2, b1, c1 = ev("a"), ev("a"), ev("b"), ev("c")
    for e in (a1, a2, b1, c1):
        p.add(e)
    assert ids(p.ready(0.0)) == [a1.id, b1.id] and p.next_due(0.0) is None
    p.delivered(a1, 0.0)
    assert ids(p.ready(0.0)) == [c1.id]  # c before a's next: every task gets its turn
    p.delivered(b1, 0.0)
    assert ids(p.ready(0.0)) == [a2.id]


def test_release_puts_a_push_back_without_counting_a_try():
    p = Policy(limit=8, tries=1)
    a1 = ev("a")
    p.add(a1)
    p.ready(0.0)
    p.release(a1, 0.0, 0.5)  # the lease lapsed before it went out
    assert p.ready(0.4) == [] and ids(p.ready(0.5)) == [a1.id]
    assert p.failed(a1, 0.5) is True  # its one try is still there
