"""What the HTTP sinks share: a small urllib client that never leaks its URL, and pacing."""

from __future__ import annotations

import http.client
import json
import select
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from .base import SinkError, scrub

USER_AGENT = "live-task-pulse"
TIMEOUT = 10.0
_MAX_BODY = 1 << 20  # an answer is a few hundred bytes; never buffer an endless one
# Statuses that may well succeed on a later try; any other 4xx means the request is wrong.
_RETRYABLE = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message  # case-insensitive .get()
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def snippet(self, limit: int = 200) -> str:
        """The start of the body on one line, for an error message."""
        return " ".join(self.body[:limit].decode("utf-8", "replace").split())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would replay a POST as a GET without its body: surface the 3xx instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Failures of a kept-alive connection the server closed while it sat idle: the request never
# got an answer, so it is sent once more on a fresh connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class HttpClient:
    """Sends one request and returns the Reply whatever its status.

    Only a failure to get any answer raises (a retryable SinkError), and its message has the
    ``secrets`` scrubbed: urllib's error texts can hold the URL, and the URL a bot token.

    Connections are kept alive and reused (HTTP/1.1), one pool per scheme, host and port:
    a new TCP (and TLS) handshake per push would cost more than the push. A URL that an
    ``http(s)_proxy`` of the environment applies to goes through urllib, which honours it.
    Redirects are never followed. Thread-safe: a connection serves one request at a time.
    """

    def __init__(self, label: str, secrets: tuple[str, ...] = (), timeout: float = TIMEOUT):
        self.label = label
        self.secrets = secrets
        self.timeout = timeout
        self._opener: urllib.request.OpenerDirector | None = None
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._via_proxy: dict[tuple[str, str], bool] = {}

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or self._proxied(parts):
                return self._via_urllib(method, url, body, headers)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            key = (parts.scheme, parts.hostname, port)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            sent = {"User-Agent": USER_AGENT}
            if body is not None:
                sent["Content-Type"] = "application/x-www-form-urlencoded"  # as urllib
            sent.update(headers or {})
            conn, reused = self._take(key)
            try:
                return self._exchange(conn, key, method, target, body, sent)
            except _STALE:
                if not reused:
                    raise
            conn, _ = self._take(key, fresh=True)
            return self._exchange(conn, key, method, target, body, sent)
        except (OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            detail = scrub(f"{type(e).__name__}: {reason}", self.secrets)
            # from None: a logged traceback would print the original, URL and all
            raise SinkError(f"{self.label}: no answer ({detail})") from None

    def _proxied(self, parts: SplitResult) -> bool:
        """Whether an ``http(s)_proxy`` of the environment applies (looked up once per host:
        reading the environment each time costs more than the rest of a request)."""
        key = (parts.scheme, parts.netloc)
        if key not in self._via_proxy:
            host = parts.netloc.rpartition("@")[2]
            proxied = parts.scheme in urllib.request.getproxies()
            self._via_proxy[key] = proxied and not urllib.request.proxy_bypass(host)
        return self._via_proxy[key]

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _take(
        self, key: tuple[str, str, int], fresh: bool = False
    ) -> tuple[http.client.HTTPConnection, bool]:
        while not fresh:
            with self._lock:
                pool = self._idle.get(key)
                conn = pool.pop() if pool else None
            if conn is None:
                break
            if conn.sock is not None and not _dropped(conn.sock):
                return conn, True
            conn.close()
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout), False
        return http.client.HTTPConnection(host, port, timeout=self.timeout), False

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        key: tuple[str, str, int],
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> Reply:
        try:
            conn.request(method, target, body, headers)
            answer = conn.getresponse()
            data = answer.read(_MAX_BODY)
        except BaseException:
            conn.close()
            raise
        if answer.will_close or not answer.isclosed():  # closing, or a body left unread
            conn.close()
        else:
            with self._lock:
                self._idle.setdefault(key, []).append(conn)
        return Reply(answer.status, answer.headers, data)

    def _via_urllib(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> Reply:
        if self._opener is None:
            self._opener = urllib.request.build_opener(_NoRedirect())
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("User-Agent", USER_AGENT)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                return Reply(answer.status, answer.headers, answer.read(_MAX_BODY))
        except urllib.error.HTTPError as e:
            with e:
                return Reply(e.code, e.headers, e.read(_MAX_BODY))


def _dropped(sock: Any) -> bool:
    """Whether an idle kept-alive connection was closed by the server (readable: EOF)."""
    try:
        if hasattr(select, "poll"):  # select() fails on descriptors past FD_SETSIZE
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def json_body(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def parse_retry_after(value: object) -> float | None:
    """Seconds from a Retry-After value: a number, or an HTTP date; None if neither."""
    if value is None or value == "":
        return None
    try:
        return max(0.0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pass
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def failure(label: str, status: int, detail: str, retry_after: float | None = None) -> SinkError:
    """The SinkError for a non-2xx answer: 429, 5xx and a few others retryable, else permanent."""
    return SinkError(
        f"{label}: HTTP {status}" + (f": {detail}" if detail else ""),
        permanent=is_permanent(status),
        retry_after=retry_after,
    )


def is_permanent(status: int) -> bool:
    """Whether a request answered ``status`` is wrong for good (3xx/4xx but 408/409/425/429)."""
    return status < 500 and status not in _RETRYABLE


class Pacer:
    """Spaces calls at least ``interval`` seconds apart, and holds them after a 429.

    Thread-safe: each caller reserves its slot under the lock, then sleeps outside it.
    ``clock`` and ``sleep`` are injectable so tests run on a fake clock.
    """

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)

    def hold(self, seconds: float) -> None:
        """No call before ``seconds`` from now (what a 429 or a rate-limit header asked)."""
        with self._lock:
            self._next = max(self._next, self.clock() + max(0.0, seconds))
