"""Tasks on Redis: every change is one Lua script, reads are one pipelined round trip.

Only this module and ``transport`` know Redis. Python never reads a task, changes it and
writes it back: the scripts in ``scripts/`` do each change atomically on the server.
"""

from __future__ import annotations

import json

from . import model
from .errors import (
    AlreadyApplied,
    BackendError,
    StepConflict,
    TaskExists,
    TaskFinished,
    TaskNotFound,
    VersionMismatch,
    reply_code,
)
from .keys import (
    HISTORY_CAP,
    HISTORY_MIN_RUNS,
    HISTORY_RUNS,
    HISTORY_TTL_SECONDS,
    OP_TTL_SECONDS,
    STREAM_MAXLEN,
    Keys,
)
from .scripts import Script
from .transport import ReplyError, publish_command

TYPE_CHECKING = False  # the typing module costs a millisecond and more to import
if TYPE_CHECKING:
    from typing import Any

    from .model import Task
    from .transport import Connection

_CREATE = Script("create")
_UPDATE = Script("update")
_RESTORE = Script("restore")
_TARGET = Script("target")

# How many prefix matches to check for life; past it the error counts the rest unchecked.
_PREFIX_LIMIT = 1000


class Change:
    """What one update did: the event it emitted (no id if it was journaled) and the task
    after it."""

    __slots__ = ("event_id", "kind", "task")

    def __init__(self, event_id: str, kind: str, task: Task) -> None:
        self.event_id = event_id
        self.kind = kind
        self.task = task

    def __repr__(self) -> str:
        return f"Change({self.event_id!r}, {self.kind!r}, {self.task['taskId']!r})"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _task(snap: str) -> Task:
    return model.normalize(json.loads(snap))


def _fail(e: ReplyError, task_id: str) -> Exception:
    # Match the code, never the whole text: servers differ in what they put before it.
    code, rest = reply_code(str(e))
    if code == "PULSE_NOTFOUND":
        return TaskNotFound(f"no task {task_id!r}")
    if code == "PULSE_FINISHED":
        return TaskFinished(f"task {task_id} is already {rest.split()[-1]}")
    if code == "PULSE_VERSION":
        current = int(rest.split()[-1])
        return VersionMismatch(f"task {task_id} is at version {current}", current)
    if code == "PULSE_EXISTS":
        return TaskExists(f"task {task_id} exists already")
    if code == "PULSE_APPLIED":
        version = int(rest.split()[-1])
        return AlreadyApplied(f"task {task_id} applied this update before", version)
    if code == "PULSE_CONFLICT":
        running = int(rest.split()[-1])
        now = f"step {running} runs" if running else "no step runs"
        return StepConflict(f"task {task_id}: the update was made for another step; {now}", running)
    return BackendError(f"Redis refused the update of {task_id}: {e}")


