"""The `pulse` CLI as agents run it: one subprocess per call, on the test Redis.

Every test reads as a short session of an agent: the commands it types and what it sees.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from datetime import datetime
from pathlib import Path

import pytest

SNAPSHOT_FIELDS = {
    "taskId",
    "taskName",
    "status",
    "stalled",
    "startedAt",
    "updatedAt",
    "finishedAt",
    "steps",
    "error",
    "result",
    "version",
    "namespace",
    "host",
    "agent",
    "stallSeconds",
    "waiting",
    "question",
    "stallAfter",
    "eta",
}
EVENTS = "pulse:{test}:events"


@pytest.fixture
def pulse(run_pulse, pulse_env):
    """``pulse(*args)``: run the CLI, insist it succeeded quietly, return its stdout."""

    def call(*args: str, env: dict[str, str] | None = None) -> str:
        done = run_pulse(env or pulse_env, *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout

    return call


@pytest.fixture
def mirror(pulse_env) -> Path:
    """The namespace's mirror folder."""
    return Path(pulse_env["PULSE_DIR"]) / "test"


def snapshot(pulse, task_id: str) -> dict:
    return json.loads(pulse("status", task_id, "--json"))


def create(pulse, name: str, *steps: str) -> str:
    return pulse("create", name, *steps).strip()


# -- create and the update verbs ----------------------------------------------------------


def test_create_prints_the_new_id_alone_on_its_line(pulse):
    out = pulse("create", "Deploy app", "build", "test", "ship")

    assert out.count("\n") == 1 and out.endswith("\n")
    task_id = out.strip()
    match = re.fullmatch(r"Deploy_app-(\d{8}-\d{6})-[0-9a-f]{4}", task_id)
    assert match, task_id
    task = snapshot(pulse, task_id)
    started = datetime.fromisoformat(task["startedAt"])
    assert match.group(1) == started.strftime("%Y%m%d-%H%M%S")
    assert [s["status"] for s in task["steps"]] == ["running", "pending", "pending"]


def test_ids_keep_at_most_60_characters_of_the_name(pulse):
    task_id = create(pulse, "x" * 100, "only")

    assert re.fullmatch(r"x{60}-\d{8}-\d{6}-[0-9a-f]{4}", task_id)
    assert snapshot(pulse, task_id)["taskName"] == "x" * 100


def test_update_verbs_print_one_plain_line(pulse):
    task_id = create(pulse, "Deploy", "build", "test", "ship")

    assert pulse("next", task_id, "built", "in", "40s") == "[1/3] ███░░░░░░░ → test\n"
    assert pulse("heartbeat", task_id, "--progress", "40", "half of the tests") == (
        "💓 [1/3] test ████░░░░░░ 40%: half of the tests\n"
    )
    assert (
        pulse("heartbeat", task_id, "still", "going")
        == "💓 [1/3] test ████░░░░░░ 40%: still going\n"
    )
    assert pulse("next", task_id) == "[2/3] ██████░░░░ → ship\n"
    assert re.fullmatch(r"🎉 \[Deploy\] Finished! \(\d+s\)\n", pulse("done", task_id, "v2 live"))

    failing = create(pulse, "Backup", "dump", "upload")
    assert pulse("error", failing, "disk", "full") == "❌ [Backup] Failed: disk full\n"

    last = create(pulse, "Tiny", "only")
    assert re.fullmatch(r"🎉 \[Tiny\] Finished! \(\d+s\)\n", pulse("next", last, "ok"))
    assert snapshot(pulse, last)["status"] == "done"


