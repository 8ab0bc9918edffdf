"""One chat message per task, edited in place; the flow Telegram and Discord share."""

from __future__ import annotations

import logging

from pulse.render import task_url

from .base import LOUD_KINDS, Memory, Push, recall, remember

log = logging.getLogger(__name__)


class InPlaceSink:
    """The first push of a task posts a message and remembers its id under ``<prefix>:<taskId>``;
    later pushes edit that message. done/error/stall post a fresh message (an edit notifies
    nobody) and also edit the kept one, so scrolling back shows the task's final state.

    Subclasses provide ``_fit`` (escape and cut the text), ``_post`` (returns the new message
    id, or "" when the service did not say) and ``_edit`` (False when the message is gone); both
    raise SinkError otherwise. With ``web_url`` (PULSE_WEB_URL) both get ``link``, the task's
    page on the dashboard, which they show as a button (never as a line of the text).
    """

    name: str

    def __init__(self, prefix: str, memory: Memory, web_url: str | None = None) -> None:
        self._prefix = prefix
        self._memory = memory
        self._web_url = web_url

    def _fit(self, text: str) -> str:
        raise NotImplementedError

    def _post(self, text: str, link: str | None = None) -> str:
        raise NotImplementedError

    def _edit(self, message_id: str, text: str, link: str | None = None) -> bool:
        raise NotImplementedError

    def send(self, push: Push) -> None:
        text = self._fit(push.text)
        if not push.task_id:  # nothing to key a message on: a plain post
            self._post(text)
            return
        link = task_url(self._web_url, push.task_id)
        key = f"{self._prefix}:{push.task_id}"
        kept = recall(self._memory, key)
        if push.kind in LOUD_KINDS:
            self._send_loud(push, key, kept, text, link)
        elif kept is None or not self._edit(kept, text, link):
            if kept is not None:
                log.info("%s: message of task %s is gone; posting a new one", self.name, key)
            posted = self._post(text, link)
            if posted:
                remember(self._memory, key, posted)

    def _send_loud(
        self, push: Push, key: str, kept: str | None, text: str, link: str | None
    ) -> None:
        # The relay retries a push whose edit failed after its fresh post went out; the marker
        # keeps that retry from notifying the user twice.
        marker = f"{key}:fresh"
        fresh = None
        if recall(self._memory, marker) != push.event_id:
            fresh = self._post(text, link) or None
            if kept is None and fresh is not None:
                remember(self._memory, key, fresh)
            remember(self._memory, marker, push.event_id)
        if kept is None:
            return
        if not self._edit(kept, text, link) and fresh is not None:
            remember(self._memory, key, fresh)  # the kept one is gone: the fresh one takes over

    def close(self) -> None:
        pass
