"""The relay: pushes every event of a namespace to the configured sinks, throttled, at least
once, with stall alerts.

Each sink has a lane (lane.py): a thread with a Redis connection and a consumer group of its
own (``<group>:<sink name>``). An event is acked once its sink delivered it, skipped it as
stale or dead-lettered it; until then it stays pending in the sink's group, so a relay killed
at any moment loses nothing: a restart, or another relay after ``claim_idle``, takes the entry
over (XAUTOCLAIM) and pushes it again. The main thread renews the relay's presence
(presence.py) and looks for stalled tasks.

Order per task and sink: before a push, the lane marks the event as the last of the task its
sink was given (push.lua; a relay alone marks as it pushes), or skips it if the sink was given
a newer one. A lane pushes in stream order, so after a crash an entry older than the mark went
out already and the marked one goes again; a starting lane takes over what other relays held
before reading new entries the marks would beat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pulse import render
from pulse.connection import open_connection
from pulse.errors import BackendUnavailable
from pulse.events import Pushes, entry_order, group_positions
from pulse.settings import Settings
from pulse.transport import Connection, ReplyError

from .lane import Lane, Stats, retrying
from .presence import RENEW, Presence
from .sinks import Push, Sink, SinkError

log = logging.getLogger("pulse.relay")


@dataclass
class RelayConfig:
    group: str = "relay"  # each sink's consumer group is "<group>:<sink name>"
    consumer: str = "relay"
    batch: int = 200
    claim_idle: float = 30.0  # seconds a pending entry sits before another relay takes it
    stall_interval: float = 1.0
    tries: int = 5
    backoff: float = 1.0  # first retry delay; doubles each try, with full jitter
    backoff_max: float = 60.0


def markers(sinks: list[Sink]) -> list[str]:
    """Each sink's name in its consumer group and marks: ``sink.name``, with ``#2``, ``#3``
    on later sinks of the same name, so that they keep their groups and marks apart."""
    seen: Counter[str] = Counter()
    names = []
    for sink in sinks:
        seen[sink.name] += 1
        names.append(sink.name + (f"#{seen[sink.name]}" if seen[sink.name] > 1 else ""))
    return names


@dataclass
class Relay:
    conn: Connection
    settings: Settings
    sinks: list[Sink]
    config: RelayConfig = field(default_factory=RelayConfig)
    # a connection of its own for each lane; default: open_connection(settings)
    connect: Callable[[], Connection] | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.pushes = Pushes(self.conn, s.namespace, ttl=s.retention_seconds)
        self.presence = Presence(self.pushes, self.config.group, self.config.consumer)
        self.stopping = threading.Event()
        connect = self.connect or (lambda: open_connection(s))
        self.lanes = [
            Lane(sink, marker, connect(), s, self.config, self.presence, self.stopping)
            for sink, marker in zip(self.sinks, markers(self.sinks), strict=True)
        ]

    @property
    def failed(self) -> bool:
        return any(lane.failed for lane in self.lanes)

    @property
    def stats(self) -> Stats:
        total = Stats()
        for lane in self.lanes:
            total.add(lane.stats)
        return total

    def stop(self) -> None:
        """Finish the pushes in hand and return from ``run``."""
        self.stopping.set()

    def run(self) -> Stats:
        retrying("relay", self.stopping, self._make_groups)
        retrying("relay", self.stopping, self.presence.renew)
        for lane in self.lanes:
            lane.start()
        retrying("relay", self.stopping, self._housekeep)
        for lane in self.lanes:
            lane.join()
        try:
            self.presence.leave()  # the others may go on alone at once
        except (BackendUnavailable, ReplyError) as e:
            log.warning("could not sign off (%s): the others wait for the lease to lapse", e)
        log.info("relay stopped: %s", self.stats)
        return self.stats

    def _make_groups(self) -> None:
        """Each sink's group, made where the relay's other sinks are: a sink added later gets
        what they have not read yet, not the whole history; the first ones get everything."""
        positions = group_positions(self.conn, self.settings.namespace)
        prefix = f"{self.config.group}:"
        siblings = [last for name, last in positions.items() if name.startswith(prefix)]
        start = min(siblings, key=entry_order) if siblings else "0"
        for lane in self.lanes:
            lane.feed.ensure_group(start)

    def _housekeep(self) -> None:
        """Renew this relay's presence, and look for stalled tasks: a stall event goes
        through the stream like any other, so every lane pushes it."""
        next_stall = 0.0
        while not self.stopping.is_set():
            self.presence.renew()
            now = time.time()
            if now >= next_stall:
                self.pushes.mark_stalled(now, self.settings.tz)
                next_stall = now + self.config.stall_interval
            self.stopping.wait(min(RENEW, max(0.0, next_stall - time.time())))


def redrive(pushes: Pushes, sinks: list[Sink], lang: str) -> tuple[int, int]:
    """Send dead letters again through the sink they failed on; (sent, still failing).

    An explicit resend: no heartbeat throttle and no stale check (the sink has newer pushes).
    """
    by_name = {s.name: s for s in sinks}
    sent, failing = 0, 0
    for letter in pushes.dead_letters():
        sink = by_name.get(letter.sink)
        if sink is None:
            failing += 1
            log.warning("dead letter %s: sink %s is not configured", letter.id, letter.sink)
            continue
        ev = letter.event
        push = Push(ev.id, ev.kind, ev.task, render.render_push(ev.kind, ev.task, lang), ev.at)
        try:
            sink.send(push)
        except SinkError as e:
            failing += 1
            log.warning("dead letter %s to %s failed again: %s", letter.id, sink.name, e)
            continue
        pushes.remove_dead([letter.id])
        sent += 1
    return sent, failing
