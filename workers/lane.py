"""A lane: one sink's share of the active relay.

Its reader thread takes the sink's new entries (lease-checked, read.lua) into an inbox; the
lane thread feeds them to the policy (policy.py), hands what is ready to a pool of at most
``limit`` senders, and acknowledges what is done with (finish.lua, lease-checked) or parks
it in the dead letters (dead.lua). An entry is acknowledged only once delivered, dropped as
overtaken, or dead-lettered: until then it stays pending, and the relay that takes over after
a crash or a freeze claims it and sends it again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

from pulse import Entries, Event
from pulse.errors import BackendUnavailable, PulseError

from .delivery import Outcome, attempt
from .metrics import Metrics
from .policy import HEARTBEAT, Policy
from .sinks import Sink
from .state import LeaseLost, RelayState

log = logging.getLogger("pulse.relay")
_BACKLOG = 5_000  # events a lane holds before it stops reading (the rest waits in Redis)


@dataclass
class Stats:
    delivered: int = 0
    dead: int = 0
    dropped: int = 0  # overtaken by a newer event of the task before they were sent
    failed_tries: int = 0

    def add(self, other: Stats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class LaneConfig:
    group: str  # the sink's consumer group, ``<relay group>:<sink marker>``
    consumer: str
    lang: str
    window: float  # heartbeat push window, seconds
    in_flight: int
    tries: int
    backoff: float
    backoff_max: float
    batch: int = 200


class Lane(threading.Thread):
    def __init__(
        self,
        sink: Sink,
        marker: str,
        state: RelayState,
        token: str,
        valid: Callable[[], bool],  # whether this relay may still start a push (its lease)
        config: LaneConfig,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        carry: list[str] | None = None,
    ) -> None:
        super().__init__(name=f"lane {marker}", daemon=True)
        self.sink, self.marker, self.state, self.token = sink, marker, state, token
        self.valid, self.config, self.metrics, self.clock = valid, config, metrics, clock
        self.policy = Policy(
            window=config.window,
            limit=max(1, min(config.in_flight, getattr(sink, "in_flight", config.in_flight))),
            tries=config.tries,
            backoff=config.backoff,
            backoff_max=config.backoff_max,
            coalesce=getattr(sink, "coalesce", HEARTBEAT),
        )
        self.stats = Stats()
        self.stopping = threading.Event()
        self.lost = False  # another relay holds the lease now: stop, ack nothing more
        self.failed = False  # stopped by a bug
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._senders = ThreadPoolExecutor(self.policy.limit, thread_name_prefix=f"send {marker}")
        # entries done with whose ack Redis has not taken yet; a lane that stops hands them to
        # the next (``leftover``): pushed while Redis was away, they must not go out again
        self._unacked: list[str] = list(carry or [])

    def leftover(self) -> list[str]:
        """Entries delivered (or dropped) and not yet acknowledged, once the lane ended."""
        return self._unacked + self.policy.take_acks()

    def stop(self) -> None:
        """Finish the pushes in flight, acknowledge, return."""
        self.stopping.set()
        self._inbox.put(("wake",))

    def run(self) -> None:
        try:
            self._start()
            reader = threading.Thread(
                target=self._read_loop, name=f"read {self.marker}", daemon=True
            )
            reader.start()
            self._loop()
        except LeaseLost:
            self.lost = True
            log.warning("%s: another relay holds the lease now; standing by", self.marker)
        except Exception:  # a bug: the entries stay pending, for this relay or another
            log.exception("%s: the lane stopped", self.marker)
            self.failed = True
        finally:
            self.stopping.set()
            self._senders.shutdown(wait=not self.lost, cancel_futures=True)

    def _start(self) -> None:
        """The group (at the end of the stream if new), then every entry pending in it,
        whoever held it: all older than any entry not read yet, so they go first."""
        c = self.config
        while True:
            try:
                self.state.init_group(self.token, c.group)
                self._flush([])  # what an earlier lane of this relay delivered, first
                if self._unacked:
                    raise BackendUnavailable("acks still wait for Redis")
                claimed = 0
                for got in self.state.claim_all(self.token, c.group, c.consumer, c.batch):
                    self._take(got)
                    claimed += len(got.events)
                if claimed:
                    log.info("%s: took over %d pending entries", self.marker, claimed)
                return
            except BackendUnavailable as e:
                log.warning("%s: %s; retrying", self.marker, e)
                if self.stopping.wait(0.5):
                    return

    def _read_loop(self) -> None:
        c, after = self.config, "0-0"
        delay = 0.1
        while not self.stopping.is_set():
            try:
                held = self.policy.waiting + self._inbox.qsize() * c.batch  # read, not yet taken
                if held > _BACKLOG or not self.valid():
                    self.stopping.wait(0.05)
                    continue
                got, last = self.state.read_new(self.token, c.group, c.consumer, c.batch)
                if got.events or got.bad or got.gone:
                    self._inbox.put(("entries", got))
                    continue
                after = last or after
                self.state.wait_new(after, 1000)
                delay = 0.1
            except LeaseLost:
                self._inbox.put(("lost",))
                return
            except PulseError as e:
                log.warning("%s: reading: %s; retrying in %.1fs", self.marker, e, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _loop(self) -> None:
        p = self.policy
        while True:
            now = self.clock()
            sending = not self.stopping.is_set() and self.valid()
            if sending:
                for event in p.ready(now):
                    self._senders.submit(self._send, event)
            self._flush(p.take_acks())
            if self.stopping.is_set() and p.in_flight == 0:
                self._flush([])
                return
            due = p.next_due(now)
            timeout = 1.0 if due is None else min(1.0, max(0.0, due - now))
            if self._unacked:
                timeout = min(timeout, 0.2)
            if not sending:  # nothing is due while it may not push: wait for replies
                timeout = max(timeout, 0.05)
            try:
                message = (
                    self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
                )
            except queue.Empty:
                continue
            while True:
                self._handle(message)
                try:
                    message = self._inbox.get_nowait()
                except queue.Empty:
                    break

    def _send(self, event: Event) -> None:
        if not self.valid():  # the lease may have lapsed since: leave it to the holder
            self._inbox.put(("held", event))
            return
        self._inbox.put(("sent", event, attempt(self.sink, event, self.config.lang)))

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "entries":
            self._take(message[1])
        elif kind == "sent":
            self._sent(message[1], message[2])
        elif kind == "held":
            self.policy.release(message[1], self.clock(), 0.5)
        elif kind == "lost":
            raise LeaseLost("lease lost while reading")

    def _take(self, got: Entries) -> None:
        if got.gone:
            self._unacked += got.gone
        for entry_id, raw, error in got.bad:
            log.warning(
                "%s: entry %s does not parse; parked in the dead letters", self.marker, entry_id
            )
            self._park(entry_id, error, raw=raw)
        for event in got.events:
            self.policy.add(event)

    def _sent(self, event: Event, outcome: Outcome) -> None:
        p, name, kind = self.policy, self.marker, event.kind
        self.metrics.pushed(self.state.namespace, name, kind, outcome)
        if outcome.ok:
            p.delivered(event, self.clock())
            self.stats.delivered += 1
            log.debug("pushed %s %s to %s", kind, event.id, name)
            return
        self.stats.failed_tries += 1
        dropped = p.dropped
        if p.failed(
            event, self.clock(), permanent=outcome.permanent, retry_after=outcome.retry_after
        ):
            log.warning("%s: %s %s dead-lettered: %s", name, kind, event.id, outcome.error)
            self._park(event.id, outcome.error, event=event)
        elif p.dropped == dropped:
            log.warning("%s: %s %s failed (%s); retrying", name, kind, event.id, outcome.error)
        self.stats.dropped = p.dropped

    def _park(
        self, entry_id: str, error: str, *, event: Event | None = None, raw: Any = None
    ) -> None:
        try:
            self.state.dead_letter(
                self.token, self.config.group, self.marker, error, entry_id, event, raw
            )
            self.stats.dead += 1
            self.metrics.dead(self.state.namespace, self.marker)
        except BackendUnavailable as e:  # stays pending: the next holder (or restart) retries
            log.warning("%s: could not park %s (%s); it stays pending", self.marker, entry_id, e)

    def _flush(self, acks: list[str]) -> None:
        ids = self._unacked + acks
        if not ids:
            return
        try:
            self.state.finish(self.token, self.config.group, ids)
            self._unacked = []
        except BackendUnavailable as e:
            if not self._unacked:
                log.warning("%s: acks wait for Redis (%s)", self.marker, e)
            self._unacked = ids
        self.stats.dropped = self.policy.dropped
