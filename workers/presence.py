"""Whether a relay is alone: then its lanes push without asking Redis first.

Every push is checked and marked by push.lua so that no sink gets an older event of a task
after a newer one, however many relays share the work. That check is a round trip before
each push. A relay that knows it is the only one of its group has no one to race: it decides
from what it marked itself, sends the mark in the same moment as the push (``mark_ahead``),
and so takes the round trip off the push's way.

Knowing is a lease on the Redis server's clock (relays.lua). Each relay renews its entry
every ``RENEW`` seconds; it counts as alone for ``SOLO`` seconds after a renewal that found
no other entry (from when the renewal was sent, so a slow answer only shortens it). A relay
that arrives while others are there pushes nothing for ``JOIN_WAIT`` > ``SOLO`` seconds, by
which time every relay that was alone before it came has seen it and asks again before each
push. A relay whose own entry may have lapsed (no renewal for ``VALID`` seconds) pushes
nothing until it renews, which counts as arriving again. A relay that arrives (or finds its
entry gone: Redis lost the set) asks before each push for its first ``VALID`` seconds even if
it sees no one: a relay whose entry was lost with the set may push that long on its last
renewal, and will have renewed, and so be seen, by then. The assumption, as with any lease:
a relay is not frozen for ``JOIN_WAIT - SOLO`` seconds between deciding a push and sending it.
"""

from __future__ import annotations

import math
import time

from pulse.events import Pushes

RENEW = 1.0
SOLO = 2.0
JOIN_WAIT = 3.0
LEASE = 5.0  # an entry lapses this long after its last renewal (a relay that died)
VALID = LEASE - RENEW  # a relay's own view of its entry, kept short of the lapse


class Presence:
    """This relay's entry among its group's relays; read by the lanes, renewed by the relay."""

    def __init__(self, pushes: Pushes, group: str, name: str) -> None:
        self.pushes = pushes
        self.group = group
        self.name = name
        self.others = -1  # other relays seen at the last renewal (-1: none yet)
        # bumped whenever others are seen: what a lane decided alone is void from then on
        self.epoch = 0
        self._push_from = self._alone_from = math.inf
        self._valid_until = 0.0
        self._solo_until = 0.0

    def renew(self) -> None:
        sent = time.monotonic()
        count, arrived = self.pushes.register(self.group, self.name, int(LEASE * 1000))
        if arrived or sent >= self._valid_until:  # arriving, back after a lapse, or forgotten
            now = time.monotonic()
            self._push_from = now + (JOIN_WAIT if count > 1 else 0.0)
            # Others may be pushing on a renewal from before, unseen if Redis lost the set
            # (FLUSHALL, a restart): alone only once each has renewed since, or stopped.
            self._alone_from = now + VALID
        self._valid_until = sent + VALID
        self._solo_until = sent + SOLO if count == 1 else 0.0
        self.others = count - 1
        if count > 1:
            self.epoch += 1

    def leave(self) -> None:
        self._valid_until = self._solo_until = 0.0
        self.pushes.register(self.group, self.name, 0)

    def may_push(self) -> bool:
        return self._push_from <= time.monotonic() < self._valid_until

    def alone(self) -> bool:
        """May push and need not ask first."""
        now = time.monotonic()
        return max(self._push_from, self._alone_from) <= now < self._solo_until
