"""The relay: reads every event of a namespace through a consumer group and pushes it to the
configured sinks, throttled, at least once, with stall alerts.

One thread talks to Redis (reads, heartbeat claims, acks, dead letters, stall checks) and
hands every event to every sink at once; each sink has a thread (and a Redis connection) of
its own, so one slow or broken sink never holds up the others. An event is acked when every
sink has delivered it, skipped it as stale or dead-lettered it; until then it stays pending
in the group, so a relay killed at any moment loses nothing: a restart, or another relay
after ``claim_idle``, takes the entry over (XAUTOCLAIM) and pushes it again.

Order per task and sink: right before a push, its sink marks the event as the last of the
task it was given (sent.lua), or skips it if it was given a newer one. A sink's queue is FIFO,
so after a crash an entry older than the mark went out already and the marked one goes again;
a starting relay takes over what others held before reading new entries the marks would beat.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pulse import render
from pulse.connection import open_connection
from pulse.errors import BackendUnavailable
from pulse.events import Event, Feed, Pushes
from pulse.settings import Settings
from pulse.transport import Connection, ReplyError

from .sinks import Push, Sink, SinkError

log = logging.getLogger("pulse.relay")


@dataclass
class RelayConfig:
    group: str = "relay"
    consumer: str = "relay"
    batch: int = 200
    claim_idle: float = 30.0  # seconds a pending entry sits before another relay takes it
    stall_interval: float = 1.0
    tries: int = 5
    backoff: float = 1.0  # first retry delay; doubles each try, with full jitter
    backoff_max: float = 60.0
    max_in_flight: int = 2000


@dataclass
class Stats:
    delivered: int = 0
    dead: int = 0
    stale: int = 0  # pushes a sink skipped: it was given a newer event of the task
    superseded: int = 0  # heartbeats a newer event made needless
    acked: int = 0


@dataclass
class _Delivery:
    event: Event
    push: Push
    remaining: int


@dataclass
class _Held:
    event: Event
    due: float


@dataclass
class _Outcome:
    delivery: _Delivery
    sink: str
    error: str | None = None  # None: delivered (or skipped as stale)
    abandoned: bool = False  # the relay is stopping: leave the entry pending
    stale: bool = False  # the sink was given a newer event of the task: skipped


class SinkWorker(threading.Thread):
    """Delivers pushes to one sink in order, retrying with backoff and jitter.

    ``marker`` names the sink in the task's push state (``sink.name``, made unique).
    """

    def __init__(
        self,
        sink: Sink,
        marker: str,
        pushes: Pushes,
        config: RelayConfig,
        report: Callable[[_Outcome], None],
        stopping: threading.Event,
    ) -> None:
        super().__init__(name=f"sink {sink.name}", daemon=True)
        self.sink = sink
        self.marker = marker
        self.pushes = pushes
        self.config = config
        self.report = report
        self.stopping = stopping
        self.queue: queue.Queue[_Delivery | None] = queue.Queue()

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            self.report(self._deliver(item))
        self.sink.close()
        self.pushes.conn.close()

    def _mark(self, event: Event) -> str | None:
        """'send' or 'stale' (sent.lua); None when the relay stops first. Waits out Redis."""
        delay = 0.1
        while not self.stopping.is_set():
            try:
                return self.pushes.mark_sent(event, self.marker)
            except Exception as e:  # Redis restarting: the entry stays pending meanwhile
                log.warning(
                    "%s: cannot mark %s (%s); retrying in %.1fs", self.sink.name, event.id, e, delay
                )
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)
        return None

    def _deliver(self, delivery: _Delivery) -> _Outcome:
        push, c = delivery.push, self.config
        # Stopping: only the push in hand is finished; what is queued stays pending, unmarked.
        verdict = self._mark(delivery.event)
        if verdict is None:
            return _Outcome(delivery, self.sink.name, abandoned=True)
        if verdict == "stale":
            log.info("skipped %s %s: %s had a newer one", push.kind, push.event_id, self.sink.name)
            return _Outcome(delivery, self.sink.name, stale=True)
        error = "not tried"
        for attempt in range(1, c.tries + 1):
            start = time.monotonic()
            try:
                self.sink.send(push)
            except SinkError as e:
                error = str(e)
                if e.permanent:
                    log.warning(
                        "%s: %s %s refused for good: %s",
                        self.sink.name,
                        push.kind,
                        push.task["taskId"],
                        error,
                    )
                    break
                delay = random.uniform(0, min(c.backoff_max, c.backoff * 2 ** (attempt - 1)))
                delay = max(delay, e.retry_after or 0.0)
                log.warning(
                    "%s: try %d of %d for %s %s failed (%s); next in %.2fs",
                    self.sink.name,
                    attempt,
                    c.tries,
                    push.kind,
                    push.task["taskId"],
                    error,
                    delay,
                )
                if attempt == c.tries:
                    break
                if self.stopping.wait(delay):
                    return _Outcome(delivery, self.sink.name, error, abandoned=True)
            except Exception as e:  # a bug in a sink must not kill its thread
                error = f"{type(e).__name__}: {e}"
                log.exception("%s: failed on %s", self.sink.name, push.event_id)
                break
            else:
                log.info(
                    "pushed %s %s v%s to %s in %.0f ms",
                    push.kind,
                    push.task["taskId"],
                    push.task["version"],
                    self.sink.name,
                    (time.monotonic() - start) * 1e3,
                )
                return _Outcome(delivery, self.sink.name)
        return _Outcome(delivery, self.sink.name, error)


@dataclass
class Relay:
    conn: Connection
    settings: Settings
    sinks: list[Sink]
    config: RelayConfig = field(default_factory=RelayConfig)
    # a connection of its own for each sink thread; default: open_connection(settings)
    connect: Callable[[], Connection] | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.feed = Feed(self.conn, s.namespace, self.config.group, self.config.consumer)
        self.pushes = Pushes(self.conn, s.namespace, ttl=s.retention_seconds)
        self.stopping = threading.Event()
        self.stats = Stats()
        self._outcomes: queue.Queue[_Outcome] = queue.Queue()
        self._held: dict[str, _Held] = {}
        self._in_flight = 0
        self._in_hand: set[str] = set()  # ids read and not yet acked (held, in flight)
        self._window_ms = int(s.heartbeat_push_seconds * 1000)
        connect = self.connect or (lambda: open_connection(s))
        self._workers: list[SinkWorker] = []
        names: Counter[str] = Counter()
        for sink in self.sinks:
            names[sink.name] += 1  # two sinks of one name keep their marks apart
            marker = sink.name + (f"#{names[sink.name]}" if names[sink.name] > 1 else "")
            pushes = Pushes(connect(), s.namespace, ttl=s.retention_seconds)
            self._workers.append(
                SinkWorker(sink, marker, pushes, self.config, self._outcomes.put, self.stopping)
            )

    def stop(self) -> None:
        """Finish the pushes in hand and return from ``run``."""
        self.stopping.set()

    def run(self) -> Stats:
        for w in self._workers:
            w.start()
        delay = 0.1
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self._loop()
            except (BackendUnavailable, ReplyError) as e:
                # Redis restarting or unreachable, or emptied (FLUSHALL, a restart without
                # persistence: NOGROUP): pending entries stay in the group, and the next
                # round makes the group again, so waiting and reading on loses nothing.
                if isinstance(e, ReplyError) and "NOGROUP" not in str(e):
                    raise
                if time.monotonic() - started > 30:
                    delay = 0.1  # it had been running fine: a new outage starts over
                log.warning("%s; retrying in %.1fs", e, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)
            else:
                break
        self._shutdown()
        return self.stats

    def _loop(self) -> None:
        c = self.config
        self.feed.ensure_group()
        # Entries this consumer was given before a restart come first, then those other
        # consumers held when it started: both are older than any entry not read yet.
        self._take(self.feed.read(c.batch, own=True))
        self._adopt()
        next_stall = next_claim = 0.0
        while not self.stopping.is_set():
            now = time.time()
            self._settle()
            if now >= next_stall:
                self.pushes.mark_stalled(now, self.settings.tz)  # read back from the stream
                next_stall = now + c.stall_interval
            if now >= next_claim:
                self._take(self.feed.autoclaim(int(c.claim_idle * 1000), c.batch))
                next_claim = now + max(0.5, c.claim_idle / 2)
            self._release_held(now)
            if self._in_flight >= c.max_in_flight:
                self._settle(wait=0.05)
                continue
            wake = min([next_stall, next_claim, *(h.due for h in self._held.values())])
            wait = min(1.0, max(0.001, wake - time.time()))
            if self._in_flight:
                # wake when a sink finishes a push: its ack goes out at once (a redelivery
                # after a crash or a Redis restart is a duplicate push)
                self._settle(wait=min(wait, 0.05))
                self._take(self.feed.read(c.batch))
            else:
                self._take(self.feed.read(c.batch, int(wait * 1000)))

    def _adopt(self) -> None:
        """Take over the entries other consumers held when this relay started (a dead relay's
        after ``claim_idle``), or see them acked, before reading any new entry: a newer event
        of the same task pushed first would make them stale on its sinks, and so lose them."""
        c, events = self.config, self.feed.keys.events
        summary = self.conn.call("XPENDING", events, c.group)
        if not summary or not summary[0]:
            return
        upto = summary[2]  # the newest entry pending now; every unread one is newer
        deadline = time.time() + c.claim_idle + 1.0
        while not self.stopping.is_set():
            self._settle()
            got = self.feed.autoclaim(int(c.claim_idle * 1000), c.batch)
            self._take(got)
            if not got and (time.time() > deadline or not self._held_by_others(upto)):
                return
            if self._in_flight >= c.max_in_flight or not got:
                self._settle(wait=min(0.1, c.claim_idle / 4))

    def _held_by_others(self, upto: str) -> bool:
        c, events = self.config, self.feed.keys.events
        consumers = (self.conn.call("XPENDING", events, c.group) or [0, None, None, None])[3]
        return any(
            name != c.consumer and self.conn.call("XPENDING", events, c.group, "-", upto, 1, name)
            for name, _ in consumers or []
        )

    # -- deciding ------------------------------------------------------------------------

    def _take(self, events: list[Event]) -> None:
        for event in events:
            # a reconnect re-reads this consumer's pending entries: some are in hand already
            if event.id not in self._in_hand:
                self._in_hand.add(event.id)
                self._route(event)

    def _route(self, event: Event) -> None:
        task_id = event.task["taskId"]
        held = self._held.get(task_id)
        if held and held.event.id != event.id:
            # A newer event of the task: the held heartbeat is stale (or replaced).
            del self._held[task_id]
            self._ack([held.event.id])
            self.stats.superseded += 1
        self._decide(event)

    def _decide(self, event: Event) -> None:
        if event.kind != "heartbeat" or self._window_ms <= 0:  # only heartbeats are throttled
            self._dispatch(event)
            return
        verdict, wait_ms = self.pushes.claim(event, int(time.time() * 1000), self._window_ms)
        if verdict == "wait":
            self._held[event.task["taskId"]] = _Held(event, time.time() + wait_ms / 1000)
        else:
            self._dispatch(event)

    def _release_held(self, now: float) -> None:
        for task_id, held in list(self._held.items()):
            if held.due <= now:
                del self._held[task_id]
                self._decide(held.event)

    def _dispatch(self, event: Event) -> None:
        text = render.render_push(event.kind, event.task, self.settings.lang)
        push = Push(event.id, event.kind, event.task, text, event.at)
        if not self._workers:
            self._ack([event.id])
            return
        delivery = _Delivery(event, push, remaining=len(self._workers))
        self._in_flight += 1
        for w in self._workers:
            w.queue.put(delivery)

    # -- settling ------------------------------------------------------------------------

    def _settle(self, wait: float = 0.0) -> None:
        """Record what the sink threads finished: dead letters, then acks."""
        done: list[str] = []
        try:
            outcome = self._outcomes.get(timeout=wait) if wait else self._outcomes.get_nowait()
            while True:
                self._record(outcome, done)
                outcome = self._outcomes.get_nowait()
        except queue.Empty:
            pass
        self._ack(done)

    def _record(self, outcome: _Outcome, done: list[str]) -> None:
        d = outcome.delivery
        if outcome.abandoned:
            d.remaining = -1  # never acked: stays pending for a restart or another relay
            return
        if outcome.stale:
            self.stats.stale += 1
        elif outcome.error is None:
            self.stats.delivered += 1
        else:
            self.pushes.dead_letter(outcome.sink, outcome.error, d.event)
            self.stats.dead += 1
        d.remaining -= 1
        if d.remaining == 0:
            done.append(d.event.id)
            self._in_flight -= 1

    def _ack(self, ids: list[str]) -> None:
        if ids:
            # out of hand first: if the ack fails, a re-read pushes them again (at least once)
            self._in_hand.difference_update(ids)
            self.feed.ack(ids)
            self.stats.acked += len(ids)

    def _shutdown(self) -> None:
        for w in self._workers:
            w.queue.put(None)
        for w in self._workers:
            w.join()
        self._settle()
        log.info("relay stopped: %s", self.stats)


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