class Store:
    def __init__(self, conn: Connection, namespace: str, *, stream_maxlen: int = STREAM_MAXLEN):
        self.conn = conn
        self.keys = Keys(namespace)
        self.stream_maxlen = stream_maxlen
        self._publish: str | None = None

    @property
    def publish(self) -> str:
        """PUBLISH, or SPUBLISH on a cluster with sharded channels: learned once per
        connection (HELLO), the scripts' publish command."""
        if self._publish is None:
            self._publish = publish_command(self.conn)
        return self._publish

    # -- changes -------------------------------------------------------------------------

    def create(
        self, task: Task, now_ms: int, ttl: int, *, adaptive: bool = True, op_id: str = ""
    ) -> Change:
        """Store a new task; its first step's stallAfter (learned unless not ``adaptive``)
        and its eta come from the step history.

        ``op_id``: the create's operation id, applied once for ``OP_TTL_SECONDS``: a repeat
        raises AlreadyApplied whose ``task_id`` names the task the first one made.
        """
        k, task_id = self.keys, task["taskId"]
        snap = json.dumps(task, ensure_ascii=False, separators=(",", ":"))
        args = [
            task_id,
            snap,
            now_ms,
            task["startedAt"],
            task["stallSeconds"],
            ttl,
            self.stream_maxlen,
            k.channel,
            self.publish,  # ARGV[9]
            "1" if adaptive else "0",
            HISTORY_MIN_RUNS,
        ]
        keys = [k.task(task_id), k.updated, k.running, k.ids, k.events, k.history]
        if op_id:  # no op id: the same keys and arguments as before, nothing more to do
            keys.append(k.op(op_id))
            args += [op_id, min(OP_TTL_SECONDS, ttl)]  # ARGV[12], ARGV[13]: not past the task
        try:
            sid, snap = _CREATE(self.conn, keys, args)
        except ReplyError as e:
            code, rest = reply_code(str(e))
            if code == "PULSE_APPLIED":
                made = rest.split()[-1]
                raise AlreadyApplied(
                    f"task {made} was made by this create before", 1, made
                ) from None
            raise _fail(e, task_id) from None
        return Change(sid, "create", _task(snap))

    def update(
        self,
        task_id: str,
        op: str,
        *,
        now: str,
        now_ms: int,
        message: str | None = None,
        progress: float | None = None,
        agent: str | None = None,
        ttl: int,
        version: int | None = None,
        op_id: str = "",
        step: int | None = None,
    ) -> Change:
        """Apply ``op`` to the task ``task_id`` names, exactly or as a unique prefix.

        With ``version`` (what the update makes), it applies only to the version before it.
        ``op_id``: the update's operation id (applied once: AlreadyApplied after); ``step``:
        the 1-based step it was made for (StepConflict if another runs).
        """
        args = [
            op,
            now,
            now_ms,
            "0" if message is None else "1",
            message or "",
            "" if progress is None else progress,
            agent or "",
            ttl,
            self.stream_maxlen,
            self.keys.channel,
            "" if version is None else version,
            op_id,
            "" if step is None else step,
            self.publish,  # ARGV[14]
            HISTORY_RUNS,
            HISTORY_CAP,
            HISTORY_TTL_SECONDS,
            HISTORY_MIN_RUNS,
        ]
        try:
            return self._update(task_id, args)
        except TaskNotFound:
            # Costs a round trip only when the id was not given whole.
            return self._update(self.resolve(task_id), args)

    def _update(self, task_id: str, args: list[Any]) -> Change:
        k = self.keys
        try:
            sid, kind, snap = _UPDATE(
                self.conn,
                [k.task(task_id), k.updated, k.running, k.events, k.history, k.history_used],
                args,
            )
        except ReplyError as e:
            raise _fail(e, task_id) from None
        return Change(sid, kind, _task(snap))

    def target(self, fresh: str) -> str:
        """The id this namespace holds in Redis (``fresh`` becomes it if there is none yet):
        what a journal names as the place its updates belong. One round trip."""
        try:
            return str(_TARGET(self.conn, [self.keys.target], [fresh]))
        except ReplyError as e:
            raise BackendError(f"Redis refused the journal's target check: {e}") from None

    def restore(self, task: Task, *, updated_ms: int, expire_at_ms: int) -> bool:
        """Put a mirrored snapshot back unless Redis holds this version or a newer one."""
        return self._restore(*self._restore_call(task, updated_ms, expire_at_ms))

    def restore_many(self, items: list[tuple[Task, int, int]]) -> list[bool]:
        """``restore`` of many (task, updated ms, expiry ms) in one round trip: whether each
        was restored. The first goes through the Script (EVAL if Redis lacks it, which caches
        it), the rest in one pipeline of EVALSHA; one that meets NOSCRIPT all the same (a
        SCRIPT FLUSH meanwhile) is sent again through the Script."""
        calls = [self._restore_call(*item) for item in items]
        if not calls:
            return []
        done = [self._restore(*calls[0])]
        replies = self.conn.pipeline(
            [("EVALSHA", _RESTORE.sha, len(keys), *keys, *args) for keys, args in calls[1:]]
        )
        for (keys, args), reply in zip(calls[1:], replies, strict=True):
            if isinstance(reply, ReplyError):
                if reply.code != "NOSCRIPT":
                    raise _fail(reply, args[0])
                reply = self._restore(keys, args)
            done.append(bool(reply))
        return done

    def _restore_call(
        self, task: Task, updated_ms: int, expire_at_ms: int
    ) -> tuple[list[str], list[Any]]:
        k, task_id = self.keys, task["taskId"]
        snap = json.dumps(
            {k: v for k, v in task.items() if k != "unconfirmed"},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        args = [
            task_id,
            snap,
            task["version"],
            task["status"],
            updated_ms,
            task["stallSeconds"],
            expire_at_ms,
            "".join(f" {op}:{task['version']}" for op in _unconfirmed(task)),
        ]
        return [k.task(task_id), k.updated, k.running, k.ids], args

    def _restore(self, keys: list[str], args: list[Any]) -> bool:
        try:
            return bool(_RESTORE(self.conn, keys, args))
        except ReplyError as e:
            raise _fail(e, args[0]) from None

    def remove(self, task_ids: list[str]) -> None:
        """Delete tasks and their index entries (finished ones, for cleanup)."""
        if task_ids:
            self._pipeline(
                [("DEL", *[self.keys.task(t) for t in task_ids]), *self._unindex(task_ids)]
            )

    # -- reads ---------------------------------------------------------------------------

    def resolve(self, prefix: str) -> str:
        """The one live task id that is ``prefix`` or starts with it."""
        model.check_id(prefix)
        raw = prefix.encode()
        found = self._call(
            "ZRANGEBYLEX",
            self.keys.ids,
            b"[" + raw,
            b"[" + raw + b"\xff",
            "LIMIT",
            0,
            _PREFIX_LIMIT,
        )
        total = None
        if len(found) > 1:
            # The id index outlives expired tasks until pruned: count only live ones.
            fetched = found
            alive = self._pipeline([("EXISTS", self.keys.task(t)) for t in fetched])
            self._prune([t for t, a in zip(fetched, alive, strict=True) if not a])
            found = [t for t, a in zip(fetched, alive, strict=True) if a]
            if len(fetched) == _PREFIX_LIMIT:  # more than we checked: count the rest unchecked
                rest = (b"(" + fetched[-1].encode(), b"[" + raw + b"\xff")
                # ZRANGEBYLEX, not ZLEXCOUNT: the agent's ACL user has the first (docs/acl.md)
                total = len(found) + len(self._call("ZRANGEBYLEX", self.keys.ids, *rest))
        return model.resolve(prefix, found, total=total)

    def get(self, task_id: str) -> Task:
        snap = self._call("HGET", self.keys.task(task_id), "snap")
        if snap is None:
            snap = self._call("HGET", self.keys.task(self.resolve(task_id)), "snap")
            if snap is None:
                raise TaskNotFound(f"no task {task_id!r}")
        return _task(snap)

    def recent(self, limit: int, *, since_ms: int | None = None) -> list[Task]:
        """The ``limit`` most recently updated tasks, newest first (limit 0: all)."""
        if since_ms is None:
            ids = self._call("ZREVRANGE", self.keys.updated, 0, limit - 1)
        else:
            ids = self._call(
                "ZREVRANGEBYSCORE",
                self.keys.updated,
                "+inf",
                since_ms,
                *(("LIMIT", 0, limit) if limit > 0 else ()),
            )
        return self.load(ids)

    def running(self) -> list[Task]:
        """Running tasks, newest first: by the hash's ``updated`` ms, as the other views are
        (``updatedAt`` has whole seconds, so it would leave tasks of one second unordered)."""
        ids = self._call("ZRANGE", self.keys.running, 0, -1)
        if not ids:
            return []
        got = self._pipeline([("HMGET", self.keys.task(t), "snap", "updated") for t in ids])
        self._prune([t for t, (snap, _) in zip(ids, got, strict=True) if snap is None])
        live = [(float(ms or 0), _task(snap)) for snap, ms in got if snap is not None]
        live.sort(key=lambda pair: pair[0], reverse=True)
        return [task for _, task in live]

    def count(self, view: str, *, since_ms: int | None = None) -> int:
        """How many tasks a listing holds in all (``running``, or by last update since
        ``since_ms``), for saying what a limit left out. Expired ones not yet pruned count.
        Range reads, not ZCARD/ZCOUNT: the agent's ACL user has those (docs/acl.md); only
        a listing the limit cut asks."""
        if view == "running":
            return len(self._call("ZRANGE", self.keys.running, 0, -1))
        low = "-inf" if since_ms is None else since_ms
        return len(self._call("ZRANGEBYSCORE", self.keys.updated, low, "+inf"))

    def due(self, now_ms: int, limit: int = 100) -> list[str]:
        """Ids of running tasks quiet past their stall time, or not looked at since:
        O(log n) in the running index, never a scan of all tasks."""
        return self._call("ZRANGEBYSCORE", self.keys.running, "-inf", now_ms, "LIMIT", 0, limit)

    def history(self, name: str | None = None) -> dict[tuple[str, str], list[list[int]]]:
        """Step histories, of tasks named ``name`` or all: (task name, step name) -> runs of
        [duration ms, longest quiet spell ms], oldest first."""
        got: dict[tuple[str, str], list[list[int]]] = {}
        cursor, pattern = 0, "*" if name is None else _glob_escape(name) + "\n*"
        while True:
            cursor, flat = self._call(
                "HSCAN", self.keys.history, cursor, "MATCH", pattern, "COUNT", 500
            )
            for field, raw in zip(flat[::2], flat[1::2], strict=True):
                task_name, _, step = field.partition("\n")
                got[task_name, step] = json.loads(raw)
            if int(cursor) == 0:
                return got

    def updated_until(self, until_ms: int) -> list[str]:
        return self._call("ZRANGEBYSCORE", self.keys.updated, "-inf", until_ms)

    def load(self, task_ids: list[str]) -> list[Task]:
        """Snapshots of these tasks in one pipeline; index entries of expired ones are pruned."""
        if not task_ids:
            return []
        snaps = self._pipeline([("HGET", self.keys.task(t), "snap") for t in task_ids])
        gone = [t for t, s in zip(task_ids, snaps, strict=True) if s is None]
        self._prune(gone)
        return [_task(s) for s in snaps if s is not None]

    # -- plumbing ------------------------------------------------------------------------

    def _prune(self, gone: list[str]) -> None:
        if gone:
            self._pipeline(self._unindex(gone))

    def _unindex(self, task_ids: list[str]) -> list[tuple[Any, ...]]:
        k = self.keys
        return [
            (cmd, key, *task_ids)
            for cmd, key in (("ZREM", k.updated), ("ZREM", k.running), ("ZREM", k.ids))
        ]

    def ping(self) -> None:
        self._call("PING")

    def _call(self, *args: Any) -> Any:
        try:
            return self.conn.call(*args)
        except ReplyError as e:
            raise BackendError(f"Redis refused {args[0]}: {e}") from None

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        replies = self.conn.pipeline(commands)
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise BackendError(f"Redis refused a read: {reply}")
        return replies


def _unconfirmed(task: Task) -> list[str]:
    """Operation ids of updates made offline that a mirror snapshot holds (see mirror.py)."""
    ops: Any = task.get("unconfirmed") or []  # type: ignore[misc]
    return [str(op) for op in ops]