def test_json_prints_the_event_and_status_id_json_the_snapshot(pulse, pulse_env, redis_client):
    env = {**pulse_env, "PULSE_AGENT": "ci-bot"}
    created = json.loads(pulse("create", "Deploy", "build", "ship", "--json", env=env))

    assert set(created) == {"id", "kind", "task"}
    assert created["kind"] == "create"
    task = created["task"]
    assert set(task) == SNAPSHOT_FIELDS
    assert task["taskName"] == "Deploy"
    assert task["status"] == "running" and task["stalled"] is False
    assert task["version"] == 1
    assert task["namespace"] == "test"
    assert task["host"] == socket.gethostname()
    assert task["agent"] == "ci-bot"
    assert task["stallSeconds"] == 180
    assert task["finishedAt"] is None and task["error"] is None and task["result"] is None
    assert datetime.fromisoformat(task["startedAt"]).utcoffset() is not None  # PULSE_TZ=0
    task_id = task["taskId"]

    for args, kind in [
        (("next", task_id, "built"), "next"),
        (("heartbeat", task_id, "--progress", "50", "uploading"), "heartbeat"),
        (("done", task_id, "shipped"), "done"),
    ]:
        event = json.loads(pulse(*args, "--json", env=env))
        assert set(event) == {"id", "kind", "task"}
        assert event["kind"] == kind
        assert set(event["task"]) == SNAPSHOT_FIELDS
        # the event id is the stream entry the update wrote
        assert event["id"] == redis_client.xrevrange(EVENTS, count=1)[0][0]

    final = snapshot(pulse, task_id)
    assert final == event["task"]
    assert final["version"] == 4
    assert final["status"] == "done" and final["result"] == "shipped"
    assert datetime.fromisoformat(final["finishedAt"]) >= datetime.fromisoformat(final["startedAt"])
    assert final["steps"][0]["message"] == "built"
    assert [s["status"] for s in final["steps"]] == ["done", "done"]
    assert redis_client.xlen(EVENTS) == 4

    failed = json.loads(pulse("create", "Backup", "dump", "--json"))["task"]["taskId"]
    event = json.loads(pulse("error", failed, "no", "space", "--json"))
    assert event["kind"] == "error"
    assert event["task"]["error"] == "no space"
    assert event["task"]["steps"][0]["status"] == "error"


def test_push_prints_what_the_relay_would_send_in_english(pulse):
    out = pulse("create", "Deploy", "build", "test", "ship", "--push").splitlines()
    task_id = out[0]
    assert re.fullmatch(r"Deploy-\d{8}-\d{6}-[0-9a-f]{4}", task_id)
    assert out[1:] == ["🚀 Started [Deploy]", "📋 3 steps: build → test → ship", "🔄 Now: build"]

    # nothing to say in parentheses: left out, not printed empty
    assert pulse("next", task_id, "--push") == "✅ [1/3] build done\n🔄 → test\n"
    assert pulse("heartbeat", task_id, "--push", "--progress", "40", "half") == (
        "💓 [1/3] test ████░░░░░░ 40%: half\n"
    )
    assert pulse("next", task_id, "tested", "--push") == "✅ [2/3] test done (tested)\n🔄 → ship\n"
    assert re.fullmatch(
        r"🎉 \[Deploy\] Finished! \(\d+s\)\nResult: v2 live\n",
        pulse("done", task_id, "v2 live", "--push"),
    )
    quick = create(pulse, "Quick", "only")
    assert re.fullmatch(r"🎉 \[Quick\] Finished! \(\d+s\)\n", pulse("done", quick, "--push"))

    other = create(pulse, "Backup", "dump", "upload")
    assert pulse("error", other, "disk full", "--push") == (
        "❌ [Backup] Failed\nError: disk full\nStep: dump [0/2]\n"
    )


@pytest.mark.parametrize("how", ["PULSE_LANG", "--lang"])
def test_push_prints_the_seed_skill_texts_in_chinese(pulse, pulse_env, how):
    if how == "PULSE_LANG":
        env, lang = {**pulse_env, "PULSE_LANG": "zh"}, ()
    else:
        env, lang = pulse_env, ("--lang", "zh")

    def zh(*args: str) -> str:
        return pulse(*lang, *args, "--push", env=env)

    out = zh("create", "部署", "构建", "测试", "发布").splitlines()
    task_id = out[0]
    assert out[1:] == ["🚀 开始【部署】", "📋 共3步: 构建 → 测试 → 发布", "🔄 当前: 构建"]
    assert (
        zh("next", task_id, "抓取了25条数据") == "✅ [1/3] 构建完成（抓取了25条数据）\n🔄 → 测试\n"
    )
    assert zh("heartbeat", task_id, "--progress", "60", "已处理60%") == (
        "💓 [1/3] 测试 ██████░░░░ 60%: 已处理60%\n"
    )
    assert zh("heartbeat", task_id) == "💓 [1/3] 测试 ██████░░░░ 60%: 已处理60%\n"
    assert zh("next", task_id) == "✅ [2/3] 测试完成（已处理60%）\n🔄 → 发布\n"
    assert re.fullmatch(
        r"🎉 【部署】完成！\(\d+s\)\n结果: 发布成功\n", zh("done", task_id, "发布成功")
    )

    other = create(pulse, "备份", "导出", "上传")
    assert (
        zh("error", other, "登录过期") == "❌ 【备份】失败\n错误: 登录过期\n当前步骤: 导出 [0/2]\n"
    )


