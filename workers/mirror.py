"""The central mirror: its own consumer group on the namespace stream, keeping a folder with
every task's latest snapshot (same files as the writers' mirrors) for the team's volume."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from pulse.events import Feed
from pulse.mirror import Mirror

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
        self.feed.ensure_group()
        self._write(self.feed.read(self.batch, own=True))
        self._write(self.feed.autoclaim(int(self.claim_idle * 1000), self.batch))
        while not self.stopping.is_set():
            self._write(self.feed.read(self.batch, 1000))
        return self.written

    def _write(self, events: list) -> None:
        # The newest snapshot of each task in the batch is the only one worth a file write.
        latest = {}
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
