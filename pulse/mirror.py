"""The JSON mirror: one file per task, so the record survives the loss of Redis.

Files live at ``<dir>/<namespace>/<taskId>.json`` and hold the snapshot as SPEC gives it,
pretty-printed like the seed skill's task files. Writes go to a temp file in the same folder
and are renamed over the old one, so a reader (or a crash) never sees a torn file.

A snapshot an offline update made (journal.py) carries one more field, ``unconfirmed``: the
operation ids it holds that Redis has not confirmed. Any snapshot from Redis replaces it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import model
from .errors import BadValue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Task


def dumps(task: Task) -> str:
    return json.dumps(task, ensure_ascii=False, indent=2) + "\n"


def unconfirmed(task: Task | None) -> list[str]:
    """The op ids of offline updates a mirror snapshot holds; empty if Redis gave it."""
    ops = dict(task or {}).get("unconfirmed")
    return list(ops) if isinstance(ops, list) else []


class MirrorWriteError(OSError):
    """A mirror file that could not be written, said in one line (path and reason)."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = errno  # type: ignore[misc]


class Mirror:
    def __init__(self, root: Path, namespace: str) -> None:
        self.root = Path(root)
        self.folder = self.root / namespace

    def path(self, task_id: str) -> Path:
        """The file of a task; ids are checked so the path can never leave the folder."""
        path = self.folder / f"{model.check_id(task_id)}.json"
        if path.parent != self.folder:  # belt and braces: check_id already refuses separators
            raise BadValue(f"not a task id: {task_id!r}")
        return path

    def write(self, task: Task) -> Path:
        """Write the file; MirrorWriteError (an OSError saying path and reason in one line)
        if the disk refuses."""
        path = self.path(task["taskId"])
        data = dumps(task).encode()
        try:
            try:
                fd, tmp = _open_temp(self.folder, path.name)
            except FileNotFoundError:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = _open_temp(self.folder, path.name)
        except OSError as e:
            raise _write_error(path, e) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            _unlink(tmp)
            raise _write_error(path, e) from None
        except BaseException:
            _unlink(tmp)
            raise
        return path

    def write_if_newer(self, task: Task, *, confirmed: bool = True) -> bool:
        """Write unless the file holds this version or a newer one (for the central mirror,
        which may see a task's events out of order when several consumers share the work).

        A snapshot from Redis (``confirmed``) also replaces an offline one of its version;
        ``confirmed=False`` with ``unconfirmed`` in ``task``: a snapshot made offline."""
        with self._locked():
            have = self._have(task["taskId"])
            if have is not None and have["version"] >= task["version"]:
                if not (confirmed and unconfirmed(have) and have["version"] == task["version"]):
                    return False
            self.write(task)
            return True

    def converge(self, task: Task) -> bool:
        """Put Redis's snapshot in the file after a replay, replacing what offline updates
        made (which Redis may have taken, or kept as conflicts), unless the file holds a newer
        snapshot from Redis."""
        with self._locked():
            have = self._have(task["taskId"])
            if have is not None and not unconfirmed(have) and have["version"] > task["version"]:
                return False
            self.write(task)
            return True

    def _have(self, task_id: str) -> Task | None:
        try:
            return self.read(task_id)
        except BadValue:
            return None  # a torn or foreign file: the snapshot replaces it

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = open(self.folder / ".lock", "a")
        except OSError as e:
            raise _write_error(self.folder, e) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def read(self, task_id: str) -> Task | None:
        try:
            return load_file(self.path(task_id))
        except FileNotFoundError:
            return None

    def remove(self, task_id: str) -> bool:
        return _unlink(self.path(task_id))

    def __iter__(self) -> Iterator[Path]:
        return iter(sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ())


def load_file(path: Path, namespace: str | None = None) -> Task:
    """A snapshot from a mirror file or a seed skill task file, checked and normalized.

    OSError if it cannot be read; BadValue naming the file for anything wrong with what it
    holds (not JSON, a field of the wrong type) or a folder in its place."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BadValue(f"{path}: not a JSON task file ({e})") from None
    except IsADirectoryError:
        raise BadValue(f"{path}: a folder, not a task file") from None
    if not isinstance(raw, dict):
        raise BadValue(f"{path}: not a JSON task object")
    if not (raw.get("taskId") or raw.get("id")):
        raw["taskId"] = path.stem  # the seed skill named its files after the id
    try:
        task = model.check_snapshot(model.normalize(raw, namespace=namespace))
    except BadValue as e:
        raise BadValue(f"{path}: {e}") from None
    ops = raw.get("unconfirmed")
    if isinstance(ops, list) and ops and all(isinstance(op, str) for op in ops):
        task["unconfirmed"] = ops  # type: ignore[typeddict-unknown-key]
    return task


def _write_error(path: Path, e: OSError) -> MirrorWriteError:
    why = e.strerror or str(e)
    hint = " (set PULSE_DIR to a folder you can write)" if e.errno in (1, 13, 20, 30) else ""
    return MirrorWriteError(e.errno, f"cannot write the mirror file {path}: {why}{hint}")


def _open_temp(folder: Path, name: str) -> tuple[int, str]:
    tmp = folder / f".{name}.{os.getpid()}.{os.urandom(3).hex()}.tmp"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), str(tmp)


def _unlink(path: str | Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


class BackgroundWriter:
    """Writes a client's snapshots on a thread of its own, so a long-lived process updating
    fast is not held to the disk's pace. A task's file is written at most every ``interval``
    seconds, with its newest snapshot (the mirror holds latest versions, not history);
    ``flush`` writes everything waiting at once. The CLI, one update per process, writes in
    line instead."""

    def __init__(
        self, mirror: Mirror, on_error: Callable[[OSError], None], interval: float = 0.1
    ) -> None:
        import threading
        import time

        self.mirror = mirror
        self.on_error = on_error
        self.interval = interval
        self._clock = time.monotonic
        self._pending: dict[str, Task] = {}
        self._written: dict[str, float] = {}  # task id: when its file was last written
        self._busy = False
        self._flushing = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pulse mirror", daemon=True)
        self._thread.start()

    def put(self, task: Task) -> None:
        with self._cond:
            have = self._pending.get(task["taskId"])
            if have is None:
                self._pending[task["taskId"]] = task
                self._cond.notify_all()  # only news wakes the writer: it knows the rest
            elif have["version"] < task["version"]:
                self._pending[task["taskId"]] = task

    def flush(self) -> None:
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._pending and not self._busy)
            self._flushing -= 1

    def _next(self) -> Task:
        """The next snapshot due for writing; waits (holding no lock) until one is."""
        while True:
            now = self._clock()
            wait = None
            for task_id in self._pending:
                due = self._written.get(task_id, 0.0) + self.interval
                if self._flushing or due <= now:
                    return self._pending.pop(task_id)
                wait = due - now if wait is None else min(wait, due - now)
            self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                task = self._next()
                self._busy = True
            try:
                self.mirror.write_if_newer(task)
            except OSError as e:
                self.on_error(e)
            finally:
                with self._cond:
                    self._written[task["taskId"]] = self._clock()
                    self._busy = False
                    self._cond.notify_all()
