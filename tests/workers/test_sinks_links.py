"""With PULSE_WEB_URL, pushes link to the task on the dashboard (``/?task=ID``): a ``url``
field in webhook bodies, a link button on Telegram and Discord, never a line of the text."""

from __future__ import annotations

from typing import Any

from pulse.render import render_push
from pulse.settings import Settings
from workers.sinks import DictMemory, Push, open_sink

TASK = {
    "taskId": "deploy-20260101-120000-ab12",
    "taskName": "deploy",
    "status": "running",
    "steps": [{"name": "build", "status": "running"}, {"name": "ship", "status": "pending"}],
}
WEB = "https://pulse.example.com"
LINK = f"{WEB}/?task={TASK['taskId']}"


def _push(kind: str, event_id: str) -> Push:
    return Push(event_id, kind, TASK, render_push(kind, TASK))


def test_webhook_body_carries_the_url(webhook_receiver: Any) -> None:
    url = f"webhook+{webhook_receiver.url}/hook"
    open_sink(url, settings=Settings(web_url=WEB)).send(_push("create", "1-0"))
    open_sink(url, settings=Settings()).send(_push("create", "2-0"))
    with_link, without = (r.json for r in webhook_receiver.wait_for(2))
    assert with_link["url"] == LINK and "url" not in without
    assert with_link["text"] == without["text"]  # the text itself is the same


def test_telegram_posts_and_edits_with_a_link_button(fake_telegram: Any, fake_clock: Any) -> None:
    settings = Settings(telegram_api=fake_telegram.url, web_url=WEB)
    sink = open_sink(fake_telegram.sink_url(), memory=DictMemory(), settings=settings)
    sink.pacer.clock, sink.pacer.sleep = fake_clock, fake_clock.sleep
    sink.send(_push("create", "1-0"))  # its own message, then the card
    sink.send(_push("next", "2-0"))  # the card, edited
    calls = fake_telegram.calls
    assert [c[0] for c in calls] == ["sendMessage", "sendMessage", "editMessageText"]
    button = {"inline_keyboard": [[{"text": "🔗 pulse", "url": LINK}]]}
    for _, payload in calls:
        assert payload["reply_markup"] == button
        assert LINK not in payload["text"] and payload["text"].count("\n") <= 4


def test_telegram_leaves_out_a_button_to_a_plain_http_address(
    fake_telegram: Any, fake_clock: Any
) -> None:
    settings = Settings(telegram_api=fake_telegram.url, web_url="http://127.0.0.1:8765")
    sink = open_sink(fake_telegram.sink_url(), memory=DictMemory(), settings=settings)
    sink.pacer.clock, sink.pacer.sleep = fake_clock, fake_clock.sleep
    sink.send(_push("create", "1-0"))
    assert "reply_markup" not in fake_telegram.calls[0][1]


def test_discord_posts_and_edits_with_a_link_button(fake_discord: Any, fake_clock: Any) -> None:
    settings = Settings(discord_api=fake_discord.url, web_url=WEB)
    sink = open_sink(fake_discord.sink_url(), memory=DictMemory(), settings=settings)
    sink.pacer.clock, sink.pacer.sleep = fake_clock, fake_clock.sleep
    sink.send(_push("create", "1-0"))  # its own message, then the card
    sink.send(_push("next", "2-0"))  # the card, edited
    requests = fake_discord.wait_for(3)
    assert [r.method for r in requests] == ["POST", "POST", "PATCH"]
    for request in requests:
        assert request.query.get("with_components") == "true"
        (row,) = request.json["components"]
        assert row["components"] == [{"type": 2, "style": 5, "label": "pulse", "url": LINK}]
        assert LINK not in request.json["content"]
