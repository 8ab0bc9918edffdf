"""`wait`, `history`, ETAs and learned stall times through the CLI, as separate processes."""

from __future__ import annotations

import json
import re
import time


def ok(run_pulse, env, *args: str) -> str:
    done = run_pulse(env, *args)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def quiet_runs(run_pulse, env, name: str, seconds: float, count: int = 3) -> None:
    """``count`` runs of a one-step task that stays silent for ``seconds``, side by side."""
    ids = [ok(run_pulse, env, "create", name, "doze", "--stall", "1").strip() for _ in range(count)]
    time.sleep(seconds)
    for task in ids:
        ok(run_pulse, env, "done", task)


def test_wait_until_the_next_step(pulse_env, run_pulse):
    task = ok(run_pulse, pulse_env, "create", "deploy", "migrate", "ship").strip()
    assert ok(run_pulse, pulse_env, "wait", task, "apply", "to", "prod?") == (
        "⏸ [0/2] migrate: apply to prod?\n"
    )
    pushed = ok(run_pulse, pulse_env, "wait", task, "--push", "still", "there?")
    assert pushed == "⏸ [deploy] waiting for you\nstill there?\nStep: migrate [0/2]\n"
    zh = ok(run_pulse, {**pulse_env, "PULSE_LANG": "zh"}, "wait", task, "--push", "好吗")
    assert zh == "⏸ 【deploy】等你回复\n好吗\n当前步骤: migrate [0/2]\n"
    ok(run_pulse, pulse_env, "heartbeat", task, "still waiting")
    snap = json.loads(ok(run_pulse, pulse_env, "status", task, "--json"))
    assert snap["waiting"] is True and snap["question"] == "好吗"
    assert "⏸ waiting for you: 好吗" in ok(run_pulse, pulse_env, "status")
    event = json.loads(ok(run_pulse, pulse_env, "next", task, "--json", "yes"))
    assert event["task"]["waiting"] is False and event["task"]["question"] is None


def test_wait_needs_a_question_and_a_running_task(pulse_env, run_pulse):
    task = ok(run_pulse, pulse_env, "create", "deploy", "ship").strip()
    usage = run_pulse(pulse_env, "wait", task)
    assert usage.returncode == 2 and usage.stdout == ""
    assert usage.stderr.startswith("pulse: usage:") and usage.stderr.count("\n") == 1
    blank = run_pulse(pulse_env, "wait", task, " ")
    assert blank.returncode == 1
    assert blank.stderr == "pulse: error: wait needs the question the task waits on\n"
    ok(run_pulse, pulse_env, "done", task)
    late = run_pulse(pulse_env, "wait", task, "ok?")
    assert late.returncode == 1 and late.stderr.count("\n") == 1 and "already done" in late.stderr


def test_three_quiet_runs_give_an_eta_and_a_longer_stall_time(pulse_env, run_pulse):
    assert ok(run_pulse, pulse_env, "history", "nap") == "no history yet\n"
    quiet_runs(run_pulse, pulse_env, "nap", 2.0)
    rows = json.loads(ok(run_pulse, pulse_env, "history", "nap", "--json"))["steps"]
    [row] = rows
    assert row["taskName"] == "nap" and row["step"] == "doze" and row["runs"] == 3
    assert 2.0 <= row["median"] <= row["p95"] < 5 and row["quietP95"] == row["p95"]
    text = ok(run_pulse, pulse_env, "history")
    assert re.match(r"nap\n  doze: 3 runs, took median [234]s / p95 [234]s, longest quiet", text)

    task = ok(run_pulse, pulse_env, "create", "nap", "doze", "--stall", "1").strip()
    snap = json.loads(ok(run_pulse, pulse_env, "status", task, "--json"))
    # the median run, about 2 s, less the time since the create (a loaded machine: longer)
    assert snap["eta"]["runs"] == 3 and 0 <= snap["eta"]["remainingSeconds"] <= 5
    assert 3 <= snap["stallAfter"] <= 8  # 1.5 x the longest quiet spell of about 2 s
    assert "s left" in ok(run_pulse, pulse_env, "status", task)
    time.sleep(1.5)  # past the task's own 1 s, not past what it learned
    assert json.loads(ok(run_pulse, pulse_env, "status", task, "--json"))["stalled"] is False
    ok(run_pulse, pulse_env, "done", task)

    fresh = ok(run_pulse, pulse_env, "create", "fresh", "doze", "--stall", "1").strip()
    unlearned = {**pulse_env, "PULSE_ADAPTIVE_STALL": "0"}
    fixed = ok(run_pulse, unlearned, "create", "nap", "doze", "--stall", "1").strip()
    time.sleep(1.5)
    for stalled in (fresh, fixed):
        snap = json.loads(ok(run_pulse, pulse_env, "status", stalled, "--json"))
        assert snap["stalled"] is True and snap["stallAfter"] == 1
    assert json.loads(ok(run_pulse, pulse_env, "status", fixed, "--json"))["eta"] is not None
    for task in (fresh, fixed):
        ok(run_pulse, pulse_env, "done", task)


def test_a_bad_adaptive_stall_setting_is_one_line(pulse_env, run_pulse):
    bad = run_pulse({**pulse_env, "PULSE_ADAPTIVE_STALL": "maybe"}, "create", "x", "a")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == "pulse: error: PULSE_ADAPTIVE_STALL='maybe' must be 1 or 0\n"
