"""The namespace's events as the workers read them: entries, consumer groups, stall alerts.
Like ``store``, the only other module that knows Redis. Every call takes a redis-py client
(``pulse.connection.redis_client``) and raises only PulseErrors.
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
from .connection import redis_errors
from .errors import BadValue
from .keys import STREAM_MAXLEN, Keys
from .scripts import Script

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Task

_STALL = Script("stall")


@dataclass(frozen=True)
class Event:
    """One entry of the stream: ``{id, kind, at, task}`` as SPEC gives it."""

    id: str
    kind: str
    at: str
    task: Task

    @classmethod
    def from_entry(cls, entry_id: str, fields: Any) -> Event:
        """The event of a stream entry (fields as a flat list or a dict); BadValue if it
        does not parse, so a worker can park it and go on."""
        try:
            data = fields if isinstance(fields, dict) else _pairs(fields)
            task = model.normalize(json.loads(data["task"]))
            if not isinstance(task, dict) or not task.get("taskId"):
                raise ValueError("no taskId")
            return cls(entry_id, str(data["kind"]), str(data.get("at", "")), task)
        except Exception as e:  # any shape of garbage: one entry must not stop a worker
            raise BadValue(f"entry {entry_id} does not parse: {type(e).__name__}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "at": self.at, "task": self.task}


def _pairs(flat: Any) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=False))  # an odd field out: dropped


def entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair: ids compare by milliseconds, then sequence."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def group_positions(client: Any, namespace: str) -> dict[str, str]:
    """Each consumer group of the namespace's stream, and the last entry it was given."""
    with redis_errors():
        key = Keys(namespace).events
        if not client.exists(key):
            return {}
        groups = client.xinfo_groups(key)
    return {g["name"]: g["last-delivered-id"] for g in groups}


@dataclass(frozen=True)
class Entries:
    """What a read gave: the events, and the entries that do not parse (``(id, fields,
    error)``: for the dead letters) or were trimmed while pending (ids: nothing to do)."""

    events: list[Event]
    bad: list[tuple[str, dict[str, str], str]]
    gone: list[str]


def parse_entries(entries: Any) -> Entries:
    events, bad, gone = [], [], []
    for entry in entries or []:
        if entry is None or entry[0] is None:  # Redis 6.2: deleted while pending (no id)
            continue
        entry_id, fields = entry
        if not fields:  # trimmed from the stream while pending: nothing to deliver
            gone.append(entry_id)
            continue
        try:
            events.append(Event.from_entry(entry_id, fields))
        except BadValue as e:
            raw = fields if isinstance(fields, dict) else _pairs(fields)
            bad.append((entry_id, {str(k): str(v) for k, v in raw.items()}, str(e)))
    return Entries(events, bad, gone)


class Feed:
    """The stream read through one consumer group: at least once, acknowledged after use.
    For workers that may run side by side (the central mirror); ``lag`` for ``--check``."""

    def __init__(self, client: Any, namespace: str, group: str, consumer: str) -> None:
        self.client = client
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.group = group
        self.consumer = consumer

    def ensure_group(self, start: str = "$") -> None:
        """Create the group if missing, reading from ``start`` on ("$": entries added from
        now on, "0": the stream's beginning)."""
        with redis_errors():
            if self.group in group_positions(self.client, self.namespace):
                return
            try:
                self.client.xgroup_create(self.keys.events, self.group, start, mkstream=True)
            except Exception as e:  # made by another worker meanwhile
                if "BUSYGROUP" not in str(e):
                    raise

    def read(self, count: int, block_ms: int | None = None, *, own: bool = False) -> Entries:
        """New entries (or, with ``own``, those delivered to this consumer and not acked).
        A group that is gone (Redis lost everything) is made again, from the start."""
        stream = {self.keys.events: "0" if own else ">"}
        with redis_errors():
            try:
                reply = self.client.xreadgroup(
                    self.group, self.consumer, stream, count=count, block=block_ms
                )
            except Exception as e:
                # NOGROUP: Redis lost the group (and the stream); UNBLOCKED: the stream was
                # deleted while this read waited on it (Redis 7, Valkey)
                if not str(e).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                self.ensure_group("0")
                return Entries([], [], [])
        return self._parsed(reply[0][1] if reply else [])

    def autoclaim(self, min_idle_ms: int, count: int) -> Entries:
        """Take over entries another consumer was given and left idle (it died)."""
        with redis_errors():
            reply = self.client.xautoclaim(
                self.keys.events, self.group, self.consumer, min_idle_ms, "0-0", count=count
            )
        got = self._parsed(reply[1])
        if any(entry is None or entry[0] is None for entry in reply[1]):
            self._ack_deleted(got.events, count)
        return got

    def _ack_deleted(self, live: list[Event], count: int) -> None:
        # Redis 6.2 claims an entry deleted from the stream while pending as a bare nil, without
        # its id, and keeps it pending for good; 7.0+ and Valkey drop it themselves. So on 6.2:
        # find this consumer's pending ids that are gone from the stream, and ack them.
        k, have = self.keys, {e.id for e in live}
        with redis_errors():
            pending = self.client.xpending_range(
                k.events, self.group, "-", "+", count, consumername=self.consumer
            )
            ids = [p["message_id"] for p in pending if p["message_id"] not in have]
            gone = [i for i in ids if not self.client.xrange(k.events, i, i)]
        self.ack(gone)

    def ack(self, ids: list[str]) -> None:
        if ids:
            with redis_errors():
                self.client.xack(self.keys.events, self.group, *ids)

    def _parsed(self, entries: Any) -> Entries:
        got = parse_entries(entries)
        self.ack(got.gone)
        return got

    def lag(self) -> dict[str, Any]:
        """Pending entries, the age of the oldest, and entries not yet delivered. A group
        not made yet starts at the end of the stream (as the workers make theirs): 0."""
        k = self.keys
        with redis_errors():
            last = group_positions(self.client, self.namespace).get(self.group)
            pending, oldest = 0, None
            undelivered = 0
            if last is not None:
                summary = self.client.xpending(k.events, self.group)
                pending, oldest = int(summary["pending"] or 0), summary["min"]
                undelivered = len(self.client.xrange(k.events, f"({last}", "+", count=10001))
            length = self.client.xlen(k.events)
        now_ms = int(time.time() * 1000)
        return {
            "pending": pending,
            "oldest_pending_seconds": (now_ms - entry_ms(oldest)) / 1000 if oldest else 0.0,
            "undelivered": undelivered,
            "stream_length": length,
        }


