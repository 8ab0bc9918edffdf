"""Loopback fakes for the sinks and the relay's end-to-end tests: a webhook receiver, a fake
Telegram Bot API and a fake Discord webhook API, each a ThreadingHTTPServer on 127.0.0.1.

Common API of every fake (class FakeServer):
  .url                     base URL, ``http://127.0.0.1:PORT`` (no trailing slash)
  .requests                list of Recorded(method, path, query, headers, body), arrival order;
                           ``.json`` is the body parsed, ``.header(name)`` case-insensitive
  .fail_next(status, body=None, times=1, headers=None)
                           the next ``times`` requests get this answer (body: dict → JSON)
  .wait_for(n, timeout=10) block until at least n requests arrived; returns .requests
  .clear()                 forget the requests and pending failures
  .signature_ok(req, secret)  whether X-Pulse-Signature is the HMAC-SHA256 of req's body
Fixtures: ``webhook_receiver``, ``fake_telegram``, ``fake_discord`` (fresh per test, stopped
after it) and ``fake_clock`` (a clock + sleep pair for the sinks' pacers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

Answer = tuple[int, dict[str, str], Any]  # status, headers, body (dict/list → JSON, or bytes)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class FakeServer:
    """Records every request; subclasses answer them in ``answer`` (default 200 ``{"ok":true}``)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._failures: list[Answer] = []
        self._cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                split = urlsplit(self.path)
                req = Recorded(
                    self.command, split.path, dict(parse_qsl(split.query)), dict(self.headers), body
                )
                status, headers, payload = fake._handle(req)
                if not isinstance(payload, bytes):
                    payload = json.dumps(payload).encode()
                    headers = {"Content-Type": "application/json", **headers}
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, req: Recorded) -> Answer:
        with self._cond:
            self.requests.append(req)
            failure = self._failures.pop(0) if self._failures else None
            self._cond.notify_all()
        return failure or self.answer(req)

    def answer(self, req: Recorded) -> Answer:
        return 200, {}, {"ok": True}

    def fail_next(
        self, status: int, body: Any = None, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        with self._cond:
            self._failures += [(status, headers or {}, body if body is not None else b"")] * times

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"{len(self.requests)} requests arrived, expected {n}")
            return list(self.requests)

    def clear(self) -> None:
        with self._cond:
            self.requests.clear()
            self._failures.clear()

    @staticmethod
    def signature_ok(req: Recorded, secret: str) -> bool:
        """Whether ``X-Pulse-Signature`` is the HMAC-SHA256 of the body under ``secret``."""
        expected = "sha256=" + hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(req.header("X-Pulse-Signature") or "", expected)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeTelegram(FakeServer):
    """The Bot API's sendMessage and editMessageText, as strict as Telegram where it matters:
    401 for another token, 400 "can't parse entities" for a raw ``<`` or a bare ``&``, 400
    "message is too long" past 4096, 400 "message to edit not found", 400 "message is not
    modified". ``.messages[(chat_id, message_id)]`` is each message's current text;
    ``.calls`` the (method, payload) of every request; ``.fail_api(code, description,
    times=1, retry_after=None)`` queues Telegram-style error answers.
    """

    token = "123456789:AAH-fake_TOKEN-for-tests"

    def __init__(self) -> None:
        super().__init__()
        self.messages: dict[tuple[str, int], str] = {}

    def sink_url(self, chat_id: str = "-100777") -> str:
        return f"tgram://{self.token}/{chat_id}"

    @property
    def calls(self) -> list[tuple[str, dict]]:
        return [(r.path.rpartition("/")[2], r.json) for r in self.requests]

    def fail_api(
        self, code: int, description: str, times: int = 1, retry_after: int | None = None
    ) -> None:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        self.fail_next(code, body, times)

    def answer(self, req: Recorded) -> Answer:
        bot, _, method = req.path.strip("/").partition("/")
        if bot != f"bot{self.token}":
            return self._error(401, "Unauthorized")
        data = req.json or {}
        text, chat = str(data.get("text") or ""), str(data.get("chat_id"))
        problem = _telegram_text_problem(text)
        if problem:
            return self._error(400, problem)
        if method == "sendMessage":
            message_id = len(self.messages) + 1
        elif method == "editMessageText":
            message_id = data.get("message_id")
            if (chat, message_id) not in self.messages:
                return self._error(400, "Bad Request: message to edit not found")
            if self.messages[(chat, message_id)] == text:
                return self._error(400, "Bad Request: message is not modified: same content")
        else:
            return self._error(404, "Not Found")
        self.messages[(chat, message_id)] = text
        return 200, {}, {"ok": True, "result": {"message_id": message_id, "text": text}}

    @staticmethod
    def _error(code: int, description: str) -> Answer:
        return code, {}, {"ok": False, "error_code": code, "description": description}


