"""Fixtures of the web tests: ``pulse web`` as a real process on a free loopback port, a
small HTTP helper (stdlib only: what any client without pulse would do), and a real headless
Chromium driven by selenium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="pulse web's extra is not installed")
pytest.importorskip("uvicorn", reason="pulse web's extra is not installed")

TOKEN = "s3cret-token-for-tests"


class Answer:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Web:
    """A running ``pulse web``; ``call`` sends one request to it."""

    def __init__(self, proc: subprocess.Popen, port: int, env: dict[str, str]) -> None:
        self.proc = proc
        self.port = port
        self.env = env
        self.url = f"http://127.0.0.1:{port}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            r = conn.getresponse()
            return Answer(r.status, r.headers, r.read())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_web(env: dict[str, str], port: int, *args: str) -> Web:
    """``pulse web --port PORT ARGS`` in a process of its own, once /healthz answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulse", "web", "--port", str(port), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    web = Web(proc, port, env)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"pulse web exited {proc.returncode}: {proc.stderr.read()}")
        try:
            web.call("GET", "/healthz")
            return web
        except OSError:
            if time.monotonic() > deadline:
                web.stop()
                raise RuntimeError("pulse web did not answer within 20 s") from None
            time.sleep(0.05)


@pytest.fixture
def web_env(pulse_env: dict[str, str]) -> dict[str, str]:
    """pulse_env for the server: no token (read-only, loopback only), and no PULSE_LANG, so
    each browser's language decides the page's."""
    return {k: v for k, v in pulse_env.items() if k != "PULSE_LANG"}


@pytest.fixture
def web(web_env: dict[str, str], free_port: int) -> Iterator[Web]:
    """``pulse web`` without a token, on the test Redis."""
    server = start_web(web_env, free_port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def web_with_token(web_env: dict[str, str], free_port: int) -> Iterator[Web]:
    """``pulse web`` with PULSE_WEB_TOKEN=TOKEN: writes allowed with the header."""
    server = start_web({**web_env, "PULSE_WEB_TOKEN": TOKEN}, free_port)
    try:
        yield server
    finally:
        server.stop()


class EventStream:
    """An open /api/events: ``next_event()`` gives (id, kind, data) of the next SSE message."""

    def __init__(self, port: int, headers: dict[str, str], path: str = "/api/events") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()

    def next_event(self) -> tuple[str, str, dict]:
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("the event stream ended")
            text = line.decode().rstrip("\n")
            if text == "":
                if "data" in fields:
                    return fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])
                fields = {}
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def open_stream() -> Iterator[Any]:
    """``open_stream(web, headers)``: an EventStream, closed after the test."""
    streams: list[EventStream] = []

    def open_(web: Web, headers: dict[str, str] | None = None, path: str = "/api/events"):
        s = EventStream(web.port, headers or {}, path)
        streams.append(s)
        return s

    yield open_
    for s in streams:
        s.close()


# -- a real browser -------------------------------------------------------------------------


def chromium_paths() -> tuple[str, str] | None:
    """(browser binary, chromedriver), or None when no Chromium is installed.

    Debian's /usr/bin/chromium is a wrapper script; the binary chromedriver must start is
    behind it (``dpkg -L chromium``)."""
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    for binary in (
        os.environ.get("PULSE_TEST_CHROMIUM", ""),
        "/usr/lib/chromium/chromium",
        "/usr/lib/chromium-browser/chromium-browser",
        shutil.which("chromium") or "",
        shutil.which("google-chrome") or "",
    ):
        if binary and os.path.exists(binary) and os.path.exists(driver):
            return binary, driver
    return None


def chrome(width: int = 1280, height: int = 900, *, mobile: bool = False, lang: str = "en-US"):
    """A headless Chromium with a fresh profile; quit() removes nothing: see the fixture."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        pytest.skip("no Chromium and chromedriver installed (apt install chromium chromium-driver)")
    binary, driver = paths
    profile = tempfile.mkdtemp(prefix="pulse-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        f"--lang={lang}",
    ):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    if mobile:
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2}},
        )
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.profile_dir = profile  # type: ignore[attr-defined]
    return browser


@pytest.fixture
def browser() -> Iterator[Any]:
    b = chrome()
    try:
        yield b
    finally:
        b.quit()
        shutil.rmtree(b.profile_dir, ignore_errors=True)


def wait_until(check: Any, timeout: float = 10.0, what: str = "the page") -> Any:
    """Polls ``check()`` until it returns something true (its value), or fails the test."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 - an element not there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} did not get there within {timeout} s (last: {last!r})")


def mirror_has_no_journal(env: dict[str, str]) -> bool:
    return not any(Path(env["PULSE_DIR"]).rglob(".journal.jsonl"))
