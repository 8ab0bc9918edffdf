"""``discord://WEBHOOK_ID/WEBHOOK_TOKEN``: one Discord webhook message per task, edited in place."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from pulse.errors import BadValue

from ._http import HttpClient, Pacer, Reply, failure, json_body, parse_retry_after
from .base import Memory, SinkError, redact, scrub
from .inplace import InPlaceSink

LIMIT = 2000
# Push texts carry user text: "@everyone" or "<@id>" in a step message must ping nobody.
_NO_MENTIONS: dict[str, list[str]] = {"parse": []}


def fit(text: str, limit: int = LIMIT) -> str:
    """``text`` at most ``limit`` characters, a cut one ending with ``…``."""
    text = text or "…"  # Discord refuses an empty message
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class DiscordSink(InPlaceSink):
    def __init__(
        self,
        webhook_id: str,
        token: str,
        *,
        api: str = "https://discord.com/api",
        memory: Memory,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 10.0,
        web_url: str | None = None,
    ) -> None:
        super().__init__(f"discord:{webhook_id}", memory, web_url)
        self.name = f"discord://{webhook_id}/***"
        self._base = f"{api.rstrip('/')}/webhooks/{webhook_id}/{quote(token, safe='')}"
        self._http = HttpClient(self.name, secrets=(token,), timeout=timeout)
        # No fixed spacing: Discord says in its rate-limit headers when to slow down.
        self.pacer = Pacer(0.0, clock, sleep)

    def _fit(self, text: str) -> str:
        return fit(text)

    def _post(self, text: str, link: str | None = None) -> str:
        query = "?wait=true&with_components=true" if link else "?wait=true"
        reply = self._call("POST", f"{self._base}{query}", text, link)
        if reply.status >= 300:
            raise self._failure("post", reply)
        data = reply.json()
        return str(data.get("id") or "") if isinstance(data, dict) else ""

    def _edit(self, message_id: str, text: str, link: str | None = None) -> bool:
        url = f"{self._base}/messages/{quote(message_id, safe='')}"
        reply = self._call("PATCH", url + ("?with_components=true" if link else ""), text, link)
        if reply.status == 404:
            # Unknown Message: deleted by someone. (An unknown webhook fails the next post.)
            return False
        if reply.status >= 300:
            raise self._failure("edit", reply)
        return True

    def _call(self, method: str, url: str, text: str, link: str | None = None) -> Reply:
        self.pacer.wait()
        doc: dict[str, Any] = {"content": text, "allowed_mentions": _NO_MENTIONS}
        if link:
            # a link button (style 5): a webhook may send this non-interactive component
            button = {"type": 2, "style": 5, "label": "pulse", "url": link}
            doc["components"] = [{"type": 1, "components": [button]}]
        body = json_body(doc)
        reply = self._http.request(method, url, body, {"Content-Type": "application/json"})
        if reply.headers.get("X-RateLimit-Remaining") == "0":
            self.pacer.hold(parse_retry_after(reply.headers.get("X-RateLimit-Reset-After")) or 0)
        return reply

    def _failure(self, what: str, reply: Reply) -> SinkError:
        data = reply.json()
        data = data if isinstance(data, dict) else {}
        retry_after = None
        if reply.status == 429:
            retry_after = parse_retry_after(data.get("retry_after"))
            if retry_after is None:
                retry_after = parse_retry_after(reply.headers.get("Retry-After"))
            self.pacer.hold(retry_after or 1.0)
        # Discord's bodies do not echo the token; scrubbing anyway costs nothing.
        detail = scrub(str(data.get("message") or reply.snippet()), self._http.secrets)
        return failure(f"{self.name}: {what}", reply.status, detail, retry_after)


def from_url(url: str, *, memory: Memory, api: str, web_url: str | None = None) -> DiscordSink:
    rest = url.strip().partition("://")[2]
    if "?" in rest or "#" in rest:
        raise BadValue(f"sink {redact(url)}: discord:// takes no options")
    webhook_id, _, token = rest.strip("/").partition("/")
    if not re.fullmatch(r"\d+", webhook_id) or not re.fullmatch(r"[\w.-]+", token):
        raise BadValue(f"sink {redact(url)}: expected discord://WEBHOOK_ID/WEBHOOK_TOKEN")
    return DiscordSink(webhook_id, token, api=api, memory=memory, web_url=web_url)
