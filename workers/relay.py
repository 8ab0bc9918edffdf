"""The relay of one namespace: pushes every event to the sinks, in order per task and sink,
throttled, at least once, with stall alerts.

Any number of relays may run for a namespace and group; one is active. It holds the group's
lease (lease.lua: a token set with SET NX PX, extended only by its holder every third of the
lease), and only it reads, acknowledges and dead-letters entries: each of those is a script
that checks the token in the same atomic step. The others stand by, trying to take the lease
every few hundred ms; the first to get it after the holder died or froze claims every entry
pending in each sink's group at once and pushes them first, in stream order.

One window remains: a push already on its way to a sink when the holder froze (or was cut
off) may arrive after the new holder's pushes of the same task. Its acknowledgement then fails
(the token is no longer there), so the new holder sends it again, in order: a receiver that
keeps the highest ``task.version`` per task and ignores a lower one sees every state in order.
A relay checks its own view of the lease (on the boot clock, which counts a suspended host)
before it starts a push, so the window is only a push already in hand.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pulse import Feed, Settings, mark_stalled
from pulse.errors import BackendUnavailable, PulseError

from .delivery import attempt
from .lane import Lane, LaneConfig, Stats
from .metrics import Metrics
from .sinks import Sink
from .state import LeaseLost, RelayState

log = logging.getLogger("pulse.relay")


def boot_clock() -> float:
    """Seconds on a clock that goes on while the host is suspended (Linux's CLOCK_BOOTTIME),
    else the monotonic clock: a lease measured on a clock that stopped would look valid."""
    return (
        time.clock_gettime(time.CLOCK_BOOTTIME)
        if hasattr(time, "CLOCK_BOOTTIME")
        else time.monotonic()
    )


@dataclass
class RelayConfig:
    group: str = "relay"  # each sink's consumer group is "<group>:<sink name>"
    consumer: str = "relay"
    lease_seconds: float = 10.0
    in_flight: int = 64  # pushes in flight per sink, for different tasks
    batch: int = 200
    stall_interval: float = 1.0
    tries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0


def markers(sinks: list[Sink]) -> list[str]:
    """Each sink's name in its consumer group: ``sink.name``, with ``#2``, ``#3`` on later
    sinks of the same name, so that they keep their groups apart."""
    seen: Counter[str] = Counter()
    names = []
    for sink in sinks:
        seen[sink.name] += 1
        names.append(sink.name + (f"#{seen[sink.name]}" if seen[sink.name] > 1 else ""))
    return names


class Lease:
    """This relay's hold on the lease, as far as it can know it."""

    def __init__(
        self, state: RelayState, token: str, seconds: float, clock: Callable[[], float] = boot_clock
    ) -> None:
        self.state, self.token, self.seconds, self.clock = state, token, seconds, clock
        self._until = 0.0

    def _ask(self, op: str) -> bool:
        sent = self.clock()
        held = self.state.lease(self.token, op, int(self.seconds * 1000))
        # counted from before the request: Redis's own expiry is never earlier than ours
        self._until = sent + self.seconds * 0.9 if held else 0.0
        return held

    def take(self) -> bool:
        return self._ask("take")

    def renew(self) -> None:
        if not self._ask("renew"):
            raise LeaseLost("the lease was taken over")

    def valid(self) -> bool:
        return self.clock() < self._until

    def drop(self) -> None:
        self._until = 0.0
        self.state.lease(self.token, "drop")


class Relay:
    def __init__(
        self,
        client: Any,
        settings: Settings,
        sinks: list[Sink],
        config: RelayConfig | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.client, self.settings, self.sinks = client, settings, sinks
        self.config = c = config or RelayConfig()
        self.metrics = metrics or Metrics()
        self.namespace = settings.namespace
        self.state = RelayState(client, self.namespace, c.group, ttl=settings.retention_seconds)
        self.token = f"{c.consumer}:{os.urandom(6).hex()}"
        self.lease = Lease(self.state, self.token, c.lease_seconds)
        self.markers = markers(sinks)
        self.stats = Stats()
        self.failed = False
        self.takeovers = 0
        # per sink: entries this relay delivered whose ack Redis never took (it went away):
        # acked first at the next activation, so they are not sent again
        self._carry: dict[str, list[str]] = {}

    def run(self, stopping: threading.Event) -> Stats:
        """Stand by, be active while holding the lease, until ``stopping`` is set."""
        poll = min(0.25, self.config.lease_seconds / 10)
        said = ""  # the last trouble logged: one line per outage, not four a second
        try:
            while not stopping.is_set():
                try:
                    if self.lease.take():
                        said = ""
                        self._active(stopping)
                        continue
                    said = ""
                except PulseError as e:
                    if str(e) != said:
                        log.warning("%s: %s; retrying", self.namespace, e)
                        said = str(e)
                stopping.wait(poll)
        finally:
            try:
                self.lease.drop()  # a standby may go on at once
            except PulseError as e:
                log.warning("could not give the lease back (%s): it lapses by itself", e)
            for sink in self.sinks:
                sink.close()
        log.info("relay of %s stopped: %s", self.namespace, self.stats)
        return self.stats

    def _active(self, stopping: threading.Event) -> None:
        c, s = self.config, self.settings
        self.takeovers += 1
        log.info("%s: active (%s/%s)", self.namespace, c.group, c.consumer)
        self.metrics.active(self.namespace, True)
        lanes = [
            Lane(
                sink,
                marker,
                self.state,
                self.token,
                self.lease.valid,
                LaneConfig(
                    group=f"{c.group}:{marker}",
                    consumer=c.consumer,
                    lang=s.lang,
                    window=s.heartbeat_push_seconds,
                    in_flight=c.in_flight,
                    tries=c.tries,
                    backoff=c.backoff,
                    backoff_max=c.backoff_max,
                    batch=c.batch,
                ),
                self.metrics,
                carry=self._carry.pop(marker, []),
            )
            for sink, marker in zip(self.sinks, self.markers, strict=True)
        ]
        for lane in lanes:
            lane.start()
        renew_every = c.lease_seconds / 3
        next_renew = next_stall = next_gauges = 0.0
        try:
            while not stopping.is_set() and not any(x.lost or x.failed for x in lanes):
                now = self.lease.clock()
                if now >= next_renew:
                    try:
                        self.lease.renew()
                        next_renew = now + renew_every
                    except BackendUnavailable as e:  # still ours until our view of it lapses
                        log.warning("%s: cannot renew the lease (%s)", self.namespace, e)
                        next_renew = now + 0.2
                    if not self.lease.valid():
                        log.warning("%s: the lease lapsed; standing by", self.namespace)
                        break
                if now >= next_stall:
                    next_stall = now + c.stall_interval
                    self._stalls()
                if self.metrics.enabled and now >= next_gauges:
                    next_gauges = now + 5.0
                    self._gauges()
                stopping.wait(0.1)
        except LeaseLost:
            log.warning("%s: another relay took the lease; standing by", self.namespace)
        finally:
            for lane in lanes:
                lane.stop()
            for lane in lanes:
                lane.join()
                self.stats.add(lane.stats)
                if not lane.lost:  # another holder claims and sends them anyway
                    self._carry[lane.marker] = lane.leftover()
            self.failed = self.failed or any(x.failed for x in lanes)
            self.metrics.active(self.namespace, False)
            if any(x.failed for x in lanes):
                stopping.set()  # a bug: the process exits non-zero, its supervisor restarts it

    def _stalls(self) -> None:
        try:
            mark_stalled(self.client, self.namespace, time.time(), self.settings.tz)
        except PulseError as e:
            log.warning("%s: stall check: %s", self.namespace, e)

    def _gauges(self) -> None:
        try:
            dead = self.state.dead_counts()
            for marker in self.markers:
                lag = Feed(self.client, self.namespace, f"{self.config.group}:{marker}", "-").lag()
                self.metrics.lag(self.namespace, marker, lag["pending"] + lag["undelivered"])
                self.metrics.dead_count(self.namespace, marker, dead.get(marker, 0))
        except PulseError as e:
            log.warning("%s: metrics: %s", self.namespace, e)


def redrive(state: RelayState, sinks: list[Sink], lang: str) -> tuple[int, int]:
    """Send dead letters again through the sink they failed on; (sent, still failing).
    An explicit resend: no throttle, no order check (the sink has newer pushes)."""
    by_name = dict(zip(markers(sinks), sinks, strict=True))
    sent, failing = 0, 0
    for letter in state.dead_letters():
        sink = by_name.get(letter.sink)
        if sink is None or letter.event is None:
            failing += 1
            why = "its sink is not configured" if letter.event else "it does not parse"
            log.warning("dead letter %s (%s): %s", letter.id, letter.sink, why)
            continue
        outcome = attempt(sink, letter.event, lang)
        if not outcome.ok:
            failing += 1
            log.warning(
                "dead letter %s to %s failed again: %s", letter.id, sink.name, outcome.error
            )
            continue
        state.remove_dead([letter.id])
        sent += 1
    return sent, failing