# -- status -------------------------------------------------------------------------------


def test_status_shows_a_block_per_task_and_a_count_line(pulse, pulse_env):
    deploy = create(pulse, "Deploy", "build", "test", "ship")
    pulse("next", deploy, "built")
    pulse("heartbeat", deploy, "--progress", "40", "half")
    backup = create(pulse, "Backup", "dump")
    pulse("done", backup, "fine")
    sync = create(pulse, "Sync", "pull")
    pulse("error", sync, "boom")

    assert pulse("status") == (
        f"❌ Sync [0/1] ░░░░░░░░░░ ({sync})\n"
        "  ❌ pull\n"
        "  Error: boom\n"
        "\n"
        f"✅ Backup [1/1] ██████████ ({backup})\n"
        "  ✅ dump\n"
        "  Result: fine\n"
        "\n"
        f"🔄 Deploy [1/3] ███░░░░░░░ ({deploy})\n"
        "  ✅ build — built\n"
        "  🔄 test 40% — half\n"
        "  ⏳ ship\n"
        "\n"
        "3 tasks: 1 running, 1 done, 1 error, 0 stalled\n"
    )
    zh = pulse("status", env={**pulse_env, "PULSE_LANG": "zh"})
    assert zh.splitlines()[-1] == "共3个任务：运行中1，完成1，失败1，卡住0"
    assert "  结果: fine" in zh.splitlines()


def test_status_of_one_task_and_with_no_tasks(pulse):
    assert pulse("status") == "no tasks\n"
    task_id = create(pulse, "Deploy", "build", "ship")
    assert pulse("status", task_id) == (
        f"🔄 Deploy [0/2] ░░░░░░░░░░ ({task_id})\n"
        "  🔄 build\n"
        "  ⏳ ship\n"
        "\n"
        "1 task: 1 running, 0 done, 0 error, 0 stalled\n"
    )


def test_a_quiet_task_shows_as_stalled(pulse):
    # 4 s: updatedAt has whole seconds, so a task can look up to 1 s quieter than it is, and
    # the checks after the heartbeat below must all run within the stall time, even on a
    # loaded machine where each CLI call can take a second
    slow = pulse("create", "slow", "fetch", "parse", "--stall", "4").strip()
    busy = create(pulse, "busy", "work")
    time.sleep(4.5)

    status = pulse("status")
    assert f"⚠️ slow [0/2] ░░░░░░░░░░ ({slow})" in status.splitlines()
    assert f"🔄 busy [0/1] ░░░░░░░░░░ ({busy})" in status.splitlines()
    assert re.search(r"^  no update for \ds$", status, re.M)
    assert status.splitlines()[-1] == "2 tasks: 1 running, 0 done, 0 error, 1 stalled"

    stalled = pulse("status", "--stalled")
    assert stalled.startswith(f"⚠️ slow [0/2] ░░░░░░░░░░ ({slow})\n")
    assert busy not in stalled
    assert stalled.splitlines()[-1] == "1 task: 0 running, 0 done, 0 error, 1 stalled"
    assert snapshot(pulse, slow)["stalled"] is True
    assert snapshot(pulse, busy)["stalled"] is False

    pulse("heartbeat", slow, "alive")  # an update ends the stall
    assert snapshot(pulse, slow)["stalled"] is False
    assert pulse("status", "--stalled") == "no tasks\n"