def _telegram_text_problem(text: str) -> str | None:
    import html
    import re

    if not text:
        return "Bad Request: message text is empty"
    if "<" in text or re.search(r"&(?!(?:amp|lt|gt|quot);)", text):
        return "Bad Request: can't parse entities: unsupported start tag or unescaped &"
    if len(html.unescape(text).encode("utf-16-le")) // 2 > 4096:
        return "Bad Request: message is too long"
    return None


class FakeDiscord(FakeServer):
    """A Discord webhook: POST ``/webhooks/ID/TOKEN?wait=true`` creates a message and answers
    its ``id``; PATCH ``.../messages/MID`` edits it (404 code 10008 if unknown); 401 for
    another token, 400 past 2000 characters. ``.messages[mid]`` is each message's content;
    ``.rate_limit(retry_after, times=1)`` queues Discord-style 429 answers.
    """

    webhook_id, token = "112233445566", "fake-Webhook_TOKEN.secret"

    def __init__(self) -> None:
        super().__init__()
        self.messages: dict[str, str] = {}

    def sink_url(self) -> str:
        return f"discord://{self.webhook_id}/{self.token}"

    def rate_limit(self, retry_after: float, times: int = 1) -> None:
        body = {"message": "You are being rate limited.", "retry_after": retry_after}
        self.fail_next(429, {**body, "global": False}, times, {"Retry-After": "1"})

    def answer(self, req: Recorded) -> Answer:
        parts = req.path.strip("/").split("/")
        if parts[:2] != ["webhooks", self.webhook_id]:
            return 404, {}, {"message": "Unknown Webhook", "code": 10015}
        if parts[2:3] != [self.token]:
            return 401, {}, {"message": "Invalid Webhook Token", "code": 50027}
        content = str((req.json or {}).get("content") or "")
        if not content or len(content) > 2000:
            return 400, {}, {"message": "Invalid Form Body", "code": 50035}
        if req.method == "POST" and len(parts) == 3:
            mid = str(900000 + len(self.messages))
        elif req.method == "PATCH" and parts[3:4] == ["messages"] and len(parts) == 5:
            mid = parts[4]
            if mid not in self.messages:
                return 404, {}, {"message": "Unknown Message", "code": 10008}
        else:
            return 405, {}, {"message": "405: Method Not Allowed", "code": 0}
        self.messages[mid] = content
        return 200, {}, {"id": mid, "content": content}


