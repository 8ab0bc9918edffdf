"""The pure model: ids, input checks, transitions and seed files."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from pulse import model
from pulse.errors import AmbiguousId, BadValue, TaskFinished, TaskNotFound

NOW = "2026-11-25T10:00:00+08:00"
LATER = "2026-11-25T10:05:00+08:00"


def make(steps=("build", "test", "ship")) -> model.Task:
    return model.new_task(
        "deploy-1",
        "deploy",
        list(steps),
        NOW,
        stall_seconds=180,
        namespace="default",
        host="h",
        agent=None,
    )


def test_make_id_has_the_seed_shape():
    when = datetime(2026, 11, 25, 10, 0, 0, tzinfo=timezone.utc)
    task_id = model.make_id("deploy web", when)
    assert re.fullmatch(r"deploy_web-20261125-100000-[0-9a-f]{4}", task_id)
    model.check_id(task_id)


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "a/b\\c", "..", "", "\x00\x1b[31m", "x" * 500]
)
def test_make_id_is_always_a_safe_file_name(name):
    task_id = model.make_id(name, datetime.now(timezone.utc))
    assert model.check_id(task_id) == task_id
    assert "/" not in task_id and ".." not in task_id and len(task_id) <= 60 + 21


def test_make_id_keeps_unicode_words():
    assert model.make_id("部署 网站", datetime.now()).startswith("部署_网站-")


@pytest.mark.parametrize(
    "bad", ["", "../x", "a/b", "a\\b", ".hidden", "a..b", "a\x00b", "a\nb", "x" * 200, "-rf"]
)
def test_check_id_refuses_paths_and_controls(bad):
    with pytest.raises(BadValue):
        model.check_id(bad)


def test_resolve_prefix():
    ids = ["deploy-1", "deploy-2", "build-1"]
    assert model.resolve("build", ids) == "build-1"
    assert model.resolve("deploy-1", ids) == "deploy-1"
    with pytest.raises(AmbiguousId, match="deploy-1, deploy-2"):
        model.resolve("deploy", ids)
    with pytest.raises(TaskNotFound):
        model.resolve("ship", ids)


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "a\x1b[2Jb", "x" * (model.MAX_NAME + 1)])
def test_check_name_refuses(name):
    with pytest.raises(BadValue):
        model.check_name(name)


def test_check_text_cuts_with_a_visible_mark():
    text, cut = model.check_text("x" * 2_000_000)
    assert cut and text.endswith(f"… [cut {2_000_000 - model.MAX_TEXT} chars]")
    assert model.check_text("line1\nline2\x07") == ("line1\nline2", False)


@pytest.mark.parametrize("value", [-1, 101, float("nan")])
def test_check_progress_refuses_out_of_range(value):
    with pytest.raises(BadValue):
        model.check_progress(value)


@pytest.mark.parametrize("value", [-5, 0, 0.5])
def test_check_stall_refuses_below_one_second(value):
    with pytest.raises(BadValue):
        model.check_stall(value)


def test_new_task_runs_its_first_step():
    t = make()
    assert [s["status"] for s in t["steps"]] == ["running", "pending", "pending"]
    assert t["version"] == 1 and t["status"] == "running" and t["finishedAt"] is None
    assert tuple(t) == model.FIELDS


def test_next_finishes_the_step_and_starts_the_following():
    t, kind = model.apply(make(), "next", LATER, "built in 40s")
    assert kind == "next" and t["version"] == 2 and t["updatedAt"] == LATER
    assert t["steps"][0] == {
        "name": "build",
        "status": "done",
        "startedAt": NOW,
        "finishedAt": LATER,
        "message": "built in 40s",
    }
    assert t["steps"][1]["status"] == "running"


def test_next_on_the_last_step_finishes_the_task():
    t, _ = model.apply(make(["only"]), "next", LATER)
    assert t["status"] == "done" and t["finishedAt"] == LATER


def test_heartbeat_sets_message_and_progress():
    t, kind = model.apply(make(), "heartbeat", LATER, "60%", 60)
    assert kind == "heartbeat" and t["steps"][0]["message"] == "60%"
    assert t["steps"][0]["progress"] == 60 and t["steps"][0]["status"] == "running"


def test_done_and_error_finish_the_task():
    t, _ = model.apply(make(), "done", LATER, "https://x")
    assert (t["status"], t["result"], t["steps"][0]["status"]) == ("done", "https://x", "done")
    t, _ = model.apply(make(), "error", LATER, "login expired")
    assert (t["status"], t["error"], t["steps"][0]["status"]) == ("error", "login expired", "error")


def test_a_finished_task_refuses_updates_and_is_unchanged():
    t, _ = model.apply(make(), "done", LATER)
    before = dict(t)
    for op in model.OPS:
        with pytest.raises(TaskFinished):
            model.apply(t, op, LATER)
    assert t == before


def test_is_stalled_derives_from_updated_at_and_stall_seconds():
    t = make()
    at = model.parse_time(NOW)
    assert not model.is_stalled(t, at + timedelta(seconds=180), 180)
    assert model.is_stalled(t, at + timedelta(seconds=181), 180)
    finished, _ = model.apply(t, "done", NOW)
    assert not model.is_stalled(finished, at + timedelta(days=1), 180)


def test_normalize_loads_a_seed_skill_file():
    seed = {
        "taskId": "x-20260101-000000-abcd",
        "taskName": "x",
        "status": "running",
        "startedAt": NOW,
        "updatedAt": NOW,
        "steps": [{"name": "a", "status": "running"}, {"name": "b", "status": "pending"}],
    }
    t = model.check_snapshot(model.normalize(seed, namespace="default"))
    assert tuple(t) == model.FIELDS
    assert t["version"] == 1 and t["namespace"] == "default" and t["result"] is None


def test_is_stalled_uses_the_learned_stall_time_and_never_while_waiting():
    at = model.parse_time(NOW)
    learned = {**make(), "stallAfter": 900}
    assert not model.is_stalled(learned, at + timedelta(seconds=900), 180)
    assert model.is_stalled(learned, at + timedelta(seconds=901), 180)
    waiting, kind = model.apply(make(), "wait", NOW, "apply to prod?")
    assert kind == "wait" and waiting["waiting"] and waiting["question"] == "apply to prod?"
    assert not model.is_stalled(waiting, at + timedelta(days=1), 180)
    beat, _ = model.apply(waiting, "heartbeat", NOW)
    assert beat["waiting"] and beat["question"] == "apply to prod?"
    answered, _ = model.apply(beat, "next", NOW)
    assert not answered["waiting"] and answered["question"] is None


def test_refresh_eta_counts_down_to_the_finish_time_but_not_while_waiting():
    eta = {"remainingSeconds": 600, "finishAt": "2026-01-01T00:10:00+00:00", "runs": 3}
    task = {**make(), "eta": dict(eta)}
    model.refresh_eta(task, model.parse_time("2026-01-01T00:04:00+00:00"))
    assert task["eta"]["remainingSeconds"] == 360
    model.refresh_eta(task, model.parse_time("2026-01-01T01:00:00+00:00"))
    assert task["eta"]["remainingSeconds"] == 0
    waiting = {**make(), "eta": dict(eta), "waiting": True}
    model.refresh_eta(waiting, model.parse_time("2026-01-01T00:04:00+00:00"))
    assert waiting["eta"]["remainingSeconds"] == 600


# -- ids that fit file names, invisible characters -----------------------------------------


@pytest.mark.parametrize("char", ["a", "é", "中", "𝒜", "한"])
def test_a_created_id_is_at_most_200_bytes_whatever_the_script(char):
    from datetime import datetime

    task_id = model.make_id(char * 300, datetime(2026, 1, 1))
    assert len(task_id.encode()) <= model.MAX_ID_BYTES
    assert model.check_id(task_id) == task_id
    assert task_id.split("-")[0].strip(char) == ""  # cut on a character boundary


def test_an_id_over_200_bytes_is_refused():
    with pytest.raises(BadValue, match="200 bytes"):
        model.check_id("𝒜" * 51)


def test_bidi_controls_and_invisible_characters_are_stripped_joiners_stay():
    text = "a\u202ab\u202ec\u2066d\u2069e\u200bf\u2060g\ufeffh \U0001f469\u200d\U0001f4bb x\u200cy"
    assert model.strip_invisible(text) == ("abcdefgh \U0001f469\u200d\U0001f4bb x\u200cy", True)
    assert model.strip_invisible("plain") == ("plain", False)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"version": "abc"}, "'version' is not a whole number"),
        ({"version": [1]}, "'version' is not a number"),
        ({"steps": "p1"}, "'steps' is not a list"),
        ({"steps": [1]}, "a step is not an object"),
        ({"stallSeconds": {"a": 1}}, "'stallSeconds' is not a number"),
    ],
)
def test_a_snapshot_with_wrong_types_is_a_bad_value(raw, says):
    with pytest.raises(BadValue, match=says):
        model.normalize({"taskId": "t", "steps": [{"name": "a"}], **raw})
