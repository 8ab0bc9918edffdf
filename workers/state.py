"""The relay's own state in Redis: the lease, lease-checked reads and acks of each sink's
consumer group (``<group>:<sink>``), dead letters, and the sinks' memory (message ids).

Every key is under the namespace's hash tag, so the scripts run on a cluster too. Every
error leaves as a PulseError; losing the lease is ``LeaseLost``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulse import Entries, Event, Keys, Script, parse_entries, redis_errors
from pulse.errors import BackendReply, PulseError

_HERE = Path(__file__).parent / "scripts"
_LEASE = Script("lease", _HERE)
_READ = Script("read", _HERE)
_FINISH = Script("finish", _HERE)
_DEAD = Script("dead", _HERE)
DEAD_MAXLEN = 100_000
_ACK_BATCH = 500


class LeaseLost(PulseError):
    """Another relay took the lease over (this one froze or was cut off past its lease)."""

    code = "lease"


@dataclass(frozen=True)
class DeadLetter:
    id: str
    sink: str
    error: str
    event: Event | None  # None: the entry did not parse (``raw`` holds its fields)
    raw: dict[str, str]
    entry: str = ""  # the stream entry it came from

    def to_dict(self) -> dict[str, Any]:
        event = self.event.to_dict() if self.event else {"id": self.entry, "raw": self.raw}
        return {"id": self.id, "sink": self.sink, "error": self.error, "event": event}


class RelayState:
    """One namespace and relay group."""

    def __init__(self, client: Any, namespace: str, group: str, *, ttl: int) -> None:
        self.client = client
        self.namespace = namespace
        self.group = group
        self.ttl = ttl
        keys = Keys(namespace)
        self.events = keys.events
        self.lease_key = f"{keys.prefix}relay:{group}"
        self.dead = f"{keys.prefix}dead"
        self._memory = f"{keys.prefix}memory:"

    def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            with redis_errors():
                return script.on(self.client, keys, args)
        except BackendReply as e:
            if e.reply == "PULSE_LEASE":
                raise LeaseLost(str(e)) from None
            raise

    # -- the lease -----------------------------------------------------------------------

    def lease(self, token: str, op: str, ms: int = 0) -> bool:
        return bool(self._run(_LEASE, [self.lease_key], [token, op, ms]))

    def holder(self) -> str | None:
        with redis_errors():
            return self.client.get(self.lease_key)

    # -- a sink's group, for the holder --------------------------------------------------

    def init_group(self, token: str, group: str) -> bool:
        return bool(self._run(_READ, [self.lease_key, self.events], [token, group, "", 1, "init"]))

    def read_new(self, token: str, group: str, consumer: str, count: int) -> tuple[Entries, str]:
        """Entries never delivered to ``group``, and (when none) the stream's last id."""
        entries, last = self._run(
            _READ, [self.lease_key, self.events], [token, group, consumer, count, "new"]
        )
        return parse_entries(entries), last

    def claim_all(self, token: str, group: str, consumer: str, count: int) -> Iterator[Entries]:
        """Every pending entry of ``group``, whoever held it, in stream order."""
        cursor = "0-0"
        while True:
            reply = self._run(
                _READ,
                [self.lease_key, self.events],
                [token, group, consumer, count, "claim", cursor],
            )
            cursor, got = reply[0], parse_entries(reply[1])
            if got.gone:
                self.finish(token, group, got.gone)
            yield got
            if cursor == "0-0":
                return

    def wait_new(self, after: str, block_ms: int) -> bool:
        """Block until the stream has an entry after ``after`` (or ``block_ms`` passed)."""
        with redis_errors():
            return bool(self.client.xread({self.events: after}, count=1, block=block_ms))

    def finish(self, token: str, group: str, ids: list[str]) -> None:
        for i in range(0, len(ids), _ACK_BATCH):
            batch = ids[i : i + _ACK_BATCH]
            self._run(_FINISH, [self.lease_key, self.events], [token, group, *batch])

    def dead_letter(
        self,
        token: str,
        group: str,
        sink: str,
        error: str,
        entry_id: str,
        event: Event | None = None,
        raw: dict[str, str] | None = None,
    ) -> str:
        """Park the entry (an event a sink failed on, or raw fields that do not parse) and
        ack it, in one lease-checked step."""
        if event is not None:
            fields = {
                "kind": event.kind,
                "at": event.at,
                "task": json.dumps(event.task, ensure_ascii=False),
            }
        else:
            fields = {f"raw:{k}": v for k, v in (raw or {}).items()}
        flat = [
            x
            for kv in {"sink": sink, "error": error, "event": entry_id, **fields}.items()
            for x in kv
        ]
        return str(
            self._run(
                _DEAD,
                [self.lease_key, self.events, self.dead],
                [token, group, entry_id, DEAD_MAXLEN, *flat],
            )
        )

    # -- dead letters --------------------------------------------------------------------

    def park(self, sink: str, error: str, entry_id: str, raw: dict[str, str]) -> None:
        """A dead letter from a worker without a lease (the central mirror)."""
        fields = {"sink": sink, "error": error, "event": entry_id}
        fields.update({f"raw:{k}": v for k, v in raw.items()})
        with redis_errors():
            self.client.xadd(self.dead, fields, maxlen=DEAD_MAXLEN, approximate=True)

    def dead_letters(self, count: int = 1000) -> list[DeadLetter]:
        with redis_errors():
            entries = self.client.xrange(self.dead, "-", "+", count=count)
        letters = []
        for entry_id, d in entries:
            raw = {k[4:]: v for k, v in d.items() if k.startswith("raw:")}
            event = None
            if "task" in d:
                try:
                    event = Event.from_entry(d.get("event", ""), d)
                except PulseError:
                    event = None
            letters.append(
                DeadLetter(
                    entry_id, d.get("sink", ""), d.get("error", ""), event, raw, d.get("event", "")
                )
            )
        return letters

    def dead_counts(self, count: int = 10_000) -> dict[str, int]:
        """Dead letters per sink (of the newest ``count``)."""
        counts: dict[str, int] = {}
        with redis_errors():
            for _, d in self.client.xrevrange(self.dead, "+", "-", count=count):
                counts[d.get("sink", "")] = counts.get(d.get("sink", ""), 0) + 1
        return counts

    def remove_dead(self, ids: list[str]) -> None:
        if ids:
            with redis_errors():
                self.client.xdel(self.dead, *ids)

    # -- sink memory (the chat sinks' message ids) ---------------------------------------

    def get(self, key: str) -> str | None:
        with redis_errors():
            return self.client.get(self._memory + key)

    def set(self, key: str, value: str) -> None:
        with redis_errors():
            self.client.set(self._memory + key, value, ex=self.ttl)
