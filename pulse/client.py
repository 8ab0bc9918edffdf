"""The Python API: a client that records tasks in Redis and mirrors them to JSON files."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from . import model
from .connection import open_connection
from .errors import (
    AlreadyApplied,
    BackendUnavailable,
    BadValue,
    PulseError,
    StepConflict,
    TaskExists,
    TaskFinished,
    TaskNotFound,
    VersionMismatch,
)
from .journal import Journal, new_op_id
from .mirror import BackgroundWriter, Mirror, load_file, unconfirmed
from .settings import Settings, check_agent
from .store import Change, Store

TYPE_CHECKING = False  # typing, dataclasses and logging cost milliseconds on every CLI call
if TYPE_CHECKING:
    from typing import Any

    from .model import Task
    from .transport import Connection

# How many ids `create` draws before it gives up on a name and second crowded with tasks.
_ID_TRIES = 8
VIEWS = ("default", "running", "stalled", "all")
_OP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # what update.lua records
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


class SyncReport:
    """What a replay of the journal did: updates applied, applied before (a replay run twice,
    a reply lost with the connection), kept as conflicts, and left for another target."""

    def __init__(self) -> None:
        self.applied = 0
        self.already = 0
        self.conflicts = 0
        self.elsewhere = 0
        self.waiting = 0  # for a task Redis lacks and the mirror has: kept for after recover


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
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        # journal=False (the web server): an unreachable Redis raises BackendUnavailable
        # instead of keeping the update, and this client replays no journal either.
        self._journaling = journal
        self.clock = clock or time.time  # seconds since the epoch; tests inject their own
        self._conn = conn
        self._store: Store | None = None
        self.mirror = Mirror(self.settings.dir, self.settings.namespace)
        self.journal = Journal(self.mirror.folder)
        self.warn = warn or _log_warning
        self._url_key = _url_key(self.settings.redis_url)
        self._target_known = False  # this URL's target id is in the journal's cache
        if self.settings.agent:  # checked here too: the API takes it without the environment
            agent = self._visible(check_agent(self.settings.agent) or "", [], "PULSE_AGENT")[0]
            if agent != self.settings.agent:
                self.settings = self.settings.replace(agent=agent)
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

    def create(
        self,
        name: str,
        steps: list[str],
        *,
        stall: float | None = None,
        op_id: str | None = None,
    ) -> TaskHandle:
        """A new task with its first step running.

        ``op_id`` (as for ``update``): the caller's own operation id, e.g. an HTTP client's
        Idempotency-Key, so a retried create makes one task: for a day (or the retention, if
        shorter) a repeat gets the task the first call made, as it is now, with ``kind``
        "applied" and no event.
        """
        if op_id is not None and not _OP_ID.match(op_id):
            raise BadValue("an operation id is 1-64 letters, digits, '_' or '-'")
        s = self.settings
        name, steps = model.check_name(name), model.check_steps(list(steps))
        name, steps = self._visible(name, steps, "the task and step names")
        stall_seconds = model.check_stall(s.stall_seconds if stall is None else stall)
        now = self._now()
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
            for attempt in range(_ID_TRIES):
                try:
                    change = self.store.create(
                        task,
                        _ms(now),
                        s.retention_seconds,
                        adaptive=s.adaptive_stall,
                        op_id=op_id or "",
                    )
                    break
                except TaskExists:
                    # Two creates of one name in one second draw the same 4 hex digits
                    # once in 65,536: a fresh draw, not an error for the agent.
                    if attempt == _ID_TRIES - 1:
                        raise
                    task["taskId"] = model.make_id(name, now)
            self._learn_target()
        except AlreadyApplied as e:
            # the retry of a create that made its task: that task, as it is now
            return TaskHandle(self, Change("", "applied", self.get(e.task_id)))
        except BackendUnavailable as e:
            if not self._journaling:
                raise
            op_id = op_id or new_op_id()
            entry = {
                "op": "create",
                "opId": op_id,
                "task": task,
                "nowMs": _ms(now),
                "adaptive": s.adaptive_stall,
            }
            change = self._offline(e, entry, Change("", "create", task))
            self._mirror_offline(task, [], op_id)
            return TaskHandle(self, change)
        self._mirror(change.task)
        return TaskHandle(self, change)

    def update(
        self,
        task_id: str,
        op: str,
        message: str | None = None,
        progress: float | None = None,
        *,
        op_id: str | None = None,
    ) -> Change:
        """Apply one of next, heartbeat, done, error, wait to a task (id or unique prefix).

        ``op_id`` (letters, digits, ``_``, ``-``, at most 64): the caller's own operation id,
        e.g. an HTTP client's Idempotency-Key, so a retried call applies once: a repeat gets
        the task as it is, with ``kind`` "applied" and no event.
        """
        if op not in model.OPS:
            raise BadValue(f"unknown update {op!r}")
        model.check_id(task_id)
        if op_id is not None and not _OP_ID.match(op_id):
            raise BadValue("an operation id is 1-64 letters, digits, '_' or '-'")
        if op == "error" and not message:
            raise BadValue("error needs a message saying what went wrong")
        if op == "wait" and not (message or "").strip():
            raise BadValue("wait needs the question the task waits on")
        message, cut = model.check_text(message)
        if cut:
            self.warn(f"message cut to {model.MAX_TEXT} characters")
        if message:
            message = self._visible(message, [], "the message")[0]
        progress = model.check_progress(progress)
        now = self._now()
        at, agent, op_id = model.iso(now), self.settings.agent, op_id or new_op_id()
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
                op_id=op_id,
            )
            self._learn_target()
        except AlreadyApplied:
            # only a caller's own id can repeat (ours are random): the retry of an applied call
            return Change("", "applied", self.get(task_id))
        except BackendUnavailable as e:
            if not self._journaling:
                raise
            before = self._local(task_id)
            running = model.running_index(before)
            # the step it is made for: a replay applies it to that step or keeps it apart
            step = running + 1 if running is not None and op in model.STEP_OPS else None
            task, kind = model.apply(before, op, at, message, progress, agent)
            entry = {
                "op": op,
                "opId": op_id,
                "taskId": task["taskId"],
                "step": step,
                "now": at,
                "nowMs": _ms(now),
                "message": message,
                "progress": progress,
                "agent": agent,
                "version": task["version"],
            }
            change = self._offline(e, entry, Change("", kind, task))
            self._mirror_offline(task, unconfirmed(before), op_id)
            return change
        self._mirror(change.task)
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

    def wait(self, task_id: str, question: str) -> Change:
        """The task waits for a person's answer to ``question``: never stalled meanwhile; the
        next ``next``, ``done`` or ``error`` ends the wait (heartbeats keep it)."""
        return self.update(task_id, "wait", question)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), self.settings.tz)

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
        return self.listing(view, limit=limit)[0]

    def listing(self, view: str = "default", *, limit: int = 50) -> tuple[list[Task], int]:
        """``status``, and how many tasks the view holds in all: more than shown when the
        limit cut it (counted only then; one more round trip)."""
        tasks = self._status(view, limit)
        total = len(tasks)
        if limit and total >= limit:
            since = None if view == "all" else int(self.clock() * 1000) - RECENT_SECONDS * 1000
            if view in ("running", "stalled"):
                total = max(total, self.store.count("running"))
            elif view == "all":
                total = max(total, self.store.count("all"))
            else:  # recent ones, and running ones quiet for longer
                total = max(total, self.store.count("recent", since_ms=since))
        return tasks, total

    def _status(self, view: str, limit: int) -> list[Task]:
        if view not in VIEWS:
            raise BadValue(f"unknown view {view!r}; one of {', '.join(VIEWS)}")
        if limit < 0:
            raise BadValue("limit must be 0 (no limit) or more")
        self._replay_journal()
        now_ms = int(self.clock() * 1000)
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
        """Set what depends on the time of reading: ``stalled``, and the eta's seconds left."""
        now = self._now()
        for t in tasks:
            t["stalled"] = model.is_stalled(t, now, self.settings.stall_seconds)
            model.refresh_eta(t, now)
        return tasks

    def history(self, name: str | None = None) -> list[dict]:
        """Per step of tasks named ``name`` (all tasks without it), what ETAs and learned
        stall times are based on: runs, median and p95 duration and longest quiet spell
        (seconds), by task name then step name."""
        if name is not None:
            name = model.check_name(name)
        rows = []
        for (task_name, step), runs in sorted(self.store.history(name).items()):
            if runs:
                stats = model.step_stats(runs)
                rows.append(
                    {"taskName": task_name, "step": step, "runs": stats.pop("runs")}
                    | {k: v / 1000 for k, v in stats.items()}
                )
        return rows

    # -- housekeeping --------------------------------------------------------------------

    def cleanup(self, days: float | None = None) -> int:
        """Remove tasks finished over ``days`` ago (default: the retention) from Redis and the
        mirror; mirror files of tasks past their retention go too, as Redis's TTL drops them."""
        self.flush_mirror()
        days = self.settings.retention_days if days is None else days
        if not 0 <= days <= 36500:  # also refuses NaN and infinities
            raise BadValue(f"days must be 0 or more, at most 36500, not {days:g}")
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
            except OSError as e:  # no permission, a file gone meanwhile: skip it, say which
                report.refused.append(f"{path}: cannot be read ({e.strerror or e})")
                continue
            task["namespace"] = self.settings.namespace
            task["stallSeconds"] = task["stallSeconds"] or self.settings.stall_seconds
            task["stallAfter"] = task["stallAfter"] or task["stallSeconds"]
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
                    self._mirror({k: v for k, v in task.items() if k != "unconfirmed"})  # type: ignore[arg-type]
            else:
                report.unchanged += 1  # Redis holds as new, or holds it and the file is offline
        batch.clear()

    # -- working without Redis -----------------------------------------------------------

    def sync(self) -> int:
        """Replay the journal of updates kept while Redis was unreachable; how many applied."""
        return self.replay().applied

    def replay(self) -> SyncReport:
        """Replay the journal entries made for the Redis and namespace this client reaches
        (journal.py says how). Updates that no longer fit are kept in the conflicts file,
        with one warning; entries made for another target stay, with one warning the first
        time. The mirror then holds what Redis holds for every task replayed."""
        report = SyncReport()
        if not self.journal:
            return report
        # A Redis that lost everything lost its id too: reached through a URL it was known
        # by, it takes that id back (SET NX), so the journal made for it still replays there.
        cached = self.journal.cached_target(self._url_key)
        target = self.store.target(cached or new_op_id())
        self.journal.cache_target(self._url_key, target)
        self._target_known = True
        touched: dict[str, None] = {}
        conflicts: list[dict] = []
        with self.journal.replaying(target, self._url_key) as entries:
            lost: set[str] = set()  # tasks Redis lacks but the mirror has: recover may come
            for entry in entries.mine:
                task_id = entry["task"]["taskId"] if entry["op"] == "create" else entry["taskId"]
                outcome = "waiting" if task_id in lost else self._replay(entry, conflicts)
                if outcome == "waiting":
                    lost.add(task_id)
                    entries.keep(entry)
                else:
                    setattr(report, outcome, getattr(report, outcome) + 1)
                    touched[task_id] = None
            report.elsewhere = len(entries.foreign) - len(entries.kept)
            report.waiting = len(entries.kept)
            elsewhere = entries.foreign_targets
            # kept before the journal lets them go: a crash in between repeats, never loses
            self.journal.add_conflicts(conflicts)
        self._converge(list(touched))
        if report.conflicts:
            self.warn(
                f"{report.conflicts} journaled update(s) no longer fit the task in Redis "
                f"(another host moved it on); kept in {self.journal.conflicts_path}, "
                "listed by `pulse sync --conflicts`"
            )
        if report.waiting:
            self.warn(
                f"{report.waiting} journaled update(s) are for tasks Redis does not hold (did "
                "it lose them?); `pulse recover` brings them back from the mirror, then they "
                "are replayed"
            )
        if report.elsewhere and any(self.journal.first_told(t) for t in elsewhere):
            self.warn(
                f"{report.elsewhere} journaled update(s) were made for another Redis or "
                f"namespace; left in {self.journal.path} until a call reaches that one"
            )
        return report

    def conflicts(self) -> list[dict[str, Any]]:
        """Journaled updates that could not apply, each with ``conflict`` saying why."""
        return self.journal.conflicts()

    def _replay_journal(self) -> None:
        if self._journaling and self.journal:  # one stat per call when there is nothing to replay
            replayed = self.replay().applied
            if replayed:
                self.warn(f"replayed {replayed} update(s) kept while Redis was unreachable")

    def _replay(self, e: dict, conflicts: list[dict]) -> str:
        """Apply one entry; which SyncReport count it adds to (a conflict is added to
        ``conflicts``, with why)."""
        try:
            if e["op"] == "create":
                self.store.create(
                    e["task"],
                    e["nowMs"],
                    self.settings.retention_seconds,
                    adaptive=e.get("adaptive", True),
                    # a caller's own id stops a create it retried offline from making two tasks
                    op_id=e.get("opId") or "",
                )
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
                    # entries of older versions have no op id: they apply by version
                    version=None if e.get("opId") else e["version"],
                    op_id=e.get("opId") or "",
                    step=e.get("step"),
                )
            return "applied"
        except (TaskExists, AlreadyApplied):
            return "already"  # replayed before, or it reached Redis before the connection broke
        except VersionMismatch as m:
            if m.current >= e["version"]:
                return "already"
            problem = str(m)
        except TaskNotFound as m:
            if self._may_come_back(e):
                return "waiting"
            problem = str(m)
        except (TaskFinished, StepConflict) as m:
            problem = str(m)
        conflicts.append({**e, "conflict": problem})
        return "conflicts"

    def _may_come_back(self, e: dict) -> bool:
        """Whether a task Redis lacks may be restored by ``recover``: this host's mirror has
        it and the update is younger than the retention."""
        try:
            kept = self.mirror.read(e["taskId"]) is not None
        except (OSError, PulseError):
            return False
        age_ms = time.time() * 1000 - e.get("nowMs", 0)
        return kept and age_ms < self.settings.retention_seconds * 1000

    def _converge(self, task_ids: list[str]) -> None:
        """After a replay: each task's mirror file holds what Redis holds."""
        if not task_ids:
            return
        self.flush_mirror()
        for task in self.store.load(task_ids):
            try:
                self.mirror.converge(task)
            except OSError as e:
                self._mirror_failed(e)

    def _learn_target(self) -> None:
        """On the first contact through this URL, cache the target id beside the journal, so
        updates journaled later name the Redis they were made for. Once per URL and host."""
        if self._target_known:
            return
        self._target_known = True
        if self.journal.cached_target(self._url_key) is None:
            try:
                self.journal.cache_target(self._url_key, self.store.target(new_op_id()))
            except PulseError:
                pass  # the update went through; the next call learns it
            # (a Redis that lost its id gets it back from the cache: see replay)

    def _offline(self, error: BackendUnavailable, entry: dict, change: Change) -> Change:
        entry["target"] = self.journal.cached_target(self._url_key)
        entry["url"] = self._url_key
        try:
            self.journal.append(entry)
        except OSError as e:
            raise BackendUnavailable(
                f"{error}; and the journal cannot be written: {e.strerror or e} "
                "(set PULSE_DIR to a folder you can write)"
            ) from None
        self.warn(
            f"{error}; the update is kept in {self.journal.path} and is replayed on the "
            "next call that reaches Redis, or by `pulse sync`"
        )
        return change

    def _visible(self, text: str, more: list[str], what: str) -> tuple[str, list[str]]:
        """Text without bidi controls and invisible characters, with one warning if any."""
        text, removed = model.strip_invisible(text)
        kept = []
        for item in more:
            item, gone = model.strip_invisible(item)
            removed |= gone
            kept.append(item)
        if removed:
            if not text.strip() or not all(k.strip() for k in kept):
                raise BadValue(f"{what}: nothing is left once invisible characters are removed")
            self.warn(f"removed invisible or direction-changing characters from {what}")
            text, kept = text.strip(), [k.strip() for k in kept]
        return text, kept

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

    def _mirror(self, task: Task) -> None:
        if self._writer is not None:
            self._writer.put(task)
            return
        try:
            # If newer only: agents updating one task at once finish in any order, and the
            # last file written must not be an older version (recover would restore that).
            self.mirror.write_if_newer(task)
        except OSError as e:
            self._mirror_failed(e)

    def _mirror_offline(self, task: Task, ops: list[str], op_id: str) -> None:
        """The snapshot an offline update made, written at once (the next offline update
        reads it), with the op ids Redis has yet to confirm."""
        self.flush_mirror()
        try:
            self.mirror.write_if_newer({**task, "unconfirmed": [*ops, op_id]}, confirmed=False)  # type: ignore[typeddict-unknown-key]
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

    def wait(self, question: str) -> Change:
        return self._do("wait", question)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _url_key(url: str | None) -> str:
    """A name for the URL in the journal's target cache: a hash, so no password is kept."""
    if not url:
        return "embedded"
    from .scripts import sha1  # CPython's own SHA-1, as the scripts are hashed

    return sha1(url.encode()).hexdigest()[:16]


def _log_warning(message: str) -> None:
    import logging

    logging.getLogger("pulse").warning(message)