def test_status_views_and_limit(pulse):
    first = create(pulse, "first", "a")
    pulse("done", first)
    second = create(pulse, "second", "a")
    third = create(pulse, "third", "a")

    def shown(*args: str) -> list[str]:
        return re.findall(r"\((\S+-\d{8}-\d{6}-[0-9a-f]{4})\)$", pulse("status", *args), re.M)

    assert shown() == [third, second, first]
    assert shown("--all") == [third, second, first]
    assert shown("--running") == [third, second]
    assert shown("--limit", "1") == [third]
    assert shown("--all", "--limit", "2") == [third, second]
    assert shown("--running", "--limit", "1") == [third]
    listed = json.loads(pulse("status", "--running", "--json"))
    assert listed["count"] == 2
    assert [t["taskId"] for t in listed["tasks"]] == [third, second]


def test_every_verb_accepts_a_unique_prefix(pulse):
    task_id = create(pulse, "alpha", "one", "two")
    create(pulse, "beta", "one")

    assert pulse("next", "alp", "ok") == "[1/2] █████░░░░░ → two\n"
    assert snapshot(pulse, "alpha")["taskId"] == task_id
    assert pulse("heartbeat", task_id[:-3], "hi").startswith("💓 [1/2] two")
    assert pulse("done", "al").startswith("🎉 [alpha] Finished!")
    assert snapshot(pulse, task_id)["version"] == 4


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("status",), 0),
        (("next", "no-such-task"), 1),  # unknown id
        (("heartbeat", "{id}", "--progress", "101"), 1),  # bad value
        (("done", "{finished}"), 1),  # already finished
        (("frobnicate",), 2),  # unknown verb
        (("create", "only-a-name"), 2),  # no steps
        (("next", "{id}", "--bogus"), 2),  # unknown option
        (("status", "--limit", "-1"), 2),
    ],
)
def test_exit_codes(run_pulse, pulse_env, pulse_api, args, code):
    ids = {
        "id": pulse_api.create("running", ["a", "b"]).id,
        "finished": pulse_api.create("finished", ["a"]).id,
    }
    pulse_api.done(ids["finished"])

    done = run_pulse(pulse_env, *(a.format(**ids) for a in args))

    assert done.returncode == code
    if code:
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("pulse: ")
        assert done.stdout == ""


def test_help(pulse, run_pulse, pulse_env):
    top = pulse("--help")
    assert top.startswith("Usage: pulse ")
    for verb in ("create", "next", "heartbeat", "done", "error", "status", "cleanup", "recover"):
        assert re.search(rf"^  {verb} ", top, re.M), verb
    assert "--stall" in pulse("create", "--help")
    assert "--progress" in pulse("heartbeat", "-h")

    bare = run_pulse(pulse_env)  # `pulse` alone shows the help, not an error line
    assert bare.returncode == 2
    assert bare.stderr.startswith("Usage: pulse ")
    assert "pulse: usage:" not in bare.stderr


# -- the mirror, cleanup and recover ------------------------------------------------------


def test_mirror_file_equals_the_snapshot_after_every_update(pulse, mirror):
    event = json.loads(pulse("create", "Deploy", "build", "test", "--json"))
    task_id = event["task"]["taskId"]
    path = mirror / f"{task_id}.json"

    for args in [
        (),
        ("next", task_id, "built"),
        ("heartbeat", task_id, "--progress", "30", "testing"),
        ("heartbeat", task_id, "--progress", "70"),
        ("done", task_id, "all green"),
    ]:
        if args:
            event = json.loads(pulse(*args, "--json"))
        assert json.loads(path.read_text(encoding="utf-8")) == event["task"]
        assert snapshot(pulse, task_id) == event["task"]
    assert sorted(p.name for p in mirror.glob("*.json")) == [f"{task_id}.json"]


