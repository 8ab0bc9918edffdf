"""The local journal: updates made while Redis could not be reached, kept until replayed.

One JSON line per update, appended with fsync next to the mirror
(``<dir>/<namespace>/.journal.jsonl``). How a replay stays right when other hosts went on
updating meanwhile:

- **Operation ids.** Every update carries an id its client made (16 random hex, ``opId``).
  update.lua records the ids a task applied in the task's hash (field ``ops``, the last 256
  with the version each made: a bounded list, because heartbeats are unbounded and a field
  per op would grow a long task's hash without end; 256 covers a reply lost with the
  connection, replayed at the next call, and a replay killed halfway and run again). An id
  seen before is not applied again, so replaying twice applies once.
- **The step it was made for.** A journaled ``next`` or ``heartbeat`` records the 1-based
  index of the step that ran in the host's mirror (``step``). It applies only while that
  step still runs, whatever else happened meanwhile (heartbeats, other hosts' messages); if
  another host finished that step, the update is a conflict, never applied to another step.
  ``done`` and ``error`` end the task and apply while it runs.
- **Conflicts are kept**, never dropped: in ``.journal.conflicts.jsonl`` beside the journal
  (each entry with why), named in one warning line, listed by ``pulse sync --conflicts``.
  An entry is kept there once, however often a replay is run again.
- **Time.** A replayed update keeps the time it was made; the task's time never goes back,
  so one made before another host's later update takes that update's time (model.not_before).
- **One target.** A journal belongs to one Redis and namespace: the id that namespace holds
  in Redis (``pulse:{ns}:target``, a random id set on first contact, never a URL, which
  differs between ``localhost`` and ``127.0.0.1`` or after a password change). Each entry
  records that id, cached per URL beside the journal (``.journal.targets``), or, if this
  URL was never reached, the URL's hash, resolved when it is. A call against another target
  replays nothing and leaves the entries alone, saying so once.
- **Unconfirmed snapshots.** The mirror file an offline update wrote lists the op ids it
  holds (``unconfirmed``) until a replay puts Redis's snapshot there: ``recover`` never
  restores such a file over a task Redis holds, and restores it with its op ids where Redis
  lost the task, so the replay after it applies nothing twice.
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
CONFLICTS = ".journal.conflicts.jsonl"
TARGETS = ".journal.targets"
ELSEWHERE = ".journal.elsewhere"  # targets a call was told about: say it once


def new_op_id() -> str:
    return os.urandom(8).hex()


class Journal:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.conflicts_path = self.folder / CONFLICTS

    def __bool__(self) -> bool:
        """Whether anything waits to be replayed (one stat: cheap on every call)."""
        return self.path.exists()

    def append(self, entry: dict[str, Any]) -> None:
        """Append durably: the line is on disk when this returns. Raises OSError."""
        with self._locked():
            _append(self.path, entry)

    def add_conflicts(self, entries: list[dict[str, Any]]) -> None:
        """Keep entries that cannot apply (each with ``conflict``: why), in one durable write;
        those kept already (a replay run again after a crash) are not added twice."""
        if not entries:
            return
        have = {c.get("opId") for c in self.conflicts()}
        new = [e for e in entries if not e.get("opId") or e["opId"] not in have]
        if new:
            _append_all(self.conflicts_path, new)

    def conflicts(self) -> list[dict[str, Any]]:
        return _read(self.conflicts_path)

    def entries(self) -> list[dict[str, Any]]:
        """What waits to be replayed, oldest first (read without the lock: a look only)."""
        return _read(self.path)

    # -- the target ----------------------------------------------------------------------

    def cached_target(self, url_key: str) -> str | None:
        try:
            known = json.loads((self.folder / TARGETS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        got = known.get(url_key) if isinstance(known, dict) else None
        return got if isinstance(got, str) else None

    def cache_target(self, url_key: str, target: str) -> None:
        """Remember which target this URL reached (best effort: a cache)."""
        path = self.folder / TARGETS
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
            known = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        if known.get(url_key) == target:
            return
        known[url_key] = target
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{TARGETS}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass

    def first_told(self, target: str) -> bool:
        """Whether a call against ``target`` is the first to hear the journal is not its
        (and so should say so); remembers that it was told."""
        path = self.folder / ELSEWHERE
        try:
            told = path.read_text(encoding="utf-8").split()
        except OSError:
            told = []
        if target in told:
            return False
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(target + "\n")
        except OSError:
            pass
        return True

    # -- replaying -----------------------------------------------------------------------

    @contextmanager
    def replaying(self, target: str, url_key: str) -> Iterator[Replay]:
        """The entries made for ``target`` in order, under the lock (one process replays at a
        time, and nobody appends meanwhile). When the block ends without an error, the
        journal keeps only the entries of other targets.

        Waits while another process replays: a call that went on to Redis meanwhile would
        overtake the journaled updates of its own task (tests/test_faults.py)."""
        with self._locked():
            replay = Replay(_read(self.path), target, url_key)
            yield replay
            if replay.foreign:
                _rewrite(self.path, replay.foreign)
            else:
                self.path.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".journal.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


class Replay:
    """A journal's entries split into those for this target (``mine``) and the rest."""

    def __init__(self, entries: list[dict[str, Any]], target: str, url_key: str) -> None:
        self.mine: list[dict[str, Any]] = []
        self.foreign: list[dict[str, Any]] = []
        self.kept: list[dict[str, Any]] = []  # of mine, left in the journal to replay later
        for e in entries:
            # Entries of older versions name no target: they were made for wherever the
            # next call goes, as they always were.
            made_for = e.get("target")
            ours = made_for == target or (made_for is None and e.get("url") in (None, url_key))
            if ours:
                e["target"] = target
            (self.mine if ours else self.foreign).append(e)

    def keep(self, entry: dict[str, Any]) -> None:
        """Leave one of ``mine`` in the journal, for a later replay."""
        self.kept.append(entry)
        self.foreign.append(entry)

    @property
    def foreign_targets(self) -> list[str]:
        others = [e for e in self.foreign if not any(e is k for k in self.kept)]
        return sorted({str(e.get("target") or e.get("url")) for e in others})


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-append was never acknowledged
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _append(path: Path, entry: dict[str, Any]) -> None:
    _append_all(path, [entry])


def _append_all(path: Path, entries: list[dict[str, Any]]) -> None:
    _write(path, entries, os.O_APPEND)


def _rewrite(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the journal with ``entries``, durably (temp file, fsync, rename)."""
    tmp = path.with_name(f"{NAME}.{os.getpid()}.tmp")
    _write(tmp, entries, os.O_TRUNC)
    os.replace(tmp, path)


def _write(path: Path, entries: list[dict[str, Any]], mode: int) -> None:
    """``entries`` as JSON lines, on disk (fsync) when this returns; ``mode``: O_APPEND or
    O_TRUNC."""
    data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
