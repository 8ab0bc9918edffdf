"""The local journal: updates made while Redis could not be reached, kept until replayed.

One JSON line per update, appended with fsync next to the mirror
(``<dir>/<namespace>/.journal.jsonl``). Each line records what the update makes (the task's
new ``version``), so a replay applies it only on the version before it: replaying twice, or
replaying an update that did reach Redis before the connection broke, changes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME = ".journal.jsonl"
REJECTED = ".journal.rejected.jsonl"


class Journal:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / NAME

    def __bool__(self) -> bool:
        """Whether anything waits to be replayed (one stat: cheap on every call)."""
        return self.path.exists()

    def append(self, entry: dict[str, Any]) -> None:
        """Append durably: the line is on disk when this returns. Raises OSError."""
        with self._locked():
            _append(self.path, entry)

    def reject(self, entry: dict[str, Any], reason: str) -> None:
        """Keep an entry that could not be replayed, with why, rather than drop it."""
        _append(self.folder / REJECTED, {**entry, "rejected": reason})

    @contextmanager
    def replaying(self) -> Iterator[list[dict[str, Any]]]:
        """The entries in order, under the lock (one process replays at a time, and nobody
        appends meanwhile); the journal is removed when the block ends without an error.

        Waits while another process replays: a call that went on to Redis meanwhile would
        overtake the journaled updates of its own task (tests/test_faults.py)."""
        with self._locked():
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                yield []
                return
            entries = []
            for line in text.splitlines():
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue  # a line torn by a crash mid-append was never acknowledged
            yield entries
            self.path.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".journal.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _append(path: Path, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
