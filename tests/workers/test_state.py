"""The relay's state on the real server: the lease, and reads, acks and dead letters that only
its holder can make (checked in the same script)."""

from __future__ import annotations

import json

import pytest
from pulse_workers.relay import Lease
from pulse_workers.state import LeaseLost, RelayState

NS, GROUP = "st", "relay:sink"
EVENTS = f"pulse:{{{NS}}}:events"


def add(client, task: str = "t1", version: int = 1, kind: str = "next") -> str:
    snapshot = {"taskId": task, "version": version, "status": "running", "steps": []}
    return client.xadd(EVENTS, {"kind": kind, "at": "", "task": json.dumps(snapshot)})


@pytest.fixture
def state(redis_client) -> RelayState:
    return RelayState(redis_client, NS, "relay", ttl=60)


def test_one_holder_at_a_time_extended_only_by_it(state, redis_client):
    assert state.lease("a", "take", 5000) and state.holder() == "a"
    assert not state.lease("b", "take", 5000)
    assert (
        not state.lease("b", "renew", 5000)
        and not state.lease("b", "drop")
        and state.holder() == "a"
    )
    assert state.lease("a", "renew", 9000) and 8000 < redis_client.pttl(state.lease_key) <= 9000
    state.lease("a", "drop")
    assert state.holder() is None and state.lease("b", "take", 5000)


def test_a_relay_that_lost_the_lease_can_neither_read_nor_ack_nor_park(state, redis_client):
    state.lease("a", "take", 5000)
    assert state.init_group("a", GROUP) and not state.init_group("a", GROUP)  # made once
    first = add(redis_client)
    got, _ = state.read_new("a", GROUP, "a", 10)
    assert [e.id for e in got.events] == [first]
    redis_client.delete(state.lease_key)  # a's lease lapsed while it was frozen
    assert state.lease("b", "take", 5000)  # and b took over
    add(redis_client, version=2)
    with pytest.raises(LeaseLost):
        state.finish("a", GROUP, [first])
    with pytest.raises(LeaseLost):
        state.read_new("a", GROUP, "a", 10)
    with pytest.raises(LeaseLost):
        state.dead_letter("a", GROUP, "sink", "boom", first, got.events[0])
    assert redis_client.xpending(EVENTS, GROUP)["pending"] == 1  # still a's, unacked
    assert redis_client.xlen(state.dead) == 0
    # b claims what a held, then reads what a never took, in stream order
    claimed = [e.id for g in state.claim_all("b", GROUP, "b", 1) for e in g.events]
    assert claimed == [first]
    newer, _ = state.read_new("b", GROUP, "b", 10)
    assert [e.task["version"] for e in newer.events] == [2]
    state.finish("b", GROUP, [first, newer.events[0].id])
    assert redis_client.xpending(EVENTS, GROUP)["pending"] == 0


def test_a_new_group_starts_at_the_end_and_reading_says_where_to_wait(state, redis_client):
    add(redis_client)  # history from before the relay
    state.lease("a", "take", 5000)
    state.init_group("a", GROUP)
    got, last = state.read_new("a", GROUP, "a", 10)
    assert got.events == [] and last == redis_client.xrevrange(EVENTS, count=1)[0][0]
    assert state.wait_new(last, 10) is False
    add(redis_client, version=2)
    assert state.wait_new(last, 10) is True


def test_an_entry_that_does_not_parse_is_parked_with_its_fields(state, redis_client):
    state.lease("a", "take", 5000)
    state.init_group("a", GROUP)
    bad = redis_client.xadd(EVENTS, {"kind": "next", "task": "{oops"})
    got, _ = state.read_new("a", GROUP, "a", 10)
    [(entry_id, raw, error)] = got.bad
    state.dead_letter("a", GROUP, "sink", error, entry_id, raw=raw)
    [letter] = state.dead_letters()
    assert letter.event is None and letter.raw == {"kind": "next", "task": "{oops"}
    assert letter.to_dict()["event"]["id"] == bad and state.dead_counts() == {"sink": 1}
    assert redis_client.xpending(EVENTS, GROUP)["pending"] == 0  # acked with the parking


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_lease_as_its_holder_sees_it(state):
    clock = Clock()
    lease = Lease(state, "a", 10.0, clock)
    assert not lease.valid() and lease.take() and lease.valid()
    clock.now += 8.9
    assert lease.valid()  # its own view ends short of Redis's expiry (from before the ask)
    clock.now += 0.2
    assert not lease.valid()
    lease.renew()
    assert lease.valid()
    state.client.set(state.lease_key, "b")  # taken over
    with pytest.raises(LeaseLost):
        lease.renew()
    assert not lease.valid()