@dataclass
class FakeClock:
    """``clock()`` reads ``now``; ``sleep(s)`` records s in ``sleeps`` and moves ``now`` on."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _loopback_bypasses_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib sends even 127.0.0.1 through an http_proxy from the environment unless told not to
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def webhook_receiver() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    server = FakeTelegram()
    yield server
    server.stop()


@pytest.fixture
def fake_discord() -> Iterator[FakeDiscord]:
    server = FakeDiscord()
    yield server
    server.stop()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


# -- the relay as processes ----------------------------------------------------------------

SECRET = "s3cret"


def webhook(server: FakeServer) -> str:
    return f"webhook+{server.url}/hook?secret={SECRET}"


def wait_until(check: Any, timeout: float = 15.0, step: float = 0.05) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


class Relays:
    """Starts ``pulse-relay`` processes (``python -m pulse_workers``; logs in ``folder``) with
    short leases and retries; ``active()`` says which holds the lease of namespace ``test``."""

    def __init__(self, env: dict[str, str], folder: Any, client: Any) -> None:
        self.env, self.folder, self.client = env, folder, client
        self.procs: dict[str, Any] = {}

    def start(self, *args: str, name: str = "r1", lease: str = "1", **env: str) -> Any:
        import subprocess
        import sys

        log = open(self.folder / f"relay-{name}-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "pulse_workers", "--name", name, "--backoff", "0.05", *args],
            env={**self.env, "PULSE_RELAY_LEASE_SECONDS": lease, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def active(self, namespace: str = "test", group: str = "relay") -> str | None:
        holder = self.client.get(f"pulse:{{{namespace}}}:relay:{group}")
        return holder.rsplit(":", 1)[0] if holder else None

    def wait_active(self, sinks: int = 1, namespace: str = "test", timeout: float = 15.0) -> str:
        """The name of the active relay, once its sinks' groups are made."""
        key = f"pulse:{{{namespace}}}:events"

        def ready() -> bool:
            if not self.active(namespace) or not self.client.exists(key):
                return False
            return len(self.client.xinfo_groups(key)) >= sinks

        wait_until(ready, timeout)
        name = self.active(namespace)
        assert name is not None
        return name

    def stop_all(self) -> None:
        import signal

        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()


@pytest.fixture
def relays(pulse_env: dict[str, str], tmp_path: Any, redis_client: Any) -> Iterator[Relays]:
    r = Relays(pulse_env, tmp_path, redis_client)
    yield r
    r.stop_all()


class Receiver(FakeServer):
    """A webhook receiver that fails every ``fail_every``-th POST with a 500 (0: never) and
    answers after ``delay`` seconds; ``.delivered`` holds what it accepted, in order."""

    def __init__(self, fail_every: int = 0, delay: float = 0.0) -> None:
        super().__init__()
        self.fail_every, self.delay = fail_every, delay
        self.count = 0
        self.delivered: list[dict[str, Any]] = []

    def answer(self, req: Recorded) -> Answer:
        import time

        if self.delay:
            time.sleep(self.delay)
        with self._cond:
            self.count += 1
            if self.fail_every and self.count % self.fail_every == 0:
                return 500, {}, {"error": "flaky"}
            body = req.json
            self.delivered.append(
                {"id": body["event"]["id"], "kind": body["event"]["kind"], **_version(body)}
            )
        return 200, {}, {"ok": True}


def _version(body: dict[str, Any]) -> dict[str, Any]:
    return {"task": body["task"]["taskId"], "version": body["task"]["version"]}


def audit(
    stream: list[tuple[str, dict[str, str]]], delivered: list[dict[str, Any]]
) -> dict[str, int]:
    """What a receiver got against what the stream holds: events not heartbeats that never
    arrived (``lost``), arrivals with a lower version than one of the same task before them
    (``backwards``), and arrivals of an event that had arrived already (``duplicates``)."""
    expected = {eid for eid, f in stream if f["kind"] != "heartbeat"}
    got_ids = [d["id"] for d in delivered]
    highest: dict[str, int] = {}
    backwards = 0
    for d in delivered:
        if d["version"] < highest.get(d["task"], 0):
            backwards += 1
        highest[d["task"]] = max(highest.get(d["task"], 0), d["version"])
    return {
        "lost": len(expected - set(got_ids)),
        "backwards": backwards,
        "duplicates": len(got_ids) - len(set(got_ids)),
        "made_up": len(set(got_ids) - {eid for eid, _ in stream}),
    }
