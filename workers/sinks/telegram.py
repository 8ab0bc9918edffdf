"""``tgram://BOT_TOKEN/CHAT_ID``: one Telegram message per task, edited in place."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from typing import Any

from pulse.errors import BadValue

from ._http import HttpClient, Pacer, is_permanent, json_body, parse_retry_after
from .base import Memory, SinkError, redact, scrub
from .inplace import InPlaceSink

LIMIT = 4096
_TOKEN = re.compile(r"\d+:[\w-]+")
_CHAT = re.compile(r"-?\d+|@\w{4,}")
# Edit failures that mean "the message is not there to edit": post a new one instead.
_GONE = ("message to edit not found", "message can't be edited", "message_id_invalid")


class TelegramError(SinkError):
    """An error answer of the Bot API; ``code`` and ``description`` as Telegram sent them."""

    def __init__(self, message: str, code: int, description: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.code = code
        self.description = description


def fit(text: str, limit: int = LIMIT) -> str:
    """``text`` HTML-escaped and at most ``limit`` long (in UTF-16 units, as Telegram counts).

    A longer text is cut before escaping, so no ``&amp;`` is split, and ends with ``…``.
    """
    escaped = html.escape(text, quote=False) or "…"  # Telegram refuses an empty message
    if _units(escaped) <= limit:
        return escaped
    out: list[str] = []
    used = 1  # the ellipsis
    for ch in text:
        piece = html.escape(ch, quote=False)
        used += _units(piece)
        if used > limit:
            break
        out.append(piece)
    return "".join(out).rstrip() + "…"


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class TelegramSink(InPlaceSink):
    def __init__(
        self,
        token: str,
        chat_id: str,
        *,
        api: str = "https://api.telegram.org",
        memory: Memory,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 10.0,
        web_url: str | None = None,
    ) -> None:
        # Telegram refuses buttons to addresses it cannot reach (localhost, plain IPs): the link
        # button needs a public https address
        web_url = web_url if web_url and web_url.startswith("https://") else None
        super().__init__(f"tgram:{chat_id}", memory, web_url)
        self.name = f"tgram://***/{chat_id}"
        self.chat_id = chat_id
        self._base = f"{api.rstrip('/')}/bot{token}"
        self._http = HttpClient(self.name, secrets=(token,), timeout=timeout)
        # Telegram allows about one message a second in one chat; edits count as well.
        self.pacer = Pacer(1.0, clock, sleep)

    def _fit(self, text: str) -> str:
        return fit(text)

    def _post(self, text: str, link: str | None = None) -> str:
        result = self._call("sendMessage", text, **_button(link))
        return str(result.get("message_id", ""))

    def _edit(self, message_id: str, text: str, link: str | None = None) -> bool:
        try:
            self._call("editMessageText", text, message_id=_int(message_id), **_button(link))
        except TelegramError as e:
            description = e.description.lower()
            if e.code == 400 and "message is not modified" in description:
                return True  # already shows this text (a redelivered push)
            if e.code == 400 and any(gone in description for gone in _GONE):
                return False
            raise
        return True

    def _call(self, method: str, text: str, **extra: Any) -> dict:
        payload = {"chat_id": _int(self.chat_id), "text": text, "parse_mode": "HTML", **extra}
        # on edits too: an edit that adds a link would otherwise grow a preview
        payload["disable_web_page_preview"] = True
        self.pacer.wait()
        reply = self._http.request(
            "POST",
            f"{self._base}/{method}",
            json_body(payload),
            {"Content-Type": "application/json"},
        )
        data = reply.json()
        data = data if isinstance(data, dict) else {}
        if 200 <= reply.status < 300 and data.get("ok"):
            result = data.get("result")
            return result if isinstance(result, dict) else {}
        code = int(data.get("error_code") or reply.status)
        description = str(data.get("description") or reply.snippet() or "no description")
        description = scrub(description, self._http.secrets)  # a proxy's error page may quote it
        params = data.get("parameters")
        params = params if isinstance(params, dict) else {}
        retry_after = parse_retry_after(params.get("retry_after"))
        if code == 429:
            retry_after = retry_after or parse_retry_after(reply.headers.get("Retry-After"))
            self.pacer.hold(retry_after or 1.0)
        message = f"{self.name}: {method} failed: {code} {description}"
        if params.get("migrate_to_chat_id"):  # a group became a supergroup with a new id
            message += f" (the chat is now {params['migrate_to_chat_id']}: update the sink URL)"
        # 400 "chat not found", 401 bad token, 403 "bot was blocked by the user": final.
        raise TelegramError(
            message, code, description, permanent=is_permanent(code), retry_after=retry_after
        )


def _button(link: str | None) -> dict[str, Any]:
    """The task's page as an inline link button under the message (an edit must repeat it)."""
    if not link:
        return {}
    return {"reply_markup": {"inline_keyboard": [[{"text": "🔗 pulse", "url": link}]]}}


def _int(value: str) -> int | str:
    # chat ids travel as numbers, channel usernames as "@name"
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def from_url(url: str, *, memory: Memory, api: str, web_url: str | None = None) -> TelegramSink:
    rest = url.strip().partition("://")[2]
    if "?" in rest or "#" in rest:
        raise BadValue(f"sink {redact(url)}: tgram:// takes no options")
    token, _, chat = rest.partition("/")
    chat = chat.strip("/")
    if not _TOKEN.fullmatch(token):
        raise BadValue(f"sink {redact(url)}: expected tgram://BOT_TOKEN/CHAT_ID (token 123:ABC)")
    if not _CHAT.fullmatch(chat):
        raise BadValue(
            f"sink {redact(url)}: expected one chat id (a number or @channel) after the token"
        )
    return TelegramSink(token, chat, api=api, memory=memory, web_url=web_url)
