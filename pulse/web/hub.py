"""One reader of the namespace's event stream per server process, fanned out to every open
page: 200 pages cost one XREAD, not 200.

The reader is a thread (redis-py blocks); each page is an asyncio queue of ready-made SSE
frames, formatted once per event whatever the number of pages. A page that resumes
(``Last-Event-ID``) subscribes first, then reads the stream after its id, then takes from its
queue only what comes after the last event it got, so nothing falls between the two. A page
too slow to keep up is dropped; it reconnects and resumes from its last id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from ..connection import redis_client
from ..errors import BackendUnavailable
from ..events import entries_after, entry_order, last_event_id
from ..settings import Settings

log = logging.getLogger("pulse.web")

# Frames a page may have waiting before it is dropped (it resumes from its last id).
QUEUE_LIMIT = 10_000
BLOCK_MS = 1000


Entry = tuple[str, dict[str, str]]  # a stream entry: its id, and kind, at, task (JSON text)


def frame(entry: Entry) -> bytes:
    """The event as one SSE message: ``id:`` the stream id, ``event:`` its kind, ``data:`` the
    event JSON ``{id, kind, at, task}``, the snapshot as the script wrote it (not parsed and
    dumped again: cheaper, and it keeps every field a newer library adds)."""
    entry_id, fields = entry
    kind = fields.get("kind", "")
    head = json.dumps({"id": entry_id, "kind": kind, "at": fields.get("at", "")})
    task = fields.get("task", "null").replace("\n", "")  # one data: line (JSON needs none)
    return f'id: {entry_id}\nevent: {kind}\ndata: {head[:-1]},"task":{task}}}\n\n'.encode()


PING = b": ping\n\n"  # an SSE comment: keeps proxies from closing a quiet stream
PING_SECONDS = 15.0

# What a page's queue holds: an event frame (its stream order, its bytes), PING, or None (the
# hub dropped the page: it ends, and the browser resumes from its last id).
Item = tuple[tuple[int, int], bytes] | bytes | None


class Page:
    """One open event stream: the items for it to send."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue()


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.pages: set[Page] = set()
        self.events_read = 0
        self.healthy = False
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._position: str | None = None

    # -- the reader thread ------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="pulse-web-hub", daemon=True)
        self._thread.start()
        # one timer for every page's pings (a timeout per page and event costs a task each)
        self._pinger = loop.create_task(self._ping())

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_SECONDS)
            for page in list(self.pages):
                page.queue.put_nowait(PING)

    def stop(self) -> None:
        if self._pinger is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._pinger.cancel)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BLOCK_MS / 1000 + 5)

    def redis(self) -> Any:
        """The redis-py client (thread-safe, pooled) of the reader and of resuming pages."""
        with self._client_lock:
            if self._client is None:
                self._client = redis_client(self.settings)
            return self._client

    def prime(self) -> None:
        """Where live events start: the stream's newest id now, before any page is served, so
        an event made right after a page subscribed is not taken for an old one. If Redis is
        down, the reader takes it once Redis answers."""
        try:
            self._position = last_event_id(self.redis(), self.namespace)
        except Exception as e:  # noqa: BLE001 - the reader retries
            log.warning("cannot read the event stream yet: %s", e)

    def _run(self) -> None:
        position = self._position
        failing_since: float | None = None
        while not self._stop.is_set():
            try:
                client = self.redis()
                if position is None:
                    position = last_event_id(client, self.namespace)
                events = entries_after(client, self.namespace, position, block_ms=BLOCK_MS)
                self.healthy = True
                if failing_since is not None:
                    log.warning("the event stream is readable again")
                    failing_since = None
            except Exception as e:  # noqa: BLE001 - any failure: wait, reconnect, resume
                self.healthy = False
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("cannot read the event stream (retrying): %s", e)
                self._stop.wait(0.5)
                continue
            if events:
                position = events[-1][0]
                self.events_read += len(events)
                frames = [(entry_order(e[0]), frame(e)) for e in events]
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._fan_out, frames)

    def _fan_out(self, frames: list[tuple[tuple[int, int], bytes]]) -> None:
        for page in list(self.pages):
            if page.queue.qsize() + len(frames) > QUEUE_LIMIT:
                self.unsubscribe(page)
                page.queue.put_nowait(None)  # wakes it up to end
                continue
            for item in frames:
                page.queue.put_nowait(item)

    # -- pages ------------------------------------------------------------------------------

    def subscribe(self) -> Page:
        page = Page()
        self.pages.add(page)
        return page

    def unsubscribe(self, page: Page) -> None:
        self.pages.discard(page)

    def position(self) -> str:
        """The stream's newest id (for a page about to list tasks); BackendUnavailable when
        Redis cannot say. Blocking: call it in a worker thread."""
        from redis.exceptions import RedisError

        try:
            return last_event_id(self.redis(), self.namespace)
        except (RedisError, OSError) as e:
            raise BackendUnavailable(f"cannot read the event stream: {e}") from None

    def backlog(self, after: str, limit: int = 10_000) -> list[Entry]:
        """Entries after ``after`` (a resuming page), at most ``limit``; blocking: call it in
        a worker thread."""
        found: list[Entry] = []
        while len(found) < limit:
            batch = entries_after(self.redis(), self.namespace, after, count=1000)
            found += batch
            if len(batch) < 1000:
                break
            after = batch[-1][0]
        return found
