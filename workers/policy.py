"""What a lane sends next: order per task, heartbeat throttle, overtaken pushes dropped, retry
timing, and the bound on pushes in flight. Pure: no I/O, no clock of its own (``now`` is
passed in), so its timing is tested without sleeping.

Per task, events wait in stream order and one is in flight at a time: a push that fails holds
back the task's later pushes until it is delivered or given up (dead-lettered); other tasks go
on. A newer event of a task drops the task's waiting events of the kinds ``coalesce`` names
(heartbeats; on a sink that edits one message per task, every edit): they were overtaken.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pulse import Event

HEARTBEAT = frozenset({"heartbeat"})
EDITS = frozenset({"heartbeat", "next", "resume"})  # a chat message edited in place


@dataclass
class _Item:
    event: Event
    tries: int = 0
    due: float = 0.0  # not before (a retry's backoff)


@dataclass
class _Task:
    queue: deque[_Item] = field(default_factory=deque)
    busy: bool = False  # its head is being sent


@dataclass
class Policy:
    window: float = 0.0  # heartbeats of a task at most once per window, seconds (0: all)
    limit: int = 16  # pushes in flight at once (of different tasks)
    tries: int = 5
    backoff: float = 1.0  # first retry delay; doubles each try, with full jitter
    backoff_max: float = 60.0
    coalesce: frozenset[str] = HEARTBEAT
    rand: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        self._tasks: dict[str, _Task] = {}
        self._last_beat: dict[str, float] = {}  # task -> when its last heartbeat went out
        self.in_flight = 0
        self.waiting = 0  # events held, in flight included
        self.acks: list[str] = []  # entries done with (delivered or dropped), to acknowledge
        self.dropped = 0

    def add(self, event: Event) -> None:
        """The next event of the stream (events come in stream order)."""
        tid = event.task["taskId"]
        task = self._tasks.setdefault(tid, _Task())
        kept: deque[_Item] = deque()
        for i, item in enumerate(task.queue):
            if (i == 0 and task.busy) or item.event.kind not in self.coalesce:
                kept.append(item)
            else:
                self._drop(item)
        task.queue = kept
        task.queue.append(_Item(event))
        self.waiting += 1

    def _drop(self, item: _Item) -> None:
        self.acks.append(item.event.id)
        self.dropped += 1
        self.waiting -= 1

    def _due(self, tid: str, item: _Item) -> float:
        if item.event.kind == "heartbeat" and self.window:
            return max(item.due, self._last_beat.get(tid, -math.inf) + self.window)
        return item.due

    def ready(self, now: float) -> list[Event]:
        """Events to send now; each is in flight until ``delivered`` or ``failed``."""
        out: list[Event] = []
        for tid, task in list(self._tasks.items()):
            if self.in_flight >= self.limit:
                break
            if task.busy or self._due(tid, task.queue[0]) > now:
                continue
            task.busy = True
            self.in_flight += 1
            out.append(task.queue[0].event)
            del self._tasks[tid]  # to the back: every task gets its turn under the limit
            self._tasks[tid] = task
        return out

    def next_due(self, now: float) -> float | None:
        """When ``ready`` may next give something without a new event (None: not before)."""
        if self.in_flight >= self.limit:
            return None
        dues = [self._due(t, x.queue[0]) for t, x in self._tasks.items() if not x.busy]
        return min(dues) if dues else None

    def delivered(self, event: Event, now: float) -> None:
        tid = event.task["taskId"]
        task = self._tasks[tid]
        task.busy = False
        self.in_flight -= 1
        task.queue.popleft()
        self.waiting -= 1
        self.acks.append(event.id)
        if event.kind == "heartbeat":
            self._last_beat[tid] = now
        self._forget(tid, task, now)

    def failed(
        self, event: Event, now: float, *, permanent: bool = False, retry_after: float | None = None
    ) -> bool:
        """A try failed. True: give it up now (dead-letter it: the caller acks it there);
        False: it goes again after a backoff, or was dropped as overtaken meanwhile."""
        tid = event.task["taskId"]
        task = self._tasks[tid]
        task.busy = False
        self.in_flight -= 1
        item = task.queue[0]
        item.tries += 1
        if len(task.queue) > 1 and event.kind in self.coalesce:
            task.queue.popleft()  # a newer event came meanwhile: this one is needless now
            self._drop(item)
            self._forget(tid, task, now)
            return False
        if permanent or item.tries >= self.tries:
            task.queue.popleft()
            self.waiting -= 1
            self._forget(tid, task, now)
            return True
        delay = self.rand() * min(self.backoff_max, self.backoff * 2 ** (item.tries - 1))
        item.due = now + max(delay, retry_after or 0.0)
        return False

    def release(self, event: Event, now: float, delay: float = 0.0) -> None:
        """Not tried after all (the relay may not push just now): again after ``delay``."""
        task = self._tasks[event.task["taskId"]]
        task.busy = False
        self.in_flight -= 1
        task.queue[0].due = now + delay

    def take_acks(self) -> list[str]:
        acks, self.acks = self.acks, []
        return acks

    def _forget(self, tid: str, task: _Task, now: float) -> None:
        del self._tasks[tid]
        if task.queue:  # to the back: the tasks that waited meanwhile go first
            self._tasks[tid] = task
        if len(self._last_beat) > 10_000:  # only those still inside their window matter
            self._last_beat = {t: at for t, at in self._last_beat.items() if now - at < self.window}