def test_cleanup_removes_finished_tasks_and_keeps_running_ones(pulse, mirror, redis_client):
    finished = create(pulse, "finished", "a")
    pulse("done", finished)
    failed = create(pulse, "failed", "a")
    pulse("error", failed, "boom")
    running = create(pulse, "running", "a", "b")
    pulse("next", running)

    assert pulse("cleanup") == "removed 0 finished tasks\n"  # within the 7 days kept
    assert pulse("cleanup", "--days", "0") == "removed 2 finished tasks\n"

    assert sorted(p.name for p in mirror.glob("*.json")) == [f"{running}.json"]
    assert redis_client.keys("pulse:{test}:task:*") == [f"pulse:{{test}}:task:{running}"]
    assert re.findall(r"\((\S+)\)$", pulse("status", "--all"), re.M) == [running]
    assert snapshot(pulse, running)["version"] == 2
    assert json.loads(pulse("cleanup", "--days", "0", "--json")) == {"removed": 0}


def test_recover_restores_every_task_after_redis_lost_its_data(pulse, redis_client):
    running = create(pulse, "running", "build", "test", "ship")
    pulse("next", running, "built")
    pulse("heartbeat", running, "--progress", "25.5", "slow tests")
    finished = create(pulse, "finished", "only")
    pulse("done", finished, "v1")
    failed = create(pulse, "failed", "a", "b")
    pulse("error", failed, "boom")
    ids = [running, finished, failed]
    before = {task_id: pulse("status", task_id, "--json") for task_id in ids}
    listed = pulse("status", "--all")

    redis_client.flushall()
    assert pulse("status") == "no tasks\n"

    assert pulse("recover") == "restored 3 tasks (0 unchanged, 0 expired)\n"
    assert {task_id: pulse("status", task_id, "--json") for task_id in ids} == before
    # the same blocks (their order within one second is lost: updatedAt has whole seconds)
    assert sorted(pulse("status", "--all").split("\n\n")) == sorted(listed.split("\n\n"))
    assert pulse("recover") == "restored 0 tasks (3 unchanged, 0 expired)\n"

    # the restored task goes on from where it was
    event = json.loads(pulse("next", running, "tested", "--json"))
    assert event["task"]["version"] == json.loads(before[running])["version"] + 1
    assert event["task"]["steps"][2]["status"] == "running"


def test_recover_from_loads_the_seed_skills_task_files(pulse, tmp_path, mirror):
    seed = tmp_path / "seed-tasks"
    seed.mkdir()
    now = datetime.now().replace(microsecond=0).isoformat()  # the seed wrote local, naive times
    files = {
        "scrape-20250101-120000-ab12": {
            "taskId": "scrape-20250101-120000-ab12",
            "taskName": "抓取新闻",
            "status": "running",
            "startedAt": now,
            "updatedAt": now,
            "steps": [
                {"name": "抓取", "status": "done"},
                {"name": "整理", "status": "running"},
                {"name": "发布", "status": "pending"},
            ],
        },
        "report-20250101-090000-cd34": {
            "taskId": "report-20250101-090000-cd34",
            "taskName": "weekly report",
            "status": "done",
            "startedAt": now,
            "updatedAt": now,
            "steps": [{"name": "write", "status": "done"}],
            "result": "sent",
        },
    }
    for name, doc in files.items():
        (seed / f"{name}.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")

    assert pulse("recover", "--from", str(seed)) == "restored 2 tasks (0 unchanged, 0 expired)\n"

    for task_id, doc in files.items():
        task = snapshot(pulse, task_id)
        assert set(task) == SNAPSHOT_FIELDS
        assert {k: task[k] for k in doc if k != "steps"} == {
            k: v for k, v in doc.items() if k != "steps"
        }
        assert [{"name": s["name"], "status": s["status"]} for s in task["steps"]] == doc["steps"]
        assert task["version"] == 1 and task["namespace"] == "test"
        assert json.loads((mirror / f"{task_id}.json").read_text(encoding="utf-8")) == task
    # the running one carries on under pulse
    assert pulse("next", "scrape", "整理好了") == "[2/3] ██████░░░░ → 发布\n"
    assert pulse("recover", "--from", str(seed)) == "restored 0 tasks (2 unchanged, 0 expired)\n"


# -- the fast parser and the click app agree ----------------------------------------------

