"""webhook+http(s):// against a loopback receiver: body, headers, signature, failures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from typing import Any

import pytest
from pulse_workers.sinks import Push, SinkError, open_sink

TASK = {"taskId": "t-1", "taskName": "backup", "status": "running", "version": 3, "steps": []}
PUSH = Push("1700000000000-0", "heartbeat", TASK, "💓 [0/1] dump: 40% <b>&", "2025-01-01T00:00:00Z")


def _url(receiver: Any, path: str = "/hook?team=a%20b&secret=s3cr%C3%A9t", auth: str = "") -> str:
    return f"webhook+{receiver.url.replace('://', '://' + auth)}{path}"


def test_posts_signed_json(webhook_receiver: Any) -> None:
    sink = open_sink(_url(webhook_receiver))
    sink.send(PUSH)
    (req,) = webhook_receiver.requests
    assert (req.method, req.path, req.query) == ("POST", "/hook", {"team": "a b"})
    assert req.json == {
        "event": {"id": PUSH.event_id, "kind": "heartbeat", "at": PUSH.at},
        "task": TASK,
        "text": PUSH.text,
    }
    assert req.header("Content-Type") == "application/json"
    assert req.header("X-Pulse-Event-Id") == PUSH.event_id
    assert req.header("User-Agent") == "live-task-pulse"
    # recomputed here from the raw bytes received, the way a receiver must check it
    expected = hmac.new("s3crét".encode(), req.body, hashlib.sha256).hexdigest()
    assert req.header("X-Pulse-Signature") == f"sha256={expected}"
    assert webhook_receiver.signature_ok(req, "s3crét")
    assert not webhook_receiver.signature_ok(req, "other")
    assert "s3cr" not in sink.name and "secret=***" in sink.name


def test_no_secret_no_signature_and_basic_auth(webhook_receiver: Any) -> None:
    sink = open_sink(_url(webhook_receiver, "/plain", auth="bob:pa%3Ass@"))
    sink.send(PUSH)
    (req,) = webhook_receiver.requests
    assert req.header("X-Pulse-Signature") is None
    assert req.header("Authorization") == "Basic " + base64.b64encode(b"bob:pa:ss").decode()
    assert "pa%3Ass" not in sink.name and "pa:ss" not in sink.name


def test_429_retry_after_is_surfaced(webhook_receiver: Any) -> None:
    webhook_receiver.fail_next(429, {"error": "slow down"}, headers={"Retry-After": "7"})
    sink = open_sink(_url(webhook_receiver))
    with pytest.raises(SinkError) as info:
        sink.send(PUSH)
    assert not info.value.permanent and info.value.retry_after == 7.0
    assert "429" in str(info.value)
    sink.send(PUSH)  # the next try goes through
    assert len(webhook_receiver.requests) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_errors_are_retryable(webhook_receiver: Any, status: int) -> None:
    webhook_receiver.fail_next(status, b"busy")
    with pytest.raises(SinkError) as info:
        open_sink(_url(webhook_receiver)).send(PUSH)
    assert not info.value.permanent and info.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 301])
def test_client_errors_are_permanent(webhook_receiver: Any, status: int) -> None:
    headers = {"Location": "http://127.0.0.1:1/elsewhere"} if status == 301 else {}
    webhook_receiver.fail_next(status, {"error": "nope"}, headers=headers)
    with pytest.raises(SinkError) as info:
        open_sink(_url(webhook_receiver)).send(PUSH)
    assert info.value.permanent and str(status) in str(info.value)
    assert len(webhook_receiver.requests) == 1  # a redirect is reported, not followed


def test_unreachable_is_retryable_and_keeps_secrets() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = open_sink(f"webhook+http://u:PASSWORD@127.0.0.1:{port}/x?secret=SECRET")
    with pytest.raises(SinkError) as info:
        sink.send(PUSH)
    assert not info.value.permanent
    text = str(info.value) + repr(info.value)
    assert "SECRET" not in text and "PASSWORD" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_error_body_echoing_the_secret_is_scrubbed(webhook_receiver: Any) -> None:
    webhook_receiver.fail_next(400, {"error": "bad signature for secret Sup3rS3cret"})
    with pytest.raises(SinkError) as info:
        open_sink(_url(webhook_receiver, "/h?secret=Sup3rS3cret")).send(PUSH)
    assert "Sup3rS3cret" not in str(info.value) and "bad signature" in str(info.value)


def test_body_is_compact_utf8_json(webhook_receiver: Any) -> None:
    open_sink(_url(webhook_receiver)).send(PUSH)
    body = webhook_receiver.requests[0].body
    assert json.loads(body.decode("utf-8"))["text"] == PUSH.text
    assert "💓".encode() in body
