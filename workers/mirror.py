"""The central mirror: its own consumer group on the namespace stream, keeping a folder with
every task's latest snapshot (same files as the writers' mirrors) for the team's volume."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from pulse.errors import BackendUnavailable
from pulse.events import Feed
from pulse.mirror import Mirror
from pulse.transport import ReplyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pulse.model import Task

log = logging.getLogger("pulse.mirror")


@dataclass
class MirrorWorker:
    feed: Feed
    mirror: Mirror
    batch: int = 500
    claim_idle: float = 30.0
    stopping: threading.Event = field(default_factory=threading.Event)
    written: int = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                self._loop()
            except (BackendUnavailable, ReplyError) as e:
                if isinstance(e, ReplyError) and not str(e).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                # Redis restarting, unreachable, or emptied (the group is made again): events
                # not acknowledged stay pending, so reading on after a pause loses nothing.
                log.warning("%s; retrying in %.1fs", e, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)
        return self.written

    def _loop(self) -> None:
        self.feed.ensure_group()
        self._write(self.feed.read(self.batch, own=True))
        next_claim = 0.0
        while not self.stopping.is_set():
            # A dead worker's events once idle for claim_idle: checked all along, as one that
            # died just before this one started holds events that are not idle yet.
            if time.monotonic() >= next_claim:
                self._write(self.feed.autoclaim(int(self.claim_idle * 1000), self.batch))
                next_claim = time.monotonic() + max(0.5, self.claim_idle / 2)
            self._write(self.feed.read(self.batch, 1000))

    def _write(self, events: list) -> None:
        # The newest snapshot of each task in the batch is the only one worth a file write.
        latest: dict[str, Task] = {}
        for event in events:
            task = event.task
            have = latest.get(task["taskId"])
            if have is None or have["version"] < task["version"]:
                latest[task["taskId"]] = task
        for task in latest.values():
            if self.mirror.write_if_newer(task):
                self.written += 1
        self.feed.ack([e.id for e in events])
        if events:
            log.info("mirrored %d events of %d tasks", len(events), len(latest))
