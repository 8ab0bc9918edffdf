"""The ETA, the wait and the history as people read them, in en and zh."""

from __future__ import annotations

import pytest

from pulse.render import eta_text, render_cli, render_history, render_push, render_status
from tests.test_render import NOW, task


def eta(seconds: int, runs: int = 3) -> dict:
    return {"remainingSeconds": seconds, "finishAt": "2024-05-01T16:30:00+08:00", "runs": runs}


@pytest.mark.parametrize(
    ("seconds", "en", "zh"),
    [
        (0, "≈ 0 s left", "预计还需 0 秒"),
        (42, "≈ 42 s left", "预计还需 42 秒"),
        (60, "≈ 1 min left", "预计还需 1 分钟"),
        (61, "≈ 2 min left", "预计还需 2 分钟"),  # minutes round up
        (720, "≈ 12 min left", "预计还需 12 分钟"),
        (5400, "≈ 90 min left", "预计还需 90 分钟"),
        (5401, "≈ 1 h 31 min left", "预计还需 1 小时 31 分钟"),
        (7500, "≈ 2 h 5 min left", "预计还需 2 小时 5 分钟"),
        (7200, "≈ 2 h left", "预计还需 2 小时"),
    ],
)
def test_eta_text(seconds, en, zh):
    snapshot = task("done", "running", "pending", eta=eta(seconds))
    assert eta_text(snapshot, "en") == en
    assert eta_text(snapshot, "zh_CN") == zh


def test_no_eta_text_without_one_or_once_finished():
    assert eta_text(task("running", "pending", "pending", eta=None)) is None
    assert eta_text(task("running", "pending", "pending")) is None  # a seed file has no eta
    assert eta_text(task("done", "done", "done", status="done", eta=eta(5))) is None
    assert eta_text(task("running", eta={"remainingSeconds": "soon"})) is None


def test_the_progress_push_carries_the_eta():
    snapshot = task("done", "running", "pending", eta=eta(720))
    snapshot["steps"][0]["message"] = "built"
    assert render_push("next", snapshot, "en", NOW) == (
        "✅ [1/3] build done (built)\n🔄 → test\n≈ 12 min left"
    )
    assert render_push("next", snapshot, "zh", NOW) == (
        "✅ [1/3] build完成（built）\n🔄 → test\n预计还需 12 分钟"
    )
    snapshot["eta"] = None
    assert render_push("next", snapshot, "en", NOW) == "✅ [1/3] build done (built)\n🔄 → test"


def test_the_wait_push_and_line():
    snapshot = task("done", "running", "pending", waiting=True, question="apply to prod?")
    assert render_push("wait", snapshot, "en", NOW) == (
        "⏸ [deploy] waiting for you\napply to prod?\nStep: test [1/3]"
    )
    assert render_push("wait", snapshot, "zh", NOW) == (
        "⏸ 【deploy】等你回复\napply to prod?\n当前步骤: test [1/3]"
    )
    assert render_cli("wait", snapshot, "en") == "⏸ [1/3] test: apply to prod?"


def test_status_shows_the_wait_and_the_eta():
    snapshot = task("done", "running", "pending", waiting=True, question="ok?", eta=eta(90))
    assert render_status([snapshot], "en", NOW).split("\n")[4:6] == [
        "  ⏸ waiting for you: ok?",
        "  ≈ 2 min left",
    ]
    assert "  预计还需 2 分钟" in render_status([snapshot], "zh", NOW)


def test_history_lines():
    row = {"taskName": "nightly", "step": "dump", "runs": 12, "median": 600.0, "p95": 750.5,
           "quietMedian": 590.0, "quietP95": 745.0}  # fmt: skip
    assert render_history([row], "en") == (
        "nightly\n  dump: 12 runs, took median 10m0s / p95 12m30s, "
        "longest quiet median 9m50s / p95 12m25s"
    )
    assert render_history([row], "zh").startswith("nightly\n  dump: 12次, 用时中位 10m0s")
    assert render_history([], "en") == "no history yet"