# Each vector runs on a fresh task (`{id}`) of its namespace through both parsers.
PARITY = [
    ["next", "{id}"],
    ["next", "{id}", "built", "in", "40s"],
    ["next", "{id}", "--json", "built"],
    ["next", "{id}", "--push", "built"],
    ["next", "--push", "{id}"],
    ["heartbeat", "{id}", "--progress", "40", "half"],
    ["heartbeat", "{id}", "--progress=40", "--push", "half"],
    ["heartbeat", "{id}", "--json", "--push", "--progress", "12.5"],
    ["done", "{id}", "shipped", "--json"],
    ["done", "{id}", "--push"],
    ["error", "{id}", "disk", "full"],
    ["error", "{id}", "--push", "disk", "full"],
    ["--lang", "zh", "next", "{id}", "--push", "好了"],
    ["--lang=zh", "heartbeat", "{id}", "一半"],
    ["--namespace", "x", "next", "{id}", "--json"],
    ["--namespace=x", "--lang", "en", "done", "{id}", "--push", "ok"],
    ["next", "{id}", "--", "--dash-message"],
    ["heartbeat", "{id}", "--json", "--", "--progress", "7"],
    ["next", "{id}", "-", "a=b"],
    ["create", "deploy", "build", "ship", "--stall", "5"],
    ["create", "--json", "deploy", "build", "ship"],
    ["--lang", "zh", "create", "部署", "构建", "发布", "--push"],
    ["create", "deploy", "build", "--stall=5", "--json", "--push"],
    ["wait", "{id}", "apply", "to", "prod?"],
    ["wait", "{id}", "--push", "ok?"],
    ["--lang", "zh", "wait", "{id}", "--json", "--push", "好吗"],
]


def _normal(text: str) -> str:
    """Output with what differs between two fresh tasks (ids, times) replaced by markers."""
    text = re.sub(r"[\w.-]+-\d{8}-\d{6}-[0-9a-f]{4}", "<ID>", text)
    text = re.sub(r'"id": "\d+-\d+"', '"id": "<EVENT>"', text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", "<TIME>", text)
    return re.sub(r"\((?:\d+[smhd])+\)", "(<DURATION>)", text)


@pytest.mark.parametrize("argv", PARITY, ids=" ".join)
def test_fast_parser_and_click_app_print_the_same(argv, pulse_env, monkeypatch, capsys):
    from pulse.cli import app, fast
    from pulse.client import Client
    from pulse.settings import Settings

    for name in [k for k in os.environ if k.startswith(("PULSE_", "TASK_PULSE_"))]:
        monkeypatch.delenv(name)
    for name, value in pulse_env.items():
        monkeypatch.setenv(name, value)
    namespace = "x" if any(a.startswith("--namespace") for a in argv) else "test"
    outputs = []
    for path in ("fast", "click"):
        with Client(Settings.from_env({**pulse_env, "PULSE_NAMESPACE": namespace})) as client:
            task_id = client.create("deploy", ["build", "test", "ship"]).id
        args = [a.replace("{id}", task_id) for a in argv]
        parsed = fast.parse(args)
        assert parsed is not None, "the fast parser left an update verb call to click"
        if path == "fast":
            fast.run(*parsed)
        else:
            app.cli.main(args=args, prog_name="pulse", standalone_mode=False)
        out = capsys.readouterr()
        assert out.err == ""
        outputs.append(_normal(out.out))
    assert outputs[0] == outputs[1]
    assert outputs[0].strip()


@pytest.mark.parametrize(
    "argv",
    [
        ["next"],
        ["error", "some-id"],
        ["wait", "some-id"],
        ["create", "name-only"],
        ["heartbeat", "some-id", "--progress"],
        ["heartbeat", "some-id", "--progress", "abc"],
        ["next", "some-id", "--bogus"],
        ["next", "some-id", "-h"],
        ["next", "some-id", "--json=yes"],
        ["next", "some-id", "--stall", "5"],
        ["--lang", "fr", "next", "some-id"],
        ["--namespace"],
        ["--help"],
        ["status"],
        [],
    ],
    ids=lambda argv: " ".join(argv) or "(none)",
)
def test_fast_parser_leaves_what_it_is_unsure_of_to_click(argv):
    from pulse.cli.fast import parse

    assert parse(argv) is None
