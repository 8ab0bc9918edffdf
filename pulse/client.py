"""The Python API: a client that records tasks in Redis and mirrors them to JSON files."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from . import model
from .connection import open_connection
from .errors import (
    BackendUnavailable,
    BadValue,
    PulseError,
    TaskExists,
    TaskFinished,
    TaskNotFound,
    VersionMismatch,
)
from .journal import Journal
from .mirror import BackgroundWriter, Mirror, load_file
from .settings import Settings
from .store import Change, Store

TYPE_CHECKING = False  # typing, dataclasses and logging cost milliseconds on every CLI call
if TYPE_CHECKING:
    from .model import Task
    from .transport import Connection

VIEWS = ("default", "running", "stalled", "all")
# The default `status` view: running tasks and those finished this recently.
RECENT_SECONDS = 86400
# `recover` restores this many tasks per pipeline (one round trip each).
RECOVER_BATCH = 1000


class RecoverReport:
    """What ``recover`` did: tasks restored, already current, past their expiry, refused."""

    def __init__(self) -> None:
        self.restored = 0
        self.unchanged = 0
        self.expired = 0
        self.refused: list[str] = []


class Client:
    """Records tasks of one namespace; every update is one round trip to Redis."""

    def __init__(
        self,
        settings: Settings | None = None,
        conn: Connection | None = None,
        *,
        warn: Callable[[str], None] | None = None,
        mirror_in_background: bool = False,
        journal: bool = True,
    ) -> None:
        self.settings = settings or Settings.from_env()
        # journal=False (the web server): an unreachable Redis raises BackendUnavailable
        # instead of keeping the update, and this client replays no journal either.
        self._journaling = journal
        self._conn = conn
        self._store: Store | None = None
        self.mirror = Mirror(self.settings.dir, self.settings.namespace)
        self.journal = Journal(self.mirror.folder)
        self.warn = warn or _log_warning
        self._writer: BackgroundWriter | None = None
        if mirror_in_background:
            import atexit

            self._writer = BackgroundWriter(self.mirror, self._mirror_failed)
            atexit.register(self._writer.flush)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(
                self._conn or open_connection(self.settings), self.settings.namespace
            )
        return self._store

    def close(self) -> None:
        """Wait for the mirror writes in hand, then close the connection."""
        self.flush_mirror()
        if self._store is not None:
            self._store.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- updates -------------------------------------------------------------------------

    def create(self, name: str, steps: list[str], *, stall: float | None = None) -> TaskHandle:
        """A new task with its first step running."""
        s = self.settings
        name, steps = model.check_name(name), model.check_steps(list(steps))
        stall_seconds = model.check_stall(s.stall_seconds if stall is None else stall)
        now = datetime.now(s.tz)
        task = model.new_task(
            model.make_id(name, now),
            name,
            steps,
            model.iso(now),
            stall_seconds=stall_seconds,
            namespace=s.namespace,
            host=socket.gethostname(),
            agent=s.agent,
        )
        try:
            self._replay_journal()
            change = self.store.create(task, _ms(now), s.retention_seconds)
        except BackendUnavailable as e:
            if not self._journaling:
                raise
            entry = {"op": "create", "task": task, "nowMs": _ms(now)}
            change = self._offline(e, entry, Change("", "create", task))
        self._mirror(change.task, now=not change.event_id)  # journaled: the next reads it
        return TaskHandle(self, change)

    def update(
        self, task_id: str, op: str, message: str | None = None, progress: float | None = None
    ) -> Change:
        """Apply one of next, heartbeat, done, error to a task (id or unique prefix)."""
        if op not in model.OPS:
            raise BadValue(f"unknown update {op!r}")
        model.check_id(task_id)
        if op == "error" and not message:
            raise BadValue("error needs a message saying what went wrong")
        message, cut = model.check_text(message)
        if cut:
            self.warn(f"message cut to {model.MAX_TEXT} characters")
        progress = model.check_progress(progress)
        now = datetime.now(self.settings.tz)
        at, agent = model.iso(now), self.settings.agent
        try:
            self._replay_journal()
            change = self.store.update(
                task_id,
                op,
                now=at,
                now_ms=_ms(now),
                message=message,
                progress=progress,
                agent=agent,
                ttl=self.settings.retention_seconds,
            )
        except BackendUnavailable as e:
            if not self._journaling:
                raise
            task, kind = model.apply(self._local(task_id), op, at, message, progress, agent)
            entry = {
                "op": op,
                "taskId": task["taskId"],
                "now": at,
                "nowMs": _ms(now),
                "message": message,
                "progress": progress,
                "agent": agent,
                "version": task["version"],
            }
            change = self._offline(e, entry, Change("", kind, task))
        self._mirror(change.task, now=not change.event_id)  # journaled: the next reads it
        return change

    def next(self, task_id: str, message: str | None = None) -> Change:
        return self.update(task_id, "next", message)

    def heartbeat(
        self, task_id: str, message: str | None = None, progress: float | None = None
    ) -> Change:
        return self.update(task_id, "heartbeat", message, progress)

    def done(self, task_id: str, result: str | None = None) -> Change:
        return self.update(task_id, "done", result)

    def error(self, task_id: str, message: str) -> Change:
        return self.update(task_id, "error", message)

    @contextmanager
    def track(
        self, name: str, steps: list[str], *, stall: float | None = None
    ) -> Iterator[TaskHandle]:
        """A task that is marked failed if the block raises and done if it ends normally."""
        handle = self.create(name, steps, stall=stall)
        try:
            yield handle
        except BaseException as e:
            if handle.task["status"] == "running":
                handle.error(f"{type(e).__name__}: {e}".rstrip(": "))
            raise
        if handle.task["status"] == "running":
            handle.done()

    # -- reads ---------------------------------------------------------------------------

    def ping(self) -> None:
        """Returns when Redis answers; raises BackendUnavailable (or BackendRefused) if not."""
        self.store.ping()

    def get(self, task_id: str) -> Task:
        model.check_id(task_id)  # refused before the journal is replayed: before any change
        self._replay_journal()
        return self.derive_stalled([self.store.get(task_id)])[0]

    def status(self, view: str = "default", *, limit: int = 50) -> list[Task]:
        """Tasks newest first: running and recently finished, or running, stalled, or all."""
        if view not in VIEWS:
            raise BadValue(f"unknown view {view!r}; one of {', '.join(VIEWS)}")
        if limit < 0:
            raise BadValue("limit must be 0 (no limit) or more")
        self._replay_journal()
        now_ms = int(time.time() * 1000)
        if view == "all":
            tasks = self.store.recent(limit)
        elif view == "running":
            tasks = self.store.running()
        elif view == "stalled":
            tasks = [t for t in self.derive_stalled(self.store.running()) if t["stalled"]]
        else:
            tasks = self.store.recent(limit, since_ms=now_ms - RECENT_SECONDS * 1000)
            if len(tasks) < limit or not limit:
                # Running tasks quiet for over a day are still worth showing.
                seen = {t["taskId"] for t in tasks}
                tasks += [t for t in self.store.running() if t["taskId"] not in seen]
        if limit and view in ("running", "stalled"):
            tasks = tasks[:limit]
        return self.derive_stalled(tasks)

    def derive_stalled(self, tasks: list[Task]) -> list[Task]:
        now = datetime.now(self.settings.tz)
        for t in tasks:
            t["stalled"] = model.is_stalled(t, now, self.settings.stall_seconds)
        return tasks

    # -- housekeeping --------------------------------------------------------------------

    def cleanup(self, days: float | None = None) -> int:
        """Remove tasks finished over ``days`` ago (default: the retention) from Redis and the
        mirror; mirror files of tasks past their retention go too, as Redis's TTL drops them."""
        self.flush_mirror()
        days = self.settings.retention_days if days is None else days
        if days < 0:
            raise BadValue("days must be 0 or more")
        now = time.time()
        cutoff_ms = int((now - days * 86400) * 1000)
        candidates = self.store.load(self.store.updated_until(cutoff_ms))
        finished = [t["taskId"] for t in candidates if t["status"] != "running"]
        self.store.remove(finished)
        removed = set(finished)
        expire_before = now - self.settings.retention_seconds
        for path in self.mirror:
            try:
                task = load_file(path)
            except PulseError:
                continue
            updated = model.parse_time(task["updatedAt"]).timestamp()
            if (task["status"] != "running" and updated * 1000 <= cutoff_ms) or (
                updated < expire_before
            ):
                path.unlink(missing_ok=True)
                if task["status"] != "running":
                    removed.add(task["taskId"])
        return len(removed)

    def recover(self, folder: Path | None = None) -> RecoverReport:
        """Load mirror (or seed skill) task files into Redis where it lacks them or holds an
        older version. Tasks keep their absolute expiry; no events are emitted."""
        self.flush_mirror()
        folder = Path(folder) if folder else self.mirror.folder
        paths = sorted(folder.glob("*.json"))
        if not paths and (folder / self.settings.namespace).is_dir():
            paths = sorted((folder / self.settings.namespace).glob("*.json"))
        report = RecoverReport()
        now_ms = int(time.time() * 1000)
        retention_ms = self.settings.retention_seconds * 1000
        batch: list[tuple[Path, Task, int]] = []  # restored a pipeline at a time
        for path in paths:
            try:
                task = load_file(path, self.settings.namespace)
                updated_ms = _ms(model.parse_time(task["updatedAt"]))
            except PulseError as e:
                report.refused.append(str(e))
                continue
            task["namespace"] = self.settings.namespace
            task["stallSeconds"] = task["stallSeconds"] or self.settings.stall_seconds
            task["stalled"] = False
            if updated_ms + retention_ms <= now_ms:
                report.expired += 1
                continue
            batch.append((path, task, updated_ms))
            if len(batch) == RECOVER_BATCH:
                self._restore(batch, retention_ms, report)
        self._restore(batch, retention_ms, report)
        return report

    def _restore(
        self, batch: list[tuple[Path, Task, int]], retention_ms: int, report: RecoverReport
    ) -> None:
        done = self.store.restore_many([(t, ms, ms + retention_ms) for _, t, ms in batch])
        for (path, task, _), restored in zip(batch, done, strict=True):
            if restored:
                report.restored += 1
                if path.parent != self.mirror.folder:
                    self._mirror(task)
            else:
                report.unchanged += 1
        batch.clear()

    # -- working without Redis -----------------------------------------------------------

    def sync(self) -> int:
        """Replay the journal of updates kept while Redis was unreachable; how many applied."""
        applied = 0
        with self.journal.replaying() as entries:
            for entry in entries:
                applied += self._replay(entry)
        return applied

    def _replay_journal(self) -> None:
        if self._journaling and self.journal:  # one stat per call when there is nothing to replay
            replayed = self.sync()
            if replayed:
                self.warn(f"replayed {replayed} update(s) kept while Redis was unreachable")

    def _replay(self, e: dict) -> int:
        try:
            if e["op"] == "create":
                self.store.create(e["task"], e["nowMs"], self.settings.retention_seconds)
            else:
                self.store.update(
                    e["taskId"],
                    e["op"],
                    now=e["now"],
                    now_ms=e["nowMs"],
                    message=e["message"],
                    progress=e["progress"],
                    agent=e["agent"],
                    ttl=self.settings.retention_seconds,
                    version=e["version"],
                )
            return 1
        except TaskExists:
            return 0  # replayed before
        except VersionMismatch as m:
            if m.current >= e["version"]:
                return 0  # applied before (or it reached Redis before the connection broke)
            problem = str(m)
        except (TaskFinished, TaskNotFound) as m:
            problem = str(m)
        self.journal.reject(e, problem)
        self.warn(
            f"a journaled {e['op']} could not be replayed ({problem}); kept in "
            f"{self.journal.folder / '.journal.rejected.jsonl'}"
        )
        return 0

    def _offline(self, error: BackendUnavailable, entry: dict, change: Change) -> Change:
        try:
            self.journal.append(entry)
        except OSError as e:
            raise BackendUnavailable(f"{error}; and the journal cannot be written: {e}") from None
        self.warn(
            f"{error}; the update is kept in {self.journal.path} and is replayed on the "
            "next call that reaches Redis, or by `pulse sync`"
        )
        return change

    def _local(self, task_id: str) -> Task:
        """The mirror's snapshot of a task, for an update made while Redis is unreachable."""
        self.flush_mirror()
        try:
            task = self.mirror.read(task_id)
            if task is None:
                names = [p.stem for p in self.mirror if p.stem.startswith(task_id)]
                # none: Redis may know it, so it is not "no task" (exit 1) but unreachable
                task = self.mirror.read(model.resolve(task_id, names)) if names else None
        except OSError as e:
            raise BackendUnavailable(f"Redis is unreachable, the mirror unreadable: {e}") from None
        if task is None:
            raise BackendUnavailable(f"Redis is unreachable and the mirror has no task {task_id}")
        return task

    def flush_mirror(self) -> None:
        """Wait until every snapshot of this client is in the mirror."""
        if self._writer is not None:
            self._writer.flush()

    def _mirror(self, task: Task, *, now: bool = False) -> None:
        if self._writer is not None:
            if not now:
                self._writer.put(task)
                return
            self._writer.flush()
        try:
            # If newer only: agents updating one task at once finish in any order, and the
            # last file written must not be an older version (recover would restore that).
            self.mirror.write_if_newer(task)
        except OSError as e:
            self._mirror_failed(e)

    def _mirror_failed(self, error: OSError) -> None:
        # Redis has the update; say the mirror missed it rather than fail the agent's step.
        self.warn(f"mirror not written: {error}")


class TaskHandle:
    """One task, as ``Client.create`` gives it; each call updates ``task``."""

    def __init__(self, client: Client, change: Change) -> None:
        self.client = client
        self.change = change

    @property
    def id(self) -> str:
        return self.task["taskId"]

    @property
    def task(self) -> Task:
        return self.change.task

    def _do(self, op: str, message: str | None = None, progress: float | None = None) -> Change:
        self.change = self.client.update(self.id, op, message, progress)
        return self.change

    def next(self, message: str | None = None) -> Change:
        return self._do("next", message)

    def heartbeat(self, message: str | None = None, progress: float | None = None) -> Change:
        return self._do("heartbeat", message, progress)

    def done(self, result: str | None = None) -> Change:
        return self._do("done", result)

    def error(self, message: str) -> Change:
        return self._do("error", message)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _log_warning(message: str) -> None:
    import logging

    logging.getLogger("pulse").warning(message)
