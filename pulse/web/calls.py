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
# A client may send ``Idempotency-Key`` with a write so a retried request applies once. The
# library records operation ids itself (``op_id=`` on Client.create and Client.update, where
# this version of the library has it); this is the one place the web layer hands them over.


def _takes_op_id(method: Any) -> bool:
    try:
        return "op_id" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


OP_IDS = _takes_op_id(Client.update) and _takes_op_id(Client.create)


def op_kwargs(op_id: str | None) -> dict[str, Any]:
    if op_id is None:
        return {}
    if not OP_IDS:
        raise BadValue("this server's pulse cannot record operation ids (Idempotency-Key)")
    return {"op_id": op_id}


# -- the calls -----------------------------------------------------------------------------


def create(client: Client, body: dict[str, Any], op_id: str | None) -> Any:
    handle = client.create(body["name"], body["steps"], stall=body.get("stall"), **op_kwargs(op_id))
    return handle.task


def update(
    client: Client, op: str, task_id: str, body: dict[str, Any], op_id: str | None
) -> dict[str, Any]:
    extra = op_kwargs(op_id)
    if op == "wait":
        wait = getattr(client, "wait", None)
        if wait is None:
            raise BadValue("this server's pulse has no wait")
        change = wait(task_id, body.get("question"), **extra)
    else:
        text = body.get("result") if op == "done" else body.get("message")
        change = client.update(task_id, op, text, body.get("progress"), **extra)
    task: dict[str, Any] = change.task
    return task
