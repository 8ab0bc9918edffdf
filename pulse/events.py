"""The namespace's events as the workers read them: consumer groups, push claims and marks,
stall alerts, sink memory and dead letters. Like ``store``, the only other module that knows
Redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from . import model
from .errors import BackendError
from .keys import STREAM_MAXLEN, Keys
from .scripts import Script
from .transport import Connection, ReplyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Task

_STALL = Script("stall")
_CLAIM = Script("claim")
_SENT = Script("sent")


@dataclass(frozen=True)
class Event:
    """One entry of the stream: ``{id, kind, at, task}`` as SPEC gives it."""

    id: str
    kind: str
    at: str
    task: Task

    @classmethod
    def from_entry(cls, entry_id: str, fields: list[str]) -> Event:
        data = dict(zip(fields[::2], fields[1::2], strict=True))
        return cls(
            entry_id, data["kind"], data.get("at", ""), model.normalize(json.loads(data["task"]))
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "at": self.at, "task": self.task}


def entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


@dataclass(frozen=True)
class DeadLetter:
    id: str
    sink: str
    error: str
    event: Event


class Feed:
    """The stream read through one consumer group: at least once, acknowledged after use."""

    def __init__(self, conn: Connection, namespace: str, group: str, consumer: str) -> None:
        self.conn = conn
        self.keys = Keys(namespace)
        self.group = group
        self.consumer = consumer

    def ensure_group(self) -> None:
        """Create the group if missing; a new group starts at the stream's beginning."""
        try:
            self.conn.call("XGROUP", "CREATE", self.keys.events, self.group, "0", "MKSTREAM")
        except ReplyError as e:
            if "BUSYGROUP" not in str(e):
                raise BackendError(f"cannot create consumer group {self.group}: {e}") from None

    def read(self, count: int, block_ms: int | None = None, *, own: bool = False) -> list[Event]:
        """New entries (or, with ``own``, those delivered to this consumer and not acked)."""
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        reply = self.conn.call(*args, "STREAMS", self.keys.events, "0" if own else ">")
        if not reply:
            return []
        return self._events(reply[0][1])

    def autoclaim(self, min_idle_ms: int, count: int) -> list[Event]:
        """Take over entries another consumer was given and left idle (it died)."""
        reply = self.conn.call(
            "XAUTOCLAIM",
            self.keys.events,
            self.group,
            self.consumer,
            min_idle_ms,
            "0-0",
            "COUNT",
            count,
        )
        return self._events(reply[1])

    def ack(self, ids: list[str]) -> None:
        if ids:
            self.conn.call("XACK", self.keys.events, self.group, *ids)

    def _events(self, entries: list[Any]) -> list[Event]:
        events, gone = [], []
        for entry in entries:
            if entry is None:
                continue
            entry_id, fields = entry
            if fields is None:  # trimmed from the stream while pending: nothing to deliver
                gone.append(entry_id)
            else:
                events.append(Event.from_entry(entry_id, fields))
        self.ack(gone)
        return events

    def lag(self) -> dict[str, Any]:
        """Pending entries, the age of the oldest, and entries not yet delivered."""
        k = self.keys
        summary = self.conn.call("XPENDING", k.events, self.group)
        pending, oldest = int(summary[0] or 0), summary[1]
        groups = self.conn.call("XINFO", "GROUPS", k.events)
        last = "0-0"
        for g in groups:
            info = dict(zip(g[::2], g[1::2], strict=True))
            if info["name"] == self.group:
                last = info["last-delivered-id"]
        undelivered = len(self.conn.call("XRANGE", k.events, f"({last}", "+", "COUNT", 10001))
        now_ms = int(time.time() * 1000)
        return {
            "pending": pending,
            "oldest_pending_seconds": (now_ms - entry_ms(oldest)) / 1000 if oldest else 0.0,
            "undelivered": undelivered,
            "stream_length": self.conn.call("XLEN", k.events),
        }


