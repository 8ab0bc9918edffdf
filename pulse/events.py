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
from functools import partial
from typing import Any

from . import model
from .errors import BackendError
from .keys import STREAM_MAXLEN, Keys
from .scripts import Script
from .transport import Connection, ReplyError, publish_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Task

_STALL = Script("stall")
_PUSH = Script("push")
_RELAYS = Script("relays")


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


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair: ids compare by milliseconds, then sequence."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def group_positions(conn: Connection, namespace: str) -> dict[str, str]:
    """Each consumer group of the namespace's stream, and the last entry it was given."""
    try:
        groups = conn.call("XINFO", "GROUPS", Keys(namespace).events)
    except ReplyError as e:
        if "no such key" in str(e):
            return {}
        raise
    positions = {}
    for g in groups:
        info = dict(zip(g[::2], g[1::2], strict=True))
        positions[info["name"]] = info["last-delivered-id"]
    return positions


Ack = tuple[str, list[str]]  # a consumer group and entries it is done with


@dataclass(frozen=True)
class Verdict:
    """push.lua's answer: 'send', 'stale' or 'wait' (``wait_ms``), and the sink's marks for
    the task after it (``last``: the event it was last given, ``heartbeat_ms``: when it was
    last given a heartbeat; '' and 0 if never)."""

    verdict: str
    wait_ms: int
    last: str
    heartbeat_ms: int

    @classmethod
    def of(cls, reply: list[str]) -> Verdict:
        return cls(reply[0], int(reply[1]), reply[2], int(reply[3] or 0))


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
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.group = group
        self.consumer = consumer

    def ensure_group(self, start: str = "0") -> None:
        """Create the group if missing, reading from ``start`` on ("0": the stream's beginning,
        "$": only entries added from now on)."""
        try:
            self.conn.call("XGROUP", "CREATE", self.keys.events, self.group, start, "MKSTREAM")
        except ReplyError as e:
            if "BUSYGROUP" not in str(e):
                raise BackendError(f"cannot create consumer group {self.group}: {e}") from None

    def read(
        self,
        count: int,
        block_ms: int | None = None,
        *,
        own: bool = False,
        ack: list[str] | None = None,
    ) -> list[Event]:
        """New entries (or, with ``own``, those delivered to this consumer and not acked).

        ``ack``: entries to acknowledge first, in the same round trip.
        """
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", self.keys.events, "0" if own else ">"]
        if ack:
            acked, reply = self.conn.pipeline([["XACK", self.keys.events, self.group, *ack], args])
            for r in (acked, reply):
                if isinstance(r, ReplyError):
                    raise r
        else:
            reply = self.conn.call(*args)
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
        """Pending entries, the age of the oldest, and entries not yet delivered (a group not
        made yet has every entry of the stream still to read)."""
        k = self.keys
        last = group_positions(self.conn, self.namespace).get(self.group)
        pending, oldest = 0, None
        if last is not None:
            summary = self.conn.call("XPENDING", k.events, self.group)
            pending, oldest = int(summary[0] or 0), summary[1]
        start = f"({last}" if last else "-"
        undelivered = len(self.conn.call("XRANGE", k.events, start, "+", "COUNT", 10001))
        now_ms = int(time.time() * 1000)
        return {
            "pending": pending,
            "oldest_pending_seconds": (now_ms - entry_ms(oldest)) / 1000 if oldest else 0.0,
            "undelivered": undelivered,
            "stream_length": self.conn.call("XLEN", k.events),
        }


