"""tgram:// against the fake Bot API: one message per task, escaping, cutting, errors, pacing."""

from __future__ import annotations

import html
import logging
import socket
from typing import Any

import pytest
from pulse_workers.sinks import DictMemory, Push, SinkError, open_sink
from pulse_workers.sinks._http import Pacer
from pulse_workers.sinks.telegram import fit

from pulse.render import render_push
from pulse.settings import Settings

CHAT = "-100777"
TASK = {
    "taskId": "agent-run-20250101-000000-beef",
    "taskName": "agent run",
    "status": "running",
    "version": 1,
    "steps": [{"name": "fetch", "status": "running"}, {"name": "write", "status": "pending"}],
}
KEY = f"tgram:{CHAT}:{TASK['taskId']}"
HOSTILE = "<b>bold</b> & co; MarkdownV2 specials _*[]()~>#+-=|{}.! @everyone &amp;"


def _sink(fake: Any, clock: Any, memory: DictMemory | None = None, url: str = "") -> Any:
    settings = Settings(telegram_api=fake.url)
    sink = open_sink(url or fake.sink_url(CHAT), memory=memory or DictMemory(), settings=settings)
    sink.pacer.clock, sink.pacer.sleep = clock, clock.sleep
    return sink


def _push(kind: str, event_id: str, text: str | None = None, card: bool = True) -> Push:
    """``card``: the edited message shows a card of its own (else the text)."""
    text = render_push(kind, TASK) if text is None else text
    return Push(event_id, kind, TASK, text, card=f"card {event_id}" if card else "")


def test_one_message_per_task_edited_in_place(fake_telegram: Any, fake_clock: Any) -> None:
    memory = DictMemory()
    sink = _sink(fake_telegram, fake_clock, memory)
    sink.send(_push("create", "1-0"))  # the start text notifies, then the task's card
    sink.send(_push("heartbeat", "2-0", "💓 [0/2] fetch: 10%"))
    sink.send(_push("next", "3-0", "✅ [1/2] fetch done\n🔄 → write"))
    assert memory.data[KEY] == "2"
    sink.send(_push("done", "4-0", "🎉 [agent run] Finished! (3m5s)"))
    methods = [m for m, _ in fake_telegram.calls]
    assert methods == ["sendMessage"] * 2 + ["editMessageText"] * 2 + [
        "sendMessage",
        "editMessageText",
    ]
    first = fake_telegram.calls[0]
    assert first[1] == {
        "chat_id": int(CHAT),
        "text": html.escape(render_push("create", TASK), quote=False),
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }
    assert all(p["message_id"] == 2 for m, p in fake_telegram.calls if m == "editMessageText")
    # the card shows the final state; the start and done messages notified the user
    assert fake_telegram.messages == {
        (CHAT, 1): html.escape(render_push("create", TASK), quote=False),
        (CHAT, 2): "card 4-0",
        (CHAT, 3): "🎉 [agent run] Finished! (3m5s)",
    }


def test_error_as_first_push_notifies_and_posts_the_card(fake_telegram: Any, fake_clock: Any):
    memory = DictMemory()
    _sink(fake_telegram, fake_clock, memory).send(_push("error", "9-0", "❌ [agent run] Failed"))
    assert [m for m, _ in fake_telegram.calls] == ["sendMessage", "sendMessage"]
    assert memory.data[KEY] == "2" and fake_telegram.messages[(CHAT, 2)] == "card 9-0"


def test_hostile_text_is_escaped_and_survives(fake_telegram: Any, fake_clock: Any) -> None:
    _sink(fake_telegram, fake_clock).send(_push("heartbeat", "1-0", HOSTILE, card=False))
    sent = fake_telegram.messages[(CHAT, 1)]  # the fake refuses raw "<" and bare "&"
    assert "<" not in sent and html.unescape(sent) == HOSTILE
    assert "_*[]()~>#+-=|{}.!".replace(">", "&gt;") in sent  # not backslash-escaped: HTML mode


def test_long_text_is_cut_to_the_limit(fake_telegram: Any, fake_clock: Any) -> None:
    sink = _sink(fake_telegram, fake_clock)
    sink.send(_push("heartbeat", "1-0", "x" * 5000, card=False))
    text = fake_telegram.messages[(CHAT, 1)]
    assert len(text) <= 4096 and text.endswith("…")
    sink.send(_push("heartbeat", "2-0", "&" * 5000, card=False))  # each "&" grows to "&amp;"
    text = fake_telegram.messages[(CHAT, 1)]
    assert len(text) <= 4096 and text.endswith("&amp;…") and set(html.unescape(text[:-1])) == {"&"}


def test_fit_counts_utf16_and_never_splits_an_entity() -> None:
    assert fit("a<b") == "a&lt;b"
    assert fit("") == "…"
    cut = fit("😀" * 3000)  # 2 UTF-16 units each
    assert len(cut.encode("utf-16-le")) // 2 <= 4096 and cut == "😀" * 2047 + "…"
    assert fit("ab<cd", limit=6) == "ab…"  # "&lt;" would not fit with the ellipsis


