"""API calls onto the library: the same Client as the CLI underneath, so the same rules,
limits, errors and events. Clients are pooled (one per concurrent request at most: a Client
holds one connection and is not shared between threads) and never journal: an unreachable
Redis is an error the HTTP client sees (503), not an update kept on the web server's disk."""

from __future__ import annotations

import inspect
import logging
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..client import Client
from ..errors import BadValue
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


# -- the operation-id seam ---------------------------------------------------------------
# A client may send ``Idempotency-Key`` with an update so a retried request applies once: the
# key is the update's operation id, which the task records (Client.update's ``op_id``); a
# repeat answers 200 with the task as it is. A create has no operation id to record it by
# (a retried create makes a second task), so the header is refused there, not ignored.


def _takes_op_id(method: Any) -> bool:
    try:
        return "op_id" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def op_kwargs(method: Any, op_id: str | None) -> dict[str, Any]:
    if op_id is None:
        return {}
    if not _takes_op_id(method):
        raise BadValue("Idempotency-Key applies to updates (next, heartbeat, done, error, wait)")
    return {"op_id": op_id}


# -- the calls -----------------------------------------------------------------------------


def create(client: Client, body: dict[str, Any], op_id: str | None) -> Any:
    extra = op_kwargs(client.create, op_id)
    handle = client.create(body["name"], body["steps"], stall=body.get("stall"), **extra)
    return handle.task


def update(client: Client, op: str, task_id: str, body: dict[str, Any], op_id: str | None) -> Any:
    text = {"done": "result", "wait": "question"}.get(op, "message")
    extra = op_kwargs(client.update, op_id)
    change = client.update(task_id, op, body.get(text), body.get("progress"), **extra)
    return change.task