class Pushes:
    """What the relays share about pushing: push decisions, stall alerts, memory, dead letters."""

    def __init__(
        self, conn: Connection, namespace: str, *, ttl: int, stream_maxlen: int = STREAM_MAXLEN
    ) -> None:
        self.conn = conn
        self.keys = Keys(namespace)
        self.ttl = ttl
        self.stream_maxlen = stream_maxlen
        self._ahead: tuple[list[str], list[Any]] | None = None  # mark_ahead awaiting marked
        self._publish: str | None = None  # PUBLISH or SPUBLISH, learned once per connection

    def decide(
        self, event: Event, sink: str, now_ms: int, window_ms: int, ack: Ack | None = None
    ) -> Verdict:
        """May ``sink`` push ``event`` now (push.lua)? It is marked as the one the sink was
        given if so: never an older event of a task after a newer one, and heartbeats held
        back to one per window (``window_ms``; 0: no throttle). ``ack``: (group, entry ids)
        to acknowledge in the same round trip."""
        keys, args = self._push_args(event, sink, now_ms, window_ms, "0")
        return Verdict.of(_PUSH(self.conn, keys, args, self._ack(ack)))

    def mark_ahead(
        self, event: Event, sink: str, now_ms: int, window_ms: int, ack: Ack | None = None
    ) -> None:
        """Mark ``event`` as pushed to ``sink``, decided without asking (a relay alone): sent
        now, read with ``marked`` after the push, and nothing else on this connection between."""
        self._ahead = self._push_args(event, sink, now_ms, window_ms, "1")
        _PUSH.send(self.conn, *self._ahead, self._ack(ack))

    def _ack(self, ack: Ack | None) -> list[list[Any]]:
        if not ack or not ack[1]:
            return []
        group, ids = ack
        return [["XACK", self.keys.events, group, *ids]]

    def marked(self) -> Verdict:
        """What push.lua would have decided for the event ``mark_ahead`` marked."""
        args, self._ahead = self._ahead, None
        assert args is not None, "marked() without mark_ahead()"
        return Verdict.of(_PUSH.receive(self.conn, *args))

    def _push_args(
        self, event: Event, sink: str, now_ms: int, window_ms: int, forced: str
    ) -> tuple[list[str], list[Any]]:
        keys = [self.keys.pushed(event.task["taskId"])]
        return keys, [event.id, event.kind, sink, now_ms, window_ms, self.ttl, forced]

    def register(self, group: str, name: str, lease_ms: int) -> tuple[int, bool]:
        """Renew this relay's entry among the group's relays (relays.lua): how many are
        there, and whether its entry was missing (new, lapsed or lost). ``lease_ms`` 0: leave."""
        count, arrived = _RELAYS(self.conn, [self.keys.relays(group)], [name, lease_ms])
        return int(count), bool(arrived)

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
                [task_id, now_ms, at, self.stream_maxlen, k.channel, self._publish_command()],
            )
            if got:
                events.append(Event(got[0], "stall", at, model.normalize(json.loads(got[1]))))
        return events

    def _publish_command(self) -> str:
        if self._publish is None:
            self._publish = publish_command(self.conn)
        return self._publish

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


def listen(source: Any, namespace: str, *, tick: float = 1.0) -> Iterator[Event | None]:
    """Events as the pub/sub channel carries them, live (None every ``tick`` of quiet), read
    with ``source``: a Redis URL, or a redis-py client (``connection.redis_client``'s:
    redis.Redis or redis.RedisCluster, str replies; the caller closes it). On a cluster with
    sharded channels it subscribes with SSUBSCRIBE, on the node serving the namespace, as the
    scripts publish with SPUBLISH there. A lost connection (a
    failover, a restart) is subscribed again after ``tick``; events meanwhile are missed.

    Pub/sub has no history: it is for views; the workers read the stream instead.
    """
    from .connection import client_for_url, server_hello
    from .transport import sharded_channels

    client = client_for_url(source) if isinstance(source, str) else source
    try:
        yield from _listen(
            client, Keys(namespace).channel, tick, sharded_channels(server_hello(client))
        )
    finally:
        if client is not source:
            client.close()


def _listen(client: Any, channel: str, tick: float, sharded: bool) -> Iterator[Event | None]:
    from redis.exceptions import ConnectionError, TimeoutError

    while True:
        sub = None
        try:
            sub = client.pubsub(ignore_subscribe_messages=True)
            if sharded:
                sub.ssubscribe(channel)
                read = partial(sub.get_sharded_message, ignore_subscribe_messages=True)
            else:
                sub.subscribe(channel)
                read = sub.get_message
            while True:
                message = read(timeout=tick)
                if message is None:
                    yield None
                    continue
                data = json.loads(message["data"])
                task = model.normalize(data["task"])
                yield Event(data["id"], data["kind"], data.get("at", ""), task)
        except (ConnectionError, TimeoutError, OSError):
            yield None
            time.sleep(tick)
            if hasattr(client, "nodes_manager"):  # a cluster: ask where the slots are now
                try:
                    client.nodes_manager.initialize()
                except Exception:  # still in transition: the next round tries again
                    pass
        finally:
            if sub is not None:
                sub.close()
