"""A lane: one sink's share of the relay, in a thread of its own.

It reads the sink's consumer group (``<group>:<sink name>``), decides each event with
push.lua (or, while the relay is alone, from its own marks: see presence.py), pushes it with
retries, and acks it in the next write to Redis, all in the same thread: a push never waits
for a hand-over between threads, and one slow or broken sink never holds up the others.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from pulse import render
from pulse.errors import BackendUnavailable
from pulse.events import Event, Feed, Pushes, entry_order
from pulse.settings import Settings
from pulse.transport import Connection, ReplyError

from .presence import Presence
from .sinks import Push, Sink, SinkError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .relay import RelayConfig

log = logging.getLogger("pulse.relay")


@dataclass
class Stats:
    delivered: int = 0
    dead: int = 0
    stale: int = 0  # pushes a sink skipped: it was given a newer event of the task
    superseded: int = 0  # heartbeats a newer event made needless
    acked: int = 0

    def add(self, other: Stats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class _Held:
    event: Event
    due: float


def retrying(what: str, stopping: threading.Event, step: Callable[[], None]) -> None:
    """Run ``step`` until it returns or the relay stops, waiting out Redis.

    Redis restarting or unreachable, or emptied (FLUSHALL, a restart without persistence:
    NOGROUP): pending entries stay in the group, and the next round makes the group again, so
    waiting and going on loses nothing.
    """
    delay = 0.1
    while not stopping.is_set():
        started = time.monotonic()
        try:
            step()
            return
        except (BackendUnavailable, ReplyError) as e:
            # Redis 7.0 wakes a blocked XREADGROUP whose stream was deleted with UNBLOCKED,
            # Valkey and later reads with NOGROUP
            if isinstance(e, ReplyError) and e.code not in ("NOGROUP", "UNBLOCKED"):
                raise
            if time.monotonic() - started > 30:
                delay = 0.1  # it had been running fine: a new outage starts over
            log.warning("%s: %s; retrying in %.1fs", what, e, delay)
            stopping.wait(delay)
            delay = min(delay * 2, 10.0)


class Lane(threading.Thread):
    """One sink's share of the relay: reads its consumer group, decides, pushes, acks."""

    def __init__(
        self,
        sink: Sink,
        marker: str,  # the sink's name in its group and marks (``sink.name``, made unique)
        conn: Connection,
        settings: Settings,
        config: RelayConfig,
        presence: Presence,
        stopping: threading.Event,
    ) -> None:
        super().__init__(name=f"lane {sink.name}", daemon=True)
        self.presence = presence
        self.sink = sink
        self.marker = marker
        self.settings = settings
        self.config = config
        self.stopping = stopping
        self.feed = Feed(conn, settings.namespace, f"{config.group}:{marker}", config.consumer)
        self.pushes = Pushes(conn, settings.namespace, ttl=settings.retention_seconds)
        self.stats = Stats()
        self.failed = False  # stopped by a bug: the relay stops too, and exits non-zero
        self._window_ms = int(settings.heartbeat_push_seconds * 1000)
        self._held: dict[str, _Held] = {}  # task id -> its heartbeat waiting for its window
        # done with: acked with the next round trip to Redis (an ordered set)
        self._acks: dict[str, None] = {}
        # While the relay is alone: per task, the sink's last event and last heartbeat (ms),
        # as push.lua has them (this lane is the only one changing them).
        self._marks: dict[str, tuple[str, int]] = {}
        self._epoch = -1

    def run(self) -> None:
        try:
            retrying(self.sink.name, self.stopping, self._loop)
            self._flush_acks()
        except (BackendUnavailable, ReplyError) as e:
            log.warning(
                "%s: %d pushed events not acked (%s): they go again",
                self.sink.name,
                len(self._acks),
                e,
            )
        except Exception:  # a bug must not pass silently: the entries stay pending meanwhile
            log.exception("%s: the lane stopped", self.sink.name)
            self.failed = True
            self.stopping.set()
        finally:
            self.sink.close()
            self.feed.conn.close()

    def _loop(self) -> None:
        c = self.config
        self.feed.ensure_group()  # gone only if Redis lost everything: then from the start
        self._wait_turn()
        # Entries this consumer was given before a restart come first, then those other
        # consumers held when it started: both are older than any entry not read yet.
        self._take(self._read(own=True))
        self._adopt()
        next_claim = 0.0
        while not self.stopping.is_set():
            now = time.time()
            if now >= next_claim:
                self._take(self.feed.autoclaim(int(c.claim_idle * 1000), c.batch))
                next_claim = now + max(0.5, c.claim_idle / 2)
            self._release_held(now)
            wake = min([next_claim, *(h.due for h in self._held.values())])
            wait = min(1.0, max(0.001, wake - time.time()))
            self._take(self._read(int(wait * 1000)))
            self._wait_turn()

    def _wait_turn(self) -> None:
        """Read nothing while the relay may not push (arriving among others): what it read
        would wait, and newer events of the same tasks pushed by the others meanwhile would
        make it stale. Unread, it goes to the others."""
        while not self.presence.may_push() and not self.stopping.wait(0.05):
            pass

    def _read(self, block_ms: int | None = None, *, own: bool = False) -> list[Event]:
        """The next entries, acking those done with in the same round trip."""
        acks = list(self._acks)
        events = self.feed.read(self.config.batch, block_ms, own=own, ack=acks)
        self._acked(acks)
        return events

    def _flush_acks(self) -> None:
        acks = list(self._acks)
        self.feed.ack(acks)
        self._acked(acks)

    def _acked(self, ids: list[str]) -> None:
        for entry_id in ids:
            del self._acks[entry_id]
        self.stats.acked += len(ids)

    def _adopt(self) -> None:
        """Take over the entries other consumers held when this lane started (a dead relay's
        after ``claim_idle``), or see them acked, before reading any new entry: a newer event
        of the same task pushed first would make them stale on the sink, and so lose them."""
        c, events = self.config, self.feed.keys.events
        summary = self.feed.conn.call("XPENDING", events, self.feed.group)
        if not summary or not summary[0]:
            return
        upto = summary[2]  # the newest entry pending now; every unread one is newer
        deadline = time.time() + c.claim_idle + 1.0
        while not self.stopping.is_set():
            got = self.feed.autoclaim(int(c.claim_idle * 1000), c.batch)
            self._take(got)
            if not got and (time.time() > deadline or not self._held_by_others(upto)):
                return
            if not got:
                self.stopping.wait(min(0.1, c.claim_idle / 4))

    def _held_by_others(self, upto: str) -> bool:
        conn, events, group = self.feed.conn, self.feed.keys.events, self.feed.group
        consumers = (conn.call("XPENDING", events, group) or [0, None, None, None])[3]
        return any(
            name != self.config.consumer
            and conn.call("XPENDING", events, group, "-", upto, 1, name)
            for name, _ in consumers or []
        )

    # -- deciding ------------------------------------------------------------------------

    def _take(self, events: list[Event]) -> None:
        for event in events:
            if self.stopping.is_set():
                return  # the rest stays pending, for a restart or another relay
            if event.id in self._acks or self._is_held(event):
                continue  # a re-read after a reconnect: in hand already
            task_id = event.task["taskId"]
            held = self._held.get(task_id)
            if held:  # a newer event of the task: the held heartbeat is needless now
                del self._held[task_id]
                self._acks[held.event.id] = None
                self.stats.superseded += 1
            self._decide(event)

    def _is_held(self, event: Event) -> bool:
        held = self._held.get(event.task["taskId"])
        return held is not None and held.event.id == event.id

    def _decide(self, event: Event) -> None:
        while not self.presence.may_push():  # arriving among other relays: wait our turn
            if self.stopping.wait(0.05):
                return  # stays pending, for a restart or another relay
        window = self._window_ms if event.kind == "heartbeat" else 0
        now_ms = int(time.time() * 1000)
        task_id = event.task["taskId"]
        alone = self.presence.alone()
        if self._epoch != self.presence.epoch or len(self._marks) > 10_000:
            self._marks.clear()  # others came meanwhile (or it grew big): ask Redis again
            self._epoch = self.presence.epoch
        if alone and task_id in self._marks:
            verdict, wait_ms = self._decide_alone(event, now_ms, window)
        else:
            acks = list(self._acks)  # done with: acked in the same round trip
            v = self.pushes.decide(event, self.marker, now_ms, window, (self.feed.group, acks))
            self._acked(acks)
            verdict, wait_ms = v.verdict, v.wait_ms
            if alone:
                self._marks[task_id] = (v.last, v.heartbeat_ms)
        if verdict == "wait":
            self._held[task_id] = _Held(event, time.time() + wait_ms / 1000)
        elif verdict == "stale":
            log.info("skipped %s %s: %s had a newer one", event.kind, event.id, self.sink.name)
            self.stats.stale += 1
            self._acks[event.id] = None
        else:
            ahead = alone and task_id in self._marks and self._marks[task_id][0] != event.id
            if ahead:
                self._marks[task_id] = (event.id, now_ms if window else self._marks[task_id][1])
                ack = (self.feed.group, list(self._acks))
                self.pushes.mark_ahead(event, self.marker, now_ms, window, ack)
            if event.kind in ("done", "error"):
                self._marks.pop(task_id, None)  # the task's last push
            self._push(event, ahead)

    def _decide_alone(self, event: Event, now_ms: int, window: int) -> tuple[str, int]:
        """push.lua's decision, made from this lane's own marks (see workers/presence.py)."""
        last, heartbeat_ms = self._marks[event.task["taskId"]]
        if last == event.id or not last:
            return "send", 0
        if entry_order(event.id) < entry_order(last):
            return "stale", 0
        if window and heartbeat_ms and now_ms - heartbeat_ms < window:
            return "wait", heartbeat_ms + window - now_ms
        return "send", 0

    def _check_ahead(self, event: Event) -> None:
        verdict = self.pushes.marked().verdict
        self._acked(list(self._acks))  # they went with the mark
        if verdict == "stale":  # only if a relay froze past its lease (presence.py)
            log.warning(
                "%s: pushed %s %s alone, but another relay had pushed a newer event of the task",
                self.sink.name,
                event.kind,
                event.id,
            )

    def _release_held(self, now: float) -> None:
        for task_id, held in list(self._held.items()):
            if held.due <= now:
                del self._held[task_id]
                self._decide(held.event)

    # -- pushing -------------------------------------------------------------------------

    def _push(self, event: Event, ahead: bool = False) -> None:
        """Deliver with retries; dead-letter after the last try. Acked either way, unless the
        relay stops during a retry wait (then it stays pending). ``ahead``: its mark is on
        its way (``mark_ahead``); the answer is read once the first try is over."""
        c, name = self.config, self.sink.name
        text = render.render_push(event.kind, event.task, self.settings.lang)
        push = Push(event.id, event.kind, event.task, text, event.at)
        error = "not tried"
        for attempt in range(1, c.tries + 1):
            start = time.monotonic()
            try:
                try:
                    self.sink.send(push)
                finally:
                    if ahead:
                        ahead = False
                        self._check_ahead(event)
            except SinkError as e:
                error = str(e)
                if e.permanent:
                    log.warning("%s: %s %s refused for good: %s", name, event.kind, event.id, error)
                    break
                delay = random.uniform(0, min(c.backoff_max, c.backoff * 2 ** (attempt - 1)))
                delay = max(delay, e.retry_after or 0.0)
                log.warning(
                    "%s: try %d of %d for %s %s failed (%s); next in %.2fs",
                    name,
                    attempt,
                    c.tries,
                    event.kind,
                    event.id,
                    error,
                    delay,
                )
                if attempt == c.tries:
                    break
                if self.stopping.wait(delay):
                    return
            except Exception as e:  # a bug in a sink must not stop its lane
                error = f"{type(e).__name__}: {e}"
                log.exception("%s: failed on %s", name, event.id)
                break
            else:
                log.info(
                    "pushed %s %s v%s to %s in %.0f ms",
                    event.kind,
                    event.task["taskId"],
                    event.task["version"],
                    name,
                    (time.monotonic() - start) * 1e3,
                )
                self.stats.delivered += 1
                self._acks[event.id] = None
                return
        self.pushes.dead_letter(name, error, event)
        self.stats.dead += 1
        self._acks[event.id] = None
