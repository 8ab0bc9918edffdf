"""One delivery: an event rendered for a sink and sent once. Shared by the relay's lanes,
``--redrive`` and the central mirror (its bad entries are parked the same way)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pulse import Event, render_card, render_push

from .sinks import Push, Sink, SinkError

log = logging.getLogger("pulse.relay")


def to_push(event: Event, lang: str) -> Push:
    """The push of an event: its notification text and the card of the whole task (what a
    sink that edits one message per task shows). ValueError for a kind it cannot render."""
    task: dict[str, Any] = dict(event.task)
    text = render_push(event.kind, task, lang)
    return Push(event.id, event.kind, task, text, event.at, card=render_card(task, lang))


@dataclass(frozen=True)
class Outcome:
    ok: bool
    seconds: float
    error: str = ""
    permanent: bool = False  # a retry cannot help
    retry_after: float | None = None


def attempt(sink: Sink, event: Event, lang: str) -> Outcome:
    """Render and send once; never raises (a bug in a sink or a template is a permanent
    failure of this push, not of the relay)."""
    start = time.monotonic()
    try:
        sink.send(to_push(event, lang))
    except SinkError as e:
        return Outcome(False, time.monotonic() - start, str(e), e.permanent, e.retry_after)
    except Exception as e:  # noqa: BLE001 - one bad push must not stop its lane
        error = f"{type(e).__name__}: {e}"
        log.warning("%s: %s %s cannot be pushed: %s", sink.name, event.kind, event.id, error)
        return Outcome(False, time.monotonic() - start, error, True)
    return Outcome(True, time.monotonic() - start)
