"""Other services through Apprise: its json:// against a loopback server, Slack escaping."""

from __future__ import annotations

import builtins
import json
import logging
from typing import Any

import pytest
from pulse_workers.sinks import Push, SinkError, open_sink

from pulse.errors import BadValue

apprise = pytest.importorskip("apprise")

TASK = {"taskId": "t-7", "taskName": "index <docs>", "status": "running", "steps": []}
PUSH = Push("1-0", "heartbeat", TASK, "💓 [0/1] crawl: <b>&</b> @everyone <!channel>")


def _json_url(server: Any, auth: str = "") -> str:
    return "json://" + auth + server.url.removeprefix("http://") + "/notify"


def test_json_url_delivers_through_apprise(webhook_receiver: Any) -> None:
    sink = open_sink(_json_url(webhook_receiver, "user:PASSWORD@"))
    assert "PASSWORD" not in sink.name and sink.name.startswith("json://user:***@127.0.0.1")
    sink.send(PUSH)
    (req,) = webhook_receiver.requests
    assert req.method == "POST" and req.path == "/notify"
    assert req.json["message"] == PUSH.text and req.json["title"] == "index <docs>"


def test_failed_notify_is_retryable(webhook_receiver: Any) -> None:
    webhook_receiver.fail_next(500, b"down")
    with pytest.raises(SinkError) as info:
        open_sink(_json_url(webhook_receiver)).send(PUSH)
    assert not info.value.permanent


def test_slack_text_is_escaped_exactly_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent: list[dict] = []

    class Answer:
        status_code, content, text = 200, b"ok", "ok"

    def fake_request(*args: Any, **kwargs: Any) -> Answer:
        sent.append(json.loads(kwargs["data"]))
        return Answer()

    # Slack's host is on the internet: catch the request Apprise would make instead.
    monkeypatch.setattr("requests.request", fake_request)
    monkeypatch.setattr("requests.post", fake_request)
    sink = open_sink("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general")
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in sink.name
    sink.send(PUSH)
    (payload,) = sent
    text = json.dumps(payload, ensure_ascii=False)
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in text  # Slack shows <b>&</b> literally
    assert "&amp;lt;" not in text and "&amp;amp;" not in text  # not escaped twice
    assert "<!channel>" not in text  # a mention in user text cannot ping
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in caplog.text  # Apprise logs the URL it posts to


def test_unknown_scheme_is_bad_value() -> None:
    with pytest.raises(BadValue) as info:
        open_sink("nosuchservice://SECRET_TOKEN_1234567/x")
    assert "SECRET_TOKEN_1234567" not in str(info.value)


def test_without_apprise_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_apprise(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "apprise":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_apprise)
    with pytest.raises(BadValue) as info:
        open_sink("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    assert "live-task-pulse[apprise]" in str(info.value)
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in str(info.value)


def test_apprise_logs_do_not_name_the_secret(
    webhook_receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    webhook_receiver.fail_next(500, b"down")
    with pytest.raises(SinkError):
        open_sink(_json_url(webhook_receiver, "user:PASSWORD@")).send(PUSH)
    with pytest.raises(BadValue):  # Apprise logs the raw URL of one it cannot load
        open_sink("slack://ONLY_ONE_TOKEN_x9")
    assert "Could not load" in caplog.text
    assert "PASSWORD" not in caplog.text and "ONLY_ONE_TOKEN_x9" not in caplog.text