class Pushes:
    """What the relays share about pushing: claims, marks, stall alerts, memory, dead letters."""

    def __init__(
        self, conn: Connection, namespace: str, *, ttl: int, stream_maxlen: int = STREAM_MAXLEN
    ) -> None:
        self.conn = conn
        self.keys = Keys(namespace)
        self.ttl = ttl
        self.stream_maxlen = stream_maxlen

    def claim(self, event: Event, now_ms: int, heartbeat_window_ms: int) -> tuple[str, int]:
        """('send', 0) or ('wait', ms): may this event be pushed now? Only heartbeats are
        ever held back (the throttle); other kinds always go."""
        reply = _CLAIM(
            self.conn,
            [self.keys.pushed(event.task["taskId"])],
            [event.id, event.kind, now_ms, heartbeat_window_ms, self.ttl],
        )
        return reply[0], int(reply[1]) if len(reply) > 1 else 0

    def mark_sent(self, event: Event, sink: str) -> str:
        """'send' or 'stale': mark ``event`` as the one ``sink`` pushes now for its task, unless
        that sink was already given a newer event of the task (then skip this one)."""
        return _SENT(
            self.conn,
            [self.keys.pushed(event.task["taskId"])],
            [event.id, f"sent:{sink}", self.ttl],
        )

    def mark_stalled(self, now: float, tz: tzinfo, limit: int = 100) -> list[Event]:
        """Emit `stall` for running tasks quiet past their stall time; one per stall."""
        k = self.keys
        now_ms = int(now * 1000)
        at = model.iso(datetime.fromtimestamp(now, tz))
        events = []
        for task_id in self.conn.call(
            "ZRANGEBYSCORE", k.running, "-inf", now_ms, "LIMIT", 0, limit
        ):
            got = _STALL(
                self.conn,
                [k.task(task_id), k.running, k.events],
                [task_id, now_ms, at, self.stream_maxlen, k.channel],
            )
            if got:
                events.append(Event(got[0], "stall", at, model.normalize(json.loads(got[1]))))
        return events

    # -- sink memory ---------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        return self.conn.call("GET", self.keys.memory(key))

    def set(self, key: str, value: str) -> None:
        self.conn.call("SET", self.keys.memory(key), value, "EX", self.ttl)

    # -- dead letters --------------------------------------------------------------------

    def dead_letter(self, sink: str, error: str, event: Event) -> str:
        return self.conn.call(
            "XADD",
            self.keys.dead,
            "MAXLEN",
            "~",
            self.stream_maxlen,
            "*",
            "sink",
            sink,
            "error",
            error,
            "event",
            event.id,
            "kind",
            event.kind,
            "at",
            event.at,
            "task",
            json.dumps(event.task, ensure_ascii=False),
        )

    def dead_letters(self, count: int = 1000) -> list[DeadLetter]:
        letters = []
        for entry_id, fields in self.conn.call("XRANGE", self.keys.dead, "-", "+", "COUNT", count):
            d = dict(zip(fields[::2], fields[1::2], strict=True))
            event = Event(
                d["event"], d["kind"], d.get("at", ""), model.normalize(json.loads(d["task"]))
            )
            letters.append(DeadLetter(entry_id, d["sink"], d["error"], event))
        return letters

    def remove_dead(self, ids: list[str]) -> None:
        if ids:
            self.conn.call("XDEL", self.keys.dead, *ids)

    def dead_count(self) -> int:
        return self.conn.call("XLEN", self.keys.dead)


def listen(url: str, namespace: str, *, tick: float = 1.0) -> Iterator[Event | None]:
    """Events as the pub/sub channel carries them, live (None every ``tick`` of quiet).

    Pub/sub has no history: it is for views; the workers read the stream instead.
    """
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(Keys(namespace).channel)
    try:
        while True:
            message = sub.get_message(timeout=tick)
            if message is None:
                yield None
                continue
            data = json.loads(message["data"])
            yield Event(data["id"], data["kind"], data.get("at", ""), model.normalize(data["task"]))
    finally:
        sub.close()
        client.close()
