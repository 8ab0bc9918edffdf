"""discord:// against the fake webhook API: no mentions, edits in place, cutting, errors."""

from __future__ import annotations

from typing import Any

import pytest
from pulse_workers.sinks import DictMemory, Push, SinkError, open_sink
from pulse_workers.sinks.discord import fit

from pulse.settings import Settings

TASK = {"taskId": "t-42", "taskName": "nightly", "status": "running", "version": 1, "steps": []}


def _sink(fake: Any, clock: Any, memory: DictMemory | None = None, url: str = "") -> Any:
    settings = Settings(discord_api=fake.url)
    sink = open_sink(url or fake.sink_url(), memory=memory or DictMemory(), settings=settings)
    sink.pacer.clock, sink.pacer.sleep = clock, clock.sleep
    return sink


def _push(kind: str, event_id: str, text: str, card: bool = True) -> Push:
    """``card``: the edited message shows a card of its own (else the text: what a push
    without one shows)."""
    return Push(event_id, kind, TASK, text, card=f"card {event_id}" if card else "")


def test_posts_without_mentions_then_patches_in_place(fake_discord: Any, fake_clock: Any) -> None:
    memory = DictMemory()
    sink = _sink(fake_discord, fake_clock, memory)
    sink.send(_push("create", "1-0", "🚀 Started [nightly] @everyone <@123> **hi**"))
    sink.send(_push("next", "2-0", "✅ [1/2] build done"))
    post, card, patch = fake_discord.requests  # the start notifies; the card is edited
    assert (post.method, post.path, post.query) == (
        "POST",
        f"/webhooks/{fake_discord.webhook_id}/{fake_discord.token}",
        {"wait": "true"},
    )
    assert post.json == {
        "content": "🚀 Started [nightly] @everyone <@123> **hi**",
        "allowed_mentions": {"parse": []},
    }
    mid = memory.data[f"discord:{fake_discord.webhook_id}:t-42"]
    assert patch.method == "PATCH" and patch.path.endswith(f"/messages/{mid}")
    assert patch.json["allowed_mentions"] == {"parse": []}
    assert card.json["content"] == "card 1-0"
    assert fake_discord.messages[mid] == "card 2-0"
    assert patch.header("User-Agent") == "live-task-pulse"


def test_done_posts_fresh_and_patches_the_kept(fake_discord: Any, fake_clock: Any) -> None:
    memory = DictMemory()
    sink = _sink(fake_discord, fake_clock, memory)
    sink.send(_push("create", "1-0", "🚀 Started"))
    sink.send(_push("stall", "2-0", "⚠️ may be stuck"))
    assert [r.method for r in fake_discord.requests] == ["POST", "POST", "POST", "PATCH"]
    assert sorted(fake_discord.messages.values()) == ["card 2-0", "⚠️ may be stuck", "🚀 Started"]


def test_content_is_cut_to_2000(fake_discord: Any, fake_clock: Any) -> None:
    _sink(fake_discord, fake_clock).send(_push("heartbeat", "1-0", "y" * 5000, card=False))
    (content,) = fake_discord.messages.values()
    assert len(content) == 2000 and content.endswith("…")
    assert fit("short") == "short" and fit("") == "…"


def test_429_json_retry_after(fake_discord: Any, fake_clock: Any) -> None:
    sink = _sink(fake_discord, fake_clock)
    fake_discord.rate_limit(2.5)
    with pytest.raises(SinkError) as info:
        sink.send(_push("create", "1-0", "hi"))
    assert info.value.retry_after == 2.5 and not info.value.permanent
    sink.send(_push("create", "1-0", "hi"))
    assert fake_clock.sleeps == [2.5]


def test_429_header_retry_after(fake_discord: Any, fake_clock: Any) -> None:
    fake_discord.fail_next(429, b"slow down", headers={"Retry-After": "4"})
    with pytest.raises(SinkError) as info:
        _sink(fake_discord, fake_clock).send(_push("create", "1-0", "hi"))
    assert info.value.retry_after == 4.0


def test_rate_limit_headers_pace_the_next_call(fake_discord: Any, fake_clock: Any) -> None:
    sink = _sink(fake_discord, fake_clock)
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "1.5"}
    fake_discord.fail_next(200, {"id": "5"}, headers=headers)
    sink.send(_push("create", "1-0", "hi"))
    sink.send(_push("next", "2-0", "ho"))
    assert fake_clock.sleeps == [1.5]


@pytest.mark.parametrize("what", ["token", "webhook", "forbidden"])
def test_auth_and_missing_webhook_are_permanent(
    fake_discord: Any, fake_clock: Any, what: str
) -> None:
    url = {
        "token": f"discord://{fake_discord.webhook_id}/wrong-token",
        "webhook": f"discord://999/{fake_discord.token}",
        "forbidden": "",
    }[what]
    if what == "forbidden":
        fake_discord.fail_next(403, {"message": "Missing Access", "code": 50001})
    with pytest.raises(SinkError) as info:
        _sink(fake_discord, fake_clock, url=url).send(_push("create", "1-0", "hi"))
    assert info.value.permanent
    assert fake_discord.token not in str(info.value) and "wrong-token" not in str(info.value)


def test_server_error_is_retryable(fake_discord: Any, fake_clock: Any) -> None:
    fake_discord.fail_next(503, b"upstream")
    with pytest.raises(SinkError) as info:
        _sink(fake_discord, fake_clock).send(_push("create", "1-0", "hi"))
    assert not info.value.permanent


def test_deleted_message_is_posted_again(fake_discord: Any, fake_clock: Any) -> None:
    memory = DictMemory({f"discord:{fake_discord.webhook_id}:t-42": "123"})
    _sink(fake_discord, fake_clock, memory).send(_push("heartbeat", "3-0", "💓"))
    assert [r.method for r in fake_discord.requests] == ["PATCH", "POST"]
    new = memory.data[f"discord:{fake_discord.webhook_id}:t-42"]
    assert fake_discord.messages == {new: "card 3-0"} and new != "123"


def test_name_hides_the_token(fake_discord: Any, fake_clock: Any) -> None:
    sink = _sink(fake_discord, fake_clock)
    assert sink.name == f"discord://{fake_discord.webhook_id}/***"
