"""Where the relay delivers pushes: one Sink per URL of ``PULSE_SINKS`` / ``--sink``.

``open_sink(url)`` parses and checks the URL (raising pulse.errors.BadValue with the URL
redacted) and returns an object with ``name``, ``send(push)`` and ``close()``. ``send`` raises
SinkError: ``permanent`` says a retry cannot help, ``retry_after`` what the service asked for.
"""

from __future__ import annotations

import re

from pulse import Settings
from pulse.errors import BadValue

from .base import LOUD_KINDS, DictMemory, Memory, Push, Sink, SinkError, redact

__all__ = [
    "LOUD_KINDS",
    "DictMemory",
    "Memory",
    "Push",
    "Sink",
    "SinkError",
    "open_sink",
    "redact",
]


def open_sink(url: str, *, memory: Memory | None = None, settings: Settings | None = None) -> Sink:
    """The sink for ``url``; ``memory`` keeps the chat sinks' message ids (default: in-process),
    ``settings`` gives the Telegram and Discord API bases and PULSE_WEB_URL, which pushes
    link to (default: from the environment).
    """
    url = url.strip()
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise BadValue(f"sink {redact(url)!r} is not a URL (expected scheme://...)")
    # Modules imported on demand: a relay with a console sink never loads urllib or Apprise.
    if scheme == "console":
        from .console import ConsoleSink

        if url.lower() not in ("console://", "console:///"):
            raise BadValue(f"sink {redact(url)}: console:// takes no path or options")
        return ConsoleSink()
    if scheme == "jsonl":
        from . import jsonl

        return jsonl.from_url(url)
    if scheme in ("webhook+http", "webhook+https"):
        from . import webhook

        settings = settings or Settings.from_env()
        return webhook.from_url(url, web_url=settings.web_url)
    if scheme == "exec":
        from .exec import from_url

        return from_url(url)
    if scheme in ("tgram", "discord"):
        settings = settings or Settings.from_env()
        memory = DictMemory() if memory is None else memory
        if scheme == "tgram":
            from . import telegram

            return telegram.from_url(
                url, memory=memory, api=settings.telegram_api, web_url=settings.web_url
            )
        from . import discord

        return discord.from_url(
            url, memory=memory, api=settings.discord_api, web_url=settings.web_url
        )
    from . import apprise_sink

    return apprise_sink.from_url(url)
