"""The central mirror: its own consumer group on the namespace stream, keeping a folder with
every task's latest snapshot (same files as the writers' mirrors) for the team's volume.

Writes are idempotent (a file is replaced only by a newer version), so several mirror
workers may share a group without a lease. One bad entry (a snapshot that does not parse, an
id no file system takes) is logged in one line, parked in the dead letters and acknowledged:
the mirror goes on with the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from pulse import Entries, Event, Feed, Mirror
from pulse.errors import BackendReply, BackendUnavailable, PulseError

from .state import RelayState

log = logging.getLogger("pulse.mirror")


@dataclass
class MirrorWorker:
    feed: Feed
    mirror: Mirror
    state: RelayState  # for the dead letters
    batch: int = 500
    claim_idle: float = 30.0
    stopping: threading.Event = field(default_factory=threading.Event)
    written: int = 0
    parked: int = 0

    @property
    def sink(self) -> str:
        return f"mirror:{self.feed.group}"

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                self._loop()
            except (BackendUnavailable, BackendReply) as e:
                # Redis restarting, unreachable, or answering oddly in between: events not
                # acknowledged stay pending, so reading on after a pause loses nothing.
                log.warning("%s; retrying in %.1fs", e, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)
        return self.written

    def _loop(self) -> None:
        self.feed.ensure_group("0")  # the mirror wants every task it can still see
        self._write(self.feed.read(self.batch, own=True))
        next_claim = 0.0
        while not self.stopping.is_set():
            # A dead worker's events once idle for claim_idle: checked all along, as one that
            # died just before this one started holds events that are not idle yet.
            if time.monotonic() >= next_claim:
                self._write(self.feed.autoclaim(int(self.claim_idle * 1000), self.batch))
                next_claim = time.monotonic() + max(0.5, self.claim_idle / 2)
            self._write(self.feed.read(self.batch, 1000))

    def _write(self, got: Entries) -> None:
        for entry_id, raw, error in got.bad:
            self._park(entry_id, error, raw)
        # The newest snapshot of each task in the batch is the only one worth a file write.
        latest: dict[str, Event] = {}
        for event in got.events:
            have = latest.get(event.task["taskId"])
            if have is None or have.task["version"] < event.task["version"]:
                latest[event.task["taskId"]] = event
        for event in latest.values():
            try:
                if self.mirror.write_if_newer(event.task):
                    self.written += 1
            except (OSError, PulseError, KeyError, TypeError) as e:
                raw = {"kind": event.kind, "at": event.at, "taskId": str(event.task.get("taskId"))}
                self._park(event.id, f"cannot write the mirror file: {type(e).__name__}: {e}", raw)
        self.feed.ack([e.id for e in got.events] + [b[0] for b in got.bad])
        if got.events:
            log.info("mirrored %d events of %d tasks", len(got.events), len(latest))

    def _park(self, entry_id: str, error: str, raw: dict[str, str]) -> None:
        log.warning("mirror: entry %s parked in the dead letters: %s", entry_id, error)
        self.state.park(self.sink, error, entry_id, raw)
        self.parked += 1
