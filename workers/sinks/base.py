"""The contract between the relay and its sinks: the push, the error, per-task memory, redaction."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, urlsplit

# Kinds the user must be notified of: chat sinks post a fresh message for them instead of
# only editing the task's message in place (an edit makes no sound on a phone).
LOUD_KINDS = frozenset({"create", "done", "error", "stall", "wait"})

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*", re.I)
_SECRET_KEY = re.compile(r"secret|token|key|pass|pwd|auth|sig|cred|session|code", re.I)


@dataclass(frozen=True)
class Push:
    """One delivery: an event of a task and the text rendered for it."""

    event_id: str  # the stream entry id
    kind: str  # create|next|heartbeat|done|error|stall|resume
    task: Mapping[str, Any]  # the snapshot (SPEC "Task snapshot")
    text: str  # rendered push text (pulse.render.render_push)
    at: str = ""  # ISO time of the event
    card: str = ""  # the whole task (pulse.render.render_card): what an edited message shows

    @property
    def task_id(self) -> str:
        return str(self.task.get("taskId") or "")

    def record(self) -> dict[str, Any]:
        """The push as one JSON object: what jsonl appends and exec gets on stdin."""
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "at": self.at,
            "task": self.task,
            "text": self.text,
        }


class SinkError(Exception):
    """A delivery failed. ``permanent``: retrying cannot help (bad token, blocked bot, 404).

    ``retry_after``: seconds the service asked us to wait (429), None when it did not say.
    The message is safe to log: it never holds a token, password or secret.
    """

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = None if retry_after is None else max(0.0, float(retry_after))

    def __repr__(self) -> str:
        return (
            f"SinkError({self.message!r}, permanent={self.permanent}, "
            f"retry_after={self.retry_after})"
        )


class Memory(Protocol):
    """Per-task state a sink keeps across calls and relay restarts (the relay: a Redis hash)."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...


class DictMemory:
    """In-process Memory; ``data`` is the plain dict, for tests to look into."""

    def __init__(self, data: dict[str, str] | None = None) -> None:
        self.data: dict[str, str] = {} if data is None else data
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self.data[key] = value


@runtime_checkable
class Sink(Protocol):
    name: str  # the URL with every secret replaced by ***; safe for logs

    def send(self, push: Push) -> None: ...  # raises SinkError

    def close(self) -> None: ...


def recall(memory: Memory, key: str) -> str | None:
    try:
        return memory.get(key)
    except Exception as e:  # the backing store's error text may hold its URL and password
        raise SinkError(f"sink memory unavailable ({type(e).__name__})") from None


def remember(memory: Memory, key: str, value: str) -> None:
    try:
        memory.set(key, value)
    except Exception as e:
        raise SinkError(f"sink memory unavailable ({type(e).__name__})") from None


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret, raw or URL-quoted, replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def redact(url: str) -> str:
    """The sink URL with tokens, passwords and secret parameters replaced by ***."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        # Not a URL we can take apart, so we cannot tell its secrets from the rest.
        head, colon, _ = url.partition(":")
        return f"{head.lower()}:***" if colon and _SCHEME.fullmatch(head) else "***"
    path = rest.split("?")[0].split("#")[0]
    if scheme == "tgram":  # tgram://BOT_TOKEN/CHAT_ID: the token is before the first slash
        return "tgram://***" + (f"/{path.partition('/')[2]}" if "/" in path else "")
    if scheme == "discord":  # discord://WEBHOOK_ID/WEBHOOK_TOKEN
        return f"discord://{path.partition('/')[0]}" + ("/***" if "/" in path else "")
    if scheme == "exec":
        return _redact_exec(rest)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return f"{scheme}://***"
    native = scheme in ("console", "jsonl", "webhook+http", "webhook+https")
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    head = _userinfo(parts, native) + _host(parts, native)
    return f"{scheme}://{head}{_path(parts.path, native)}{_query(parts.query)}{fragment}"


def _userinfo(parts: Any, native: bool) -> str:
    if parts.password is not None:
        return f"{parts.username}:***@"
    if parts.username is not None:
        # In Apprise URLs a lone user part is usually a key (pover://USER_KEY@TOKEN).
        return f"{parts.username}@" if native else "***@"
    return ""


def _host(parts: Any, native: bool) -> str:
    host = parts.netloc.rpartition("@")[2]
    name = parts.hostname or ""
    # Apprise puts tokens where a host would be (slack://TOKEN_A/...): keep real host names only.
    if native or "." in name or ":" in name or name in ("", "localhost"):
        return host
    return "***" + (f":{parts.port}" if parts.port else "")


def _path(path: str, native: bool) -> str:
    segments = path.split("/")
    if native:  # webhook paths are names, but some services put a token in one
        return "/".join("***" if _looks_secret(s) else s for s in segments)
    # In Apprise URLs path parts are mostly tokens and ids; channel names keep their sigil.
    return "/".join(s if not s or s[0] in "#@" else "***" for s in segments)


def _looks_secret(segment: str) -> bool:
    return len(segment) >= 32 or (len(segment) >= 16 and any(c.isdigit() for c in segment))


def _query(query: str) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [f"{k}=***" if _SECRET_KEY.search(k) else f"{k}={quote(v, safe='')}" for k, v in pairs]
    return "?" + "&".join(shown)


def _redact_exec(rest: str) -> str:
    # The command line may carry credentials (curl -H "Authorization: ..."): show the program.
    query = rest.partition("?")[2]
    cmd = dict(parse_qsl(query)).get("cmd", "").split()
    if not cmd:
        return "exec://"
    return f"exec://?cmd={cmd[0]}" + (" ***" if len(cmd) > 1 else "")