def mark_stalled(
    client: Any,
    namespace: str,
    now: float,
    tz: tzinfo,
    *,
    limit: int = 100,
    maxlen: int = STREAM_MAXLEN,
) -> list[Event]:
    """Emit `stall` for running tasks quiet past their stall time; one per stall."""
    k = Keys(namespace)
    now_ms = int(now * 1000)
    at = model.iso(datetime.fromtimestamp(now, tz))
    events = []
    with redis_errors():
        publish = _publish_command(client)
        due = client.zrangebyscore(k.running, "-inf", now_ms, start=0, num=limit)
        for task_id in due:
            got = _STALL.on(
                client,
                [k.task(task_id), k.running, k.events],
                [task_id, now_ms, at, maxlen, k.channel, publish],
            )
            if got:
                events.append(Event(got[0], "stall", at, model.normalize(json.loads(got[1]))))
    return events


def _publish_command(client: Any) -> str:
    """stall.lua's publish command on this redis-py client (SPUBLISH on a cluster with sharded
    channels), asked of the server once per client."""
    publish = getattr(client, "_pulse_publish", None)
    if publish is None:
        from .connection import server_hello
        from .transport import sharded_channels

        # only a cluster client can be on a cluster (redis_client): others are not asked
        cluster = hasattr(client, "get_default_node")
        publish = "SPUBLISH" if cluster and sharded_channels(server_hello(client)) else "PUBLISH"
        client._pulse_publish = publish
    return publish


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
        cluster = hasattr(client, "get_default_node")  # redis_client's RedisCluster
        sharded = cluster and sharded_channels(server_hello(client))
        yield from _listen(client, Keys(namespace).channel, tick, sharded)
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


# -- the stream read from a position (the web server's one reader, and pages resuming) -----
# ``client`` is a redis-py client (``pulse.connection.redis_client``) with str replies: a
# long-lived reader, not the per-step path.


def last_event_id(client: Any, namespace: str) -> str:
    """The id of the namespace's newest event, or "0-0" when the stream is empty."""
    newest = client.xrevrange(Keys(namespace).events, "+", "-", count=1)
    return newest[0][0] if newest else "0-0"


def entries_after(
    client: Any, namespace: str, after: str, *, count: int = 500, block_ms: int | None = None
) -> list[tuple[str, dict[str, str]]]:
    """Up to ``count`` stream entries (id, fields: kind, at, task as JSON text) with ids after
    ``after``, oldest first. With ``block_ms``, waits that long for the first one (XREAD
    BLOCK); without, answers at once (XRANGE)."""
    key = Keys(namespace).events
    if block_ms is None:
        entries: list[tuple[str, dict[str, str]]] = client.xrange(
            key, f"({after}", "+", count=count
        )
        return entries
    reply = client.xread({key: after}, count=count, block=block_ms)
    return reply[0][1] if reply else []


def events_after(
    client: Any, namespace: str, after: str, *, count: int = 500, block_ms: int | None = None
) -> list[Event]:
    """``entries_after`` as Events (the snapshot normalized)."""
    return [
        Event(i, f["kind"], f.get("at", ""), model.normalize(json.loads(f["task"])))
        for i, f in entries_after(client, namespace, after, count=count, block_ms=block_ms)
    ]


def valid_event_id(text: str) -> bool:
    """Whether ``text`` reads as a stream id (``MS-SEQ`` or ``MS``), as a resuming client
    sends it back."""
    ms, _, seq = text.partition("-")
    return ms.isdigit() and len(ms) <= 20 and (not seq or (seq.isdigit() and len(seq) <= 20))
