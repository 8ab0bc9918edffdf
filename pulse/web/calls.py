"""API calls onto the library: the same Client as the CLI underneath, so the same rules,
limits, errors and events. Clients are pooled (one per concurrent request at most: a Client
holds one connection and is not shared between threads) and never journal: an unreachable
Redis is an error the HTTP client sees (503), not an update kept on the web server's disk."""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..client import Client
from ..settings import Settings

log = logging.getLogger("pulse.web")

UPDATES = ("next", "heartbeat", "done", "error", "wait")


class Clients:
    """A pool of Clients of one namespace, made as requests need them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._free: queue.SimpleQueue[Client] = queue.SimpleQueue()
        self._all: list[Client] = []

    @contextmanager
    def client(self) -> Iterator[Client]:
        try:
            c = self._free.get_nowait()
        except queue.Empty:
            c = Client(self.settings, warn=log.warning, mirror_in_background=True, journal=False)
            self._all.append(c)
        try:
            yield c
        finally:
            self._free.put(c)

    def close(self) -> None:
        for c in self._all:
            c.close()


# -- operation ids -----------------------------------------------------------------------
# A client may send ``Idempotency-Key`` with a write so a retried request applies once: the
# key is the write's operation id (``op_id`` of Client.create and Client.update, checked
# there). A repeated update answers with the task as it is; a repeated create (within a day)
# with the task the first one made, as it is now, not a second task.


# -- the calls -----------------------------------------------------------------------------


def create(client: Client, body: dict[str, Any], op_id: str | None) -> Any:
    handle = client.create(body["name"], body["steps"], stall=body.get("stall"), op_id=op_id)
    return handle.task


def update(client: Client, op: str, task_id: str, body: dict[str, Any], op_id: str | None) -> Any:
    text = {"done": "result", "wait": "question"}.get(op, "message")
    change = client.update(task_id, op, body.get(text), body.get("progress"), op_id=op_id)
    return change.task