def test_429_surfaces_retry_after_and_holds_the_chat(fake_telegram: Any, fake_clock: Any) -> None:
    sink = _sink(fake_telegram, fake_clock)
    fake_telegram.fail_api(429, "Too Many Requests: retry after 5", retry_after=5)
    with pytest.raises(SinkError) as info:
        sink.send(_push("create", "1-0"))
    assert info.value.retry_after == 5 and not info.value.permanent
    sink.send(_push("create", "1-0"))
    assert fake_clock.sleeps == [5.0, 1.0]  # held 5 s, then the card a second after


@pytest.mark.parametrize(
    "code, description",
    [
        (403, "Forbidden: bot was blocked by the user"),
        (400, "Bad Request: chat not found"),
        (401, "Unauthorized"),
    ],
)
def test_final_errors_are_permanent(
    fake_telegram: Any, fake_clock: Any, code: int, description: str
) -> None:
    fake_telegram.fail_api(code, description)
    with pytest.raises(SinkError) as info:
        _sink(fake_telegram, fake_clock).send(_push("create", "1-0"))
    assert info.value.permanent and description in str(info.value)


def test_migrated_group_says_where_it_went(fake_telegram: Any, fake_clock: Any) -> None:
    body = {"ok": False, "error_code": 400, "description": "Bad Request: group chat was upgraded"}
    fake_telegram.fail_next(400, {**body, "parameters": {"migrate_to_chat_id": -1009}})
    with pytest.raises(SinkError) as info:
        _sink(fake_telegram, fake_clock).send(_push("create", "1-0"))
    assert info.value.permanent and "-1009" in str(info.value)


def test_redelivered_push_is_not_modified_and_ok(fake_telegram: Any, fake_clock: Any) -> None:
    sink = _sink(fake_telegram, fake_clock)
    sink.send(_push("create", "1-0"))
    sink.send(_push("create", "1-0"))  # the relay redelivers after a crash
    assert [m for m, _ in fake_telegram.calls] == ["sendMessage", "sendMessage", "editMessageText"]
    assert len(fake_telegram.messages) == 2  # notified once; the card "not modified" is fine


def test_message_to_edit_gone_posts_a_new_one(fake_telegram: Any, fake_clock: Any) -> None:
    memory = DictMemory({KEY: "99"})
    _sink(fake_telegram, fake_clock, memory).send(_push("heartbeat", "5-0", "💓 still here"))
    assert [m for m, _ in fake_telegram.calls] == ["editMessageText", "sendMessage"]
    assert memory.data[KEY] == "1"


def test_retried_done_notifies_once(fake_telegram: Any, fake_clock: Any) -> None:
    memory = DictMemory()
    sink = _sink(fake_telegram, fake_clock, memory)
    sink.send(_push("create", "1-0"))
    done = _push("done", "2-0", "🎉 done")
    fake_telegram.fail_next(200, {"ok": True, "result": {"message_id": 3}})  # the fresh post
    fake_telegram.fail_api(502, "Bad Gateway")  # then the edit of the card fails
    with pytest.raises(SinkError):
        sink.send(done)
    sink.send(done)  # the relay's retry: edit only, no second notification
    assert [m for m, _ in fake_telegram.calls] == ["sendMessage"] * 3 + ["editMessageText"] * 2


def test_pacer_spaces_messages_one_second_apart(fake_telegram: Any, fake_clock: Any) -> None:
    sink = _sink(fake_telegram, fake_clock)
    for i in range(4):
        sink.send(_push("heartbeat", f"{i}-0", f"💓 {i}"))
    assert fake_clock.sleeps == [1.0, 1.0, 1.0]
    other = _sink(fake_telegram, fake_clock, url=fake_telegram.sink_url("42"))
    other.send(_push("heartbeat", "9-0"))  # another chat has its own budget
    assert fake_clock.sleeps == [1.0, 1.0, 1.0]


def test_pacer_reserves_slots_under_contention(fake_clock: Any) -> None:
    pacer = Pacer(1.0, fake_clock, lambda s: None)  # nobody sleeps: slots must still differ
    for _ in range(3):
        pacer.wait()
    assert pacer._next == fake_clock.now + 3


def test_token_never_appears_in_errors_or_logs(
    fake_telegram: Any, fake_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake_telegram.token
    errors: list[SinkError] = []
    sink = _sink(fake_telegram, fake_clock)
    for code, description in [(429, "Too Many Requests"), (403, "Forbidden"), (500, token)]:
        fake_telegram.fail_api(code, description, retry_after=1)
        with pytest.raises(SinkError) as info:
            sink.send(_push("create", "1-0"))
        errors.append(info.value)
    fake_telegram.fail_next(502, f"<html>proxy error for /bot{token}/sendMessage</html>".encode())
    with pytest.raises(SinkError) as info:
        sink.send(_push("create", "1-0"))
    errors.append(info.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(SinkError) as info:
        open_sink(fake_telegram.sink_url(), settings=Settings(telegram_api=dead)).send(
            _push("create", "1-0")
        )
    errors.append(info.value)
    for error in errors:
        assert token not in str(error) and token not in repr(error)
        assert "123456789:" not in str(error)
    assert token not in caplog.text and token not in sink.name
