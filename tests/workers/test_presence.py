"""workers.presence: when a relay may push without asking first, on a lease in Redis."""

from __future__ import annotations

import time

import pytest

from pulse.events import Pushes
from workers import presence
from workers.presence import Presence


@pytest.fixture(autouse=True)
def short_lease(monkeypatch):
    """The lease's times cut 10x, in the same proportions."""
    for name, seconds in (("SOLO", 0.2), ("JOIN_WAIT", 0.3), ("LEASE", 0.5), ("VALID", 0.4)):
        monkeypatch.setattr(presence, name, seconds)


def relay(conn: object, name: str) -> Presence:
    return Presence(Pushes(conn, "pr", ttl=60), "relay", name)  # type: ignore[arg-type]


def keep(seconds: float, *relays: Presence) -> None:
    """Renew as the relays do, every 0.1 s (RENEW cut 10x) for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
        for r in relays:
            r.renew()


def test_a_relay_alone_pushes_at_once_and_soon_without_asking(conn):
    a = relay(conn, "a")
    assert not a.may_push()  # not renewed yet
    a.renew()
    assert a.may_push() and not a.alone() and a.others == 0  # asks for its first VALID
    keep(0.45, a)
    assert a.may_push() and a.alone()
    time.sleep(0.25)  # no renewal for longer than SOLO: ask again
    assert a.may_push() and not a.alone()
    a.renew()
    assert a.alone()


def test_after_redis_lost_the_relays_none_goes_alone_until_all_renewed(conn, raw):
    a, b = relay(conn, "a"), relay(conn, "b")
    a.renew()
    b.renew()
    keep(0.45, a, b)
    raw.flushall()  # b still pushes on its last renewal, asking first: a must too
    a.renew()
    assert a.others == 0 and a.may_push() and not a.alone()
    keep(0.2, a, b)
    assert a.others == 1 and not a.alone()


def test_a_relay_arriving_waits_until_the_others_have_seen_it(conn):
    a, b = relay(conn, "a"), relay(conn, "b")
    a.renew()
    epoch = a.epoch
    b.renew()
    assert not b.may_push() and b.others == 1  # a may still be pushing alone
    a.renew()
    assert a.may_push() and not a.alone() and a.epoch > epoch  # a asks before each push now
    keep(0.3, a, b)
    assert b.may_push() and not b.alone()
    keep(0.15, a, b)
    b.leave()
    assert not b.may_push()
    a.renew()
    assert a.alone()  # b signed off: a goes on alone at its next renewal (a came VALID ago)


def test_a_relay_whose_entry_may_have_lapsed_stops_and_arrives_again(conn):
    a, b = relay(conn, "a"), relay(conn, "b")
    a.renew()
    b.renew()
    time.sleep(0.45)  # a frozen past VALID: its entry may be gone for the others
    assert not a.may_push()
    b.renew()
    a.renew()  # back: b is there, so a waits as an arriving relay does
    assert not a.may_push()
    time.sleep(0.3)
    assert a.may_push() and not a.alone()


def test_a_dead_relay_lapses_and_the_survivor_goes_on_alone(conn):
    a, dead = relay(conn, "a"), relay(conn, "dead")
    dead.renew()
    a.renew()
    assert not a.alone()
    keep(0.6, a)  # the dead relay's entry lapses on the server's clock
    assert a.alone() and a.others == 0
