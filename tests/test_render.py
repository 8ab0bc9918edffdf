"""Examples of every text pulse shows: pushes, CLI lines and status blocks, in en and zh."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pulse.render import (
    clean,
    counts,
    current_step,
    format_duration,
    progress_bar,
    render_cli,
    render_push,
    render_status,
)

# 16:03:10 at +08:00 is 08:03:10 UTC; NOW is 3m5s after that.
NOW = datetime(2024, 5, 1, 8, 6, 15, tzinfo=timezone.utc)


def task(*statuses, **fields):
    """A snapshot with steps build/test/ship in the given statuses."""
    names = ["build", "test", "ship"]
    snapshot = {
        "taskId": "deploy-20240501-160000-ab12",
        "taskName": "deploy",
        "status": "running",
        "stalled": False,
        "startedAt": "2024-05-01T16:00:00+08:00",
        "updatedAt": "2024-05-01T16:03:10+08:00",
        "finishedAt": None,
        "steps": [{"name": n, "status": s} for n, s in zip(names, statuses, strict=False)],
        "error": None,
        "result": None,
        "version": 1,
        "namespace": "default",
        "host": "h1",
        "agent": None,
        "stallSeconds": 180,
    }
    snapshot.update(fields)
    return snapshot


def with_step(snapshot, index, **fields):
    snapshot["steps"][index].update(fields)
    return snapshot


# ─── durations, bars, counts ────────────────────────────────


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (42, "42s"),
        (185, "3m5s"),
        (3720, "1h2m"),
        (93600, "1d2h"),
        (-5, "0s"),
        (42.9, "42s"),
        (183600, "2d3h"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_duration_of_nonsense_is_zero():
    assert format_duration(float("nan")) == "0s"


def test_progress_bar():
    assert progress_bar(0, 3) == "░░░░░░░░░░"
    assert progress_bar(1, 3) == "███░░░░░░░"
    assert progress_bar(3, 3) == "██████████"
    assert progress_bar(2, 4, width=4) == "██░░"
    assert progress_bar(0, 0) == "░░░░░░░░░░"
    assert progress_bar(5, 3) == "██████████"


def test_counts_and_current_step():
    t = task("done", "running", "pending")
    assert counts(t) == (1, 3)
    assert current_step(t)["name"] == "test"
    assert current_step(task("done", "error", "pending"))["name"] == "test"
    assert current_step(task("done", "done", "done")) is None
    assert counts({"steps": []}) == (0, 0)


# ─── pushes ────────────────────────────────────────────────


def test_push_start():
    t = task("running", "pending", "pending")
    assert render_push("create", t) == (
        "🚀 Started [deploy]\n📋 3 steps: build → test → ship\n🔄 Now: build"
    )
    assert render_push("create", t, "zh") == (
        "🚀 开始【deploy】\n📋 共3步: build → test → ship\n🔄 当前: build"
    )


def test_push_start_of_one_step():
    t = task("running")
    assert render_push("create", t) == "🚀 Started [deploy]\n📋 1 step: build\n🔄 Now: build"


def test_push_progress():
    t = with_step(task("done", "running", "pending"), 0, message="42 files")
    assert render_push("next", t) == "✅ [1/3] build done (42 files)\n🔄 → test"
    assert render_push("next", t, "zh") == "✅ [1/3] build完成（42 files）\n🔄 → test"


def test_push_progress_leaves_out_missing_message():
    t = task("done", "running", "pending")
    assert render_push("next", t) == "✅ [1/3] build done\n🔄 → test"
    assert render_push("next", t, "zh") == "✅ [1/3] build完成\n🔄 → test"


def test_push_progress_leaves_out_missing_next_step():
    t = task("done", "done", "pending")
    assert render_push("next", t) == "✅ [2/3] test done"


def test_push_next_that_finished_the_task_is_the_complete_text():
    t = task("done", "done", "done", status="done", finishedAt="2024-05-01T16:03:05+08:00")
    assert render_push("next", t) == "🎉 [deploy] Finished! (3m5s)"
    assert render_push("next", t, "zh") == "🎉 【deploy】完成！(3m5s)"


def test_push_heartbeat():
    t = with_step(task("done", "running", "pending"), 1, message="60%")
    assert render_push("heartbeat", t) == "💓 [1/3] test: 60%"
    assert render_push("heartbeat", t, "zh") == "💓 [1/3] test: 60%"


def test_push_heartbeat_with_progress():
    t = with_step(task("done", "running", "pending"), 1, message="unit", progress=40)
    assert render_push("heartbeat", t) == "💓 [1/3] test ████░░░░░░ 40%: unit"
    with_step(t, 1, message=None, progress=95)
    assert render_push("heartbeat", t) == "💓 [1/3] test █████████░ 95%"
    with_step(t, 1, progress=99.6)  # the bar follows the rounded percent, so they agree
    assert render_push("heartbeat", t) == "💓 [1/3] test ██████████ 100%"


def test_push_heartbeat_without_message():
    assert render_push("heartbeat", task("running", "pending")) == "💓 [0/2] build"


def test_push_complete():
    t = task(
        "done",
        "done",
        "done",
        status="done",
        result="https://x.io/1",
        finishedAt="2024-05-01T16:03:05+08:00",
    )
    assert render_push("done", t) == "🎉 [deploy] Finished! (3m5s)\nResult: https://x.io/1"
    assert render_push("done", t, "zh") == "🎉 【deploy】完成！(3m5s)\n结果: https://x.io/1"


def test_push_complete_without_result():
    t = task("done", status="done", finishedAt="2024-05-01T17:02:00+08:00")
    assert render_push("done", t) == "🎉 [deploy] Finished! (1h2m)"
    assert render_push("done", t, "zh") == "🎉 【deploy】完成！(1h2m)"


def test_push_error():
    t = task("done", "error", "pending", status="error", error="login expired")
    assert render_push("error", t) == "❌ [deploy] Failed\nError: login expired\nStep: test [1/3]"
    assert render_push("error", t, "zh") == (
        "❌ 【deploy】失败\n错误: login expired\n当前步骤: test [1/3]"
    )


def test_push_error_leaves_out_missing_parts():
    t = task(status="error")
    assert render_push("error", t) == "❌ [deploy] Failed"


def test_push_stall():
    t = task("done", "running", "pending", stalled=True)
    assert render_push("stall", t, now=NOW) == (
        "⚠️ [deploy] may be stuck\nLast update: 16:03:10 (3m5s ago)\nStep: test [1/3]"
    )
    assert render_push("stall", t, "zh", now=NOW) == (
        "⚠️ 【deploy】可能卡住了\n最后更新: 16:03:10（3m5s前）\n当前步骤: test [1/3]"
    )


def test_push_stall_reads_z_times_and_odd_fractions():
    t = task("running", updatedAt="2024-05-01T08:03:10.12Z")
    assert render_push("stall", t, now=NOW).splitlines()[1] == "Last update: 08:03:10 (3m4s ago)"


def test_push_resume():
    t = with_step(task("done", "running", "pending"), 1, message="retrying")
    assert render_push("resume", t) == "▶️ [deploy] is moving again\n🔄 [1/3] test: retrying"
    assert render_push("resume", t, "zh") == "▶️ 【deploy】恢复运行\n🔄 [1/3] test: retrying"


def test_push_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        render_push("party", task("running"))


def test_push_never_exceeds_three_lines():
    t = task(
        "done",
        "done",
        status="done",
        result="line1\nline2\nline3\nline4",
        finishedAt="2024-05-01T16:00:42+08:00",
    )
    assert render_push("done", t) == "🎉 [deploy] Finished! (42s)\nResult: line1 line2 line3 line4"
    t = with_step(task("done", "running"), 0, message="a\nb\nc\nd")
    assert render_push("next", t) == "✅ [1/2] build done (a b c d)\n🔄 → test"
    t = task("error", status="error", error="x\ny\nz")
    assert len(render_push("error", t).splitlines()) == 3


def test_push_strips_control_characters():
    t = task("running", taskName="\x1b[31mdeploy\x1b[0m\x00")
    assert render_push("create", t).splitlines()[0] == "🚀 Started [deploy]"


# ─── CLI lines ─────────────────────────────────────────────


def test_cli_create_prints_the_id_alone():
    assert render_cli("create", task("running")) == "deploy-20240501-160000-ab12"


def test_cli_next():
    t = task("done", "running", "pending")
    assert render_cli("next", t) == "[1/3] ███░░░░░░░ → test"
    assert render_cli("next", t, "zh") == "[1/3] ███░░░░░░░ → test"


def test_cli_next_that_finished_the_task():
    t = task("done", "done", status="done", finishedAt="2024-05-01T16:03:05+08:00")
    assert render_cli("next", t) == "🎉 [deploy] Finished! (3m5s)"


def test_cli_heartbeat():
    t = with_step(task("done", "running", "pending"), 1, message="60%")
    assert render_cli("heartbeat", t) == "💓 [1/3] test: 60%"
    with_step(t, 1, progress=40, message=None)
    assert render_cli("heartbeat", t, "zh") == "💓 [1/3] test ████░░░░░░ 40%"


def test_cli_done():
    t = task("done", status="done", result="ok", finishedAt="2024-05-01T16:03:05+08:00")
    assert render_cli("done", t) == "🎉 [deploy] Finished! (3m5s)"
    assert render_cli("done", t, "zh") == "🎉 【deploy】完成！(3m5s)"


def test_cli_error():
    t = task("error", status="error", error="login expired")
    assert render_cli("error", t) == "❌ [deploy] Failed: login expired"
    assert render_cli("error", t, "zh") == "❌ 【deploy】失败: login expired"


def test_cli_unknown_verb_is_refused():
    with pytest.raises(ValueError):
        render_cli("status", task("running"))


# ─── status ────────────────────────────────────────────────


def three_tasks():
    running = with_step(task("done", "running", "pending"), 0, message="42 files")
    with_step(running, 1, progress=40, message="unit")
    done = task(
        "done",
        "done",
        taskId="report-1",
        taskName="report",
        status="done",
        result="sent",
        finishedAt="2024-05-01T16:03:05+08:00",
    )
    failed = task(
        "done", "error", taskId="sync-1", taskName="sync", status="error", error="login expired"
    )
    with_step(failed, 1, message="login expired")
    return [running, done, failed]


def test_status_en():
    assert render_status(three_tasks(), now=NOW) == (
        "🔄 deploy [1/3] ███░░░░░░░ (deploy-20240501-160000-ab12)\n"
        "  ✅ build — 42 files\n"
        "  🔄 test 40% — unit\n"
        "  ⏳ ship\n"
        "\n"
        "✅ report [2/2] ██████████ (report-1)\n"
        "  ✅ build\n"
        "  ✅ test\n"
        "  Result: sent\n"
        "\n"
        "❌ sync [1/2] █████░░░░░ (sync-1)\n"
        "  ✅ build\n"
        "  ❌ test — login expired\n"
        "  Error: login expired\n"
        "\n"
        "3 tasks: 1 running, 1 done, 1 error, 0 stalled"
    )


def test_status_zh():
    text = render_status(three_tasks(), "zh", now=NOW)
    assert "  结果: sent\n" in text
    assert "  错误: login expired\n" in text
    assert text.endswith("\n\n共3个任务：运行中1，完成1，失败1，卡住0")


def test_status_stalled_task():
    t = task("running", "pending", stalled=True)
    assert render_status([t], now=NOW) == (
        "⚠️ deploy [0/2] ░░░░░░░░░░ (deploy-20240501-160000-ab12)\n"
        "  🔄 build\n"
        "  ⏳ test\n"
        "  no update for 3m5s\n"
        "\n"
        "1 task: 0 running, 0 done, 0 error, 1 stalled"
    )
    assert render_status([t], "zh", now=NOW).endswith(
        "  已3m5s无更新\n\n共1个任务：运行中0，完成0，失败0，卡住1"
    )


def test_status_without_tasks():
    assert render_status([]) == "no tasks"
    assert render_status([], "zh") == "没有任务"
    assert render_status([], "zh_CN.UTF-8") == "没有任务"


def test_status_strips_control_characters_from_user_text():
    t = with_step(task("running"), 0, message="ok\x1b]0;pwned\x07\r")
    assert render_status([t], now=NOW).splitlines()[1] == "  🔄 build — ok"


def test_status_with_naive_now():
    """A naive time (no offset) is read as local time, in the snapshot and in `now`."""
    local_now = datetime.now()
    t = task("running", stalled=True, updatedAt=(local_now - timedelta(seconds=42)).isoformat())
    assert render_status([t], now=local_now).splitlines()[2] == "  no update for 42s"


# ─── clean ─────────────────────────────────────────────────


def test_clean_removes_escapes_and_controls():
    assert clean("\x1b[31mred\x1b[0m") == "red"
    assert clean("\x1b]0;title\x07text") == "text"
    assert clean("a\x00b") == "ab"
    assert clean("a\x9bb") == "a"  # 8-bit CSI: the byte after it is its final byte
    assert clean("a\x9b31mb") == "ab"
    assert clean("x\x9b") == "x"


def test_clean_keeps_newlines_tabs_and_unicode():
    assert clean("line 1\n\tline 2 ✅ 完成") == "line 1\n\tline 2 ✅ 完成"
    assert clean("a\rb\x7fc\x85d") == "abcd"
