"""One chat message per task, edited in place; the flow Telegram and Discord share."""

from __future__ import annotations

import logging

from pulse.render import task_url

from .base import LOUD_KINDS, Memory, Push, recall, remember

log = logging.getLogger(__name__)


class InPlaceSink:
    """One message per task shows its card (``push.card``): the first push posts it and
    remembers its id under ``<prefix>:<taskId>``, later pushes edit it. Pushes that notify
    (start, done, error, stall, wait) also post their own text first: an edit notifies nobody.
    The relay sends these sinks one push at a time, and lets edits the pace holds back give
    way to newer ones (``coalesce``).

    Subclasses provide ``_fit`` (escape and cut the text), ``_post`` (returns the new message
    id, or "" when the service did not say) and ``_edit`` (False when the message is gone); both
    raise SinkError otherwise. With ``web_url`` (PULSE_WEB_URL) both get ``link``, the task's
    page on the dashboard, which they show as a button (never as a line of the text).
    """

    name: str
    in_flight = 1  # the chat's pace (one message a second) allows no more
    coalesce = frozenset({"heartbeat", "next", "resume"})  # edits only: newer ones replace them

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
            self._post_loud(push, key, text, link)
        card = self._fit(push.card or push.text)
        if kept is not None and self._edit(kept, card, link):
            return
        if kept is not None:
            log.info("%s: message of task %s is gone; posting a new one", self.name, key)
        posted = self._post(card, link)
        if posted:
            remember(self._memory, key, posted)

    def _post_loud(self, push: Push, key: str, text: str, link: str | None) -> None:
        # The relay retries a push whose card edit failed after its own message went out; the
        # marker keeps that retry from notifying the user twice.
        marker = f"{key}:fresh"
        if recall(self._memory, marker) != push.event_id:
            self._post(text, link)
            remember(self._memory, marker, push.event_id)

    def close(self) -> None:
        pass
