"""Any other URL (``slack://``, ``json://``, ``mailto://``...) through Apprise, when installed."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from pulse import clean_text as clean
from pulse.errors import BadValue

from .base import Push, SinkError, redact, scrub

# Apprise logs the raw URL of one it cannot load, and at DEBUG the service URL it posts to
# (tokens in the path), as does urllib3 under it: scrub our sinks' secrets from those records.
_LOGGERS = ("apprise", "urllib3.connectionpool")


class _Scrubber(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        # longest first, so a secret containing another is replaced whole; a tuple swapped in
        # whole, so a record logged by another thread never sees it half updated
        self.secrets: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_SCRUBBER = _Scrubber()
_GUARD_LOCK = threading.Lock()


def _guard(url: str) -> None:
    """Register the parts of ``url`` that redact() hides, and scrub them from Apprise's logs."""
    shown = redact(url)
    parts = re.split(r"[/:@?&=#]+", url.partition("://")[2])
    hidden = {part for part in parts if len(part) >= 3 and part not in shown}
    with _GUARD_LOCK:
        merged = hidden.union(_SCRUBBER.secrets)
        _SCRUBBER.secrets = tuple(sorted(merged, key=len, reverse=True))
    for name in _LOGGERS:
        if _SCRUBBER not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_SCRUBBER)


class AppriseSink:
    """Hands each push to Apprise as plain text, titled with the task's name.

    Apprise escapes plain text for the service itself (Slack's ``& < >`` included, and so
    ``<!everyone>`` cannot ping); escaping here too would show ``&amp;lt;`` in the channel.
    """

    def __init__(self, app: Any, text_format: Any, *, name: str) -> None:
        self.name = name
        self._app = app
        self._format = text_format
        self._lock = threading.Lock()  # one Apprise object is not meant for parallel notify()

    def send(self, push: Push) -> None:
        title = " ".join(clean(str(push.task.get("taskName") or "")).split())
        try:
            with self._lock:
                ok = self._app.notify(body=push.text, title=title, body_format=self._format)
        except Exception as e:  # a plugin bug must not take the relay's worker thread down
            raise SinkError(f"{self.name}: Apprise failed ({type(e).__name__})") from None
        if not ok:
            # Apprise reports only success or not (its log has the reason): assume transient.
            raise SinkError(f"{self.name}: Apprise could not deliver the notification")

    def close(self) -> None:
        pass


def from_url(url: str) -> AppriseSink:
    name = redact(url)
    scheme = url.partition("://")[0].lower()
    plain_http = scheme in ("http", "https")
    hint = " (for a plain HTTP endpoint use webhook+https://)" if plain_http else ""
    try:
        import apprise  # lazily: an optional extra, and slow to import
    except ImportError:
        raise BadValue(
            f"sink {name}: unknown scheme {scheme}://; other services go through Apprise: "
            f"pip install 'live-task-pulse[apprise]'{hint}"
        ) from None
    _guard(url.strip())
    app = apprise.Apprise()
    if not app.add(url.strip()):
        raise BadValue(f"sink {name}: not a URL Apprise accepts{hint}")
    return AppriseSink(app, apprise.NotifyFormat.TEXT, name=name)
