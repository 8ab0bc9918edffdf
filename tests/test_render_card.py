"""The card a chat sink edits in place: the whole task in a few lines, en and zh."""

from __future__ import annotations

from datetime import datetime, timezone

from pulse.render import render_card

NOW = datetime(2026, 1, 1, 0, 12, 5, tzinfo=timezone.utc)
TASK = {
    "taskId": "t",
    "taskName": "deploy",
    "status": "running",
    "startedAt": "2026-01-01T00:00:00+00:00",
    "steps": [
        {"name": "build", "status": "done", "message": "ok"},
        {"name": "test", "status": "running", "message": "60% of suites", "progress": 60},
        {"name": "ship", "status": "pending"},
    ],
    "eta": {"remainingSeconds": 720},
}


def test_a_running_task_shows_its_step_elapsed_and_eta():
    assert render_card(TASK, "en", NOW).splitlines() == [
        "🔄 deploy",
        "███░░░░░░░ 1/3",
        "🔄 [1/3] test ██████░░░░ 60%: 60% of suites",
        "⏱ 12m5s elapsed · ≈ 12 min left",
    ]
    zh = render_card(TASK, "zh", NOW).splitlines()
    assert zh[0] == "🔄 【deploy】" and zh[-1] == "⏱ 已用 12m5s · 预计还需 12 分钟"


def test_a_finished_task_shows_its_result_and_no_eta():
    done = {
        **TASK,
        "status": "done",
        "result": "v1.2 live",
        "finishedAt": "2026-01-01T00:20:00+00:00",
        "steps": [{**s, "status": "done"} for s in TASK["steps"]],
    }
    assert render_card(done, "en", NOW).splitlines() == [
        "✅ deploy",
        "██████████ 3/3",
        "Result: v1.2 live",
        "⏱ 20m0s elapsed",
    ]
    failed = {**TASK, "status": "error", "error": "tests failed"}
    assert render_card(failed, "en", NOW).splitlines()[2] == "Error: tests failed"
