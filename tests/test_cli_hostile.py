"""Hostile and broken input to the CLI: each call is refused with its exit code and one line on
stderr (never a traceback), and nothing changes, in Redis or on disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

EVENTS = "pulse:{test}:events"


def world(redis_client, root: Path) -> dict:
    """Everything a call could change: every key of the test Redis with its content and TTL,
    the event stream's length, and every file under the test's tmp dir with its bytes."""
    keys = {}
    for key in sorted(redis_client.keys("*")):
        kind = redis_client.type(key)
        if kind == "hash":
            content = redis_client.hgetall(key)
        elif kind == "zset":
            content = redis_client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            content = [entry_id for entry_id, _ in redis_client.xrange(key)]
        else:
            content = kind
        keys[key] = (content, redis_client.ttl(key) > 0)
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return {"keys": keys, "events": redis_client.xlen(EVENTS), "files": files}


@pytest.fixture
def tasks(pulse_api) -> dict[str, str]:
    """A running task, a finished one and two whose ids share a prefix, made through the API."""
    running = pulse_api.create("victim", ["a", "b"]).id
    pulse_api.heartbeat(running, "working", 10)
    finished = pulse_api.create("finished", ["a"]).id
    pulse_api.done(finished, "ok")
    twins = [pulse_api.create("twin", ["a"]).id for _ in range(2)]
    return {"id": running, "done": finished, "twin1": twins[0], "twin2": twins[1]}


@pytest.fixture
def refused(run_pulse, pulse_env, redis_client, tmp_path, tasks):
    """``refused(*args, code=, says=, env=)``: run the CLI and insist it was refused cleanly
    and changed nothing; returns its stderr line."""

    def call(*args: str, code: int, says: str = "", env: dict[str, str] | None = None) -> str:
        before = world(redis_client, tmp_path)
        done = run_pulse({**pulse_env, **(env or {})}, *(a.format(**tasks) for a in args))
        assert world(redis_client, tmp_path) == before
        assert done.returncode == code, done.stderr
        assert done.stdout == ""
        assert "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("pulse: ")
        assert says in done.stderr
        return done.stderr

    return call


# -- names, messages and option values ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("create", "a\x1b[2Jb", "step"),
        ("create", "a\nb", "step"),
        ("create", "a\rb", "step"),
        ("create", "bell\x07", "step"),
        ("create", "ok", "step", "s\x1b[31mred"),
        ("create", "ok", "line\nbreak"),
        ("create", "ok", "c1\x9bcontrol"),
    ],
    ids=repr,
)
def test_control_characters_in_names_are_refused(refused, args):
    refused(*args, code=1, says="control characters")


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("create", "t", "s", "--stall", "0"), 1, "stall seconds must be at least 1"),
        (("create", "t", "s", "--stall", "-5"), 1, "stall seconds must be at least 1"),
        (("create", "t", "s", "--stall=-0.5"), 1, "stall seconds must be at least 1"),
        (("create", "t", "s", "--stall", "soon"), 2, "--stall"),
        (("create", "   ", "s"), 1, "empty"),
        (("create", "t", ""), 1, "empty"),
        (("create", "t" * 201, "s"), 1, "at most 200"),
        (("create", "t", *(f"s{i}" for i in range(101))), 1, "at most 100"),
        (("heartbeat", "{id}", "--progress", "150"), 1, "progress 150 is outside 0-100"),
        (("heartbeat", "{id}", "--progress", "-1"), 1, "progress -1 is outside 0-100"),
        (("heartbeat", "{id}", "--progress=nan"), 1, "outside 0-100"),
        (("heartbeat", "{id}", "--progress", "abc"), 2, "--progress"),
        (("heartbeat", "{id}", "--progress"), 2, "--progress"),
        (("error", "{id}"), 2, "Missing argument"),
        (("error", "{id}", ""), 1, "error needs a message"),
        (("next", "{id}", "--bogus"), 2, "--bogus"),
        (("cleanup", "--days", "-1"), 1, "days must be 0 or more"),
        # non-finite and huge numbers: one line, never Python's OverflowError or ValueError
        (("create", "t", "s", "--stall", "inf"), 1, "stall seconds must be at least 1"),
        (("create", "t", "s", "--stall", "nan"), 1, "stall seconds must be at least 1"),
        (("create", "t", "s", "--stall", "1e400"), 1, "stall seconds must be at least 1"),
        (("create", "t", "s", "--stall", "-1"), 1, "stall seconds must be at least 1"),
        (("cleanup", "--days", "nan"), 1, "days must be 0 or more"),
        (("cleanup", "--days", "inf"), 1, "days must be 0 or more"),
        (("cleanup", "--days", "1e400"), 1, "days must be 0 or more"),
        (("heartbeat", "{id}", "--progress", "inf"), 1, "outside 0-100"),
        (("heartbeat", "{id}", "--progress", "1e400"), 1, "outside 0-100"),
        (("--lang", "fr", "next", "{id}"), 2, "--lang"),
    ],
    ids=repr,
)
def test_bad_values_are_refused(refused, args, code, says):
    refused(*args, code=code, says=says)


def test_a_path_as_name_is_only_a_display_name(run_pulse, pulse_env, tmp_path):
    cwd = tmp_path / "cwd" / "deep"
    cwd.mkdir(parents=True)
    done = run_pulse(pulse_env, "create", "../../etc/passwd", "read", cwd=cwd)
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()

    assert task_id.startswith("etc_passwd-")
    assert "/" not in task_id and ".." not in task_id
    mirror = Path(pulse_env["PULSE_DIR"]) / "test"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.parent for p in files} == {mirror}  # the file and the mirror's lock, no other
    assert [p.name for p in files if p.suffix == ".json"] == [f"{task_id}.json"]
    assert not (tmp_path / "etc").exists() and not (tmp_path / "cwd" / "etc").exists()
    task = json.loads(run_pulse(pulse_env, "status", task_id, "--json").stdout)
    assert task["taskName"] == "../../etc/passwd"
    assert run_pulse(pulse_env, "next", task_id, cwd=cwd).returncode == 0


# -- ids ----------------------------------------------------------------------------------


def test_unknown_id(refused):
    refused("next", "no-such-task", "msg", code=1, says="no task 'no-such-task'")
    refused("status", "no-such-task", "--json", code=1, says="no task")


def test_ambiguous_prefix_names_the_candidates(refused, tasks):
    line = refused("done", "twin", code=1, says="matches 2 tasks")
    assert tasks["twin1"] in line and tasks["twin2"] in line
    line = refused("status", "twin", code=1, says="matches 2 tasks")
    assert tasks["twin1"] in line and tasks["twin2"] in line


@pytest.mark.parametrize(
    "task_id",
    ["../{id}", "{id}/../x", "a/b", "/etc/passwd", "..", ".hidden", "a\x01b", "a\tb", "a\x1b[2J"],
    ids=repr,
)
def test_ids_that_are_paths_or_hold_control_characters_are_refused(refused, task_id):
    refused("heartbeat", task_id, "msg", code=1, says="not a task id")
    refused("status", task_id, code=1, says="not a task id")


@pytest.mark.parametrize(
    ("verb", "says"),
    [("next", "already done"), ("heartbeat", "already done"), ("error", "already done")],
)
def test_a_finished_task_takes_no_more_updates(refused, verb, says):
    refused(verb, "{done}", "late", code=1, says=says)


# -- environment --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        ({"PULSE_NAMESPACE": "../x"}, ("next", "{id}"), "namespace '../x'"),
        ({"PULSE_NAMESPACE": "a b"}, ("create", "t", "s"), "namespace"),
        ({}, ("--namespace", "../x", "create", "t", "s"), "namespace '../x'"),
        ({"PULSE_TZ": "Mars/Olympus"}, ("create", "t", "s"), "PULSE_TZ"),
        ({"PULSE_TZ": "../../etc/passwd"}, ("next", "{id}"), "PULSE_TZ"),
        ({"PULSE_TZ": "99"}, ("next", "{id}"), "PULSE_TZ"),
        ({"PULSE_STALL_SECONDS": "soon"}, ("create", "t", "s"), "PULSE_STALL_SECONDS"),
        ({"PULSE_RETENTION_DAYS": "-1"}, ("next", "{id}"), "PULSE_RETENTION_DAYS"),
    ],
    ids=repr,
)
def test_bad_environment_is_refused(refused, env, args, says):
    refused(*args, code=1, says=says, env=env)


URLS = [
    "redis://127.0.0.1:{port}",
    "redis://u:s3cret@127.0.0.1:{port}",
    "redis://:s3cret@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}?password=s3cret",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize(
    "args",
    [("status",), ("status", "{id}"), ("cleanup",), ("recover",)],
    ids=" ".join,
)
def test_unreachable_redis_exits_3_without_the_password(refused, free_port, url, args):
    unreachable = {"PULSE_REDIS_URL": url.format(port=free_port)}
    line = refused(*args, code=3, says="cannot reach Redis", env=unreachable)
    assert "s3cret" not in line
    assert f"127.0.0.1:{free_port}" in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("create", "t", "s"), "the journal cannot be written"),
        (("next", "{id}", "msg"), "the mirror unreadable"),
    ],
    ids=repr,
)
def test_an_update_that_can_be_neither_sent_nor_journaled_exits_3(
    refused, free_port, tmp_path, args, says
):
    (tmp_path / "not-a-folder").write_text("")
    env = {
        "PULSE_REDIS_URL": f"redis://u:s3cret@127.0.0.1:{free_port}",
        "PULSE_DIR": str(tmp_path / "not-a-folder"),
    }
    line = refused(*args, code=3, says=says, env=env)
    assert "s3cret" not in line


def test_an_update_of_a_task_the_mirror_lacks_is_not_kept_offline(refused, free_port):
    env = {"PULSE_REDIS_URL": f"redis://127.0.0.1:{free_port}"}
    refused("next", "not-in-the-mirror", code=3, says="unreachable", env=env)


def test_updates_made_offline_are_kept_and_replayed(
    run_pulse, pulse_env, redis_client, tmp_path, free_port, tasks
):
    offline = {**pulse_env, "PULSE_REDIS_URL": f"redis://u:s3cret@127.0.0.1:{free_port}"}
    keys = world(redis_client, tmp_path)["keys"]

    done = run_pulse(offline, "next", tasks["id"], "done offline")

    assert done.returncode == 0
    assert done.stdout == "[1/2] █████░░░░░ → b\n"
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("pulse: warning: ")
    assert "s3cret" not in done.stderr and "kept" in done.stderr
    assert world(redis_client, tmp_path)["keys"] == keys  # Redis was not reached
    # made through a URL never reached: it belongs to that Redis, not to the one `sync` reaches
    # now (tests/test_hosts.py replays journals where they were made)
    synced = run_pulse(pulse_env, "sync")
    assert synced.stdout == "replayed 0 journaled updates\n"
    assert synced.stderr.count("another Redis or namespace") == 1
    assert run_pulse(pulse_env, "sync").stderr == ""  # said once
    assert world(redis_client, tmp_path)["keys"] == keys


# -- oversized text -----------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["heartbeat", "next", "done", "error"])
def test_a_huge_message_is_cut_with_a_mark_and_a_warning(
    run_pulse, pulse_env, pulse_api, tasks, verb
):
    # 100 kB: about the most one argv element may hold (Linux caps each at 128 KiB)
    message = "".join(f"{i:09d} " for i in range(10_000))
    assert len(message) == 100_000

    done = run_pulse(pulse_env, verb, tasks["id"], message)

    assert done.returncode == 0, done.stderr
    assert done.stderr == "pulse: warning: message cut to 4000 characters\n"
    task = pulse_api.get(tasks["id"])
    stored = {
        "heartbeat": task["steps"][0].get("message"),
        "next": task["steps"][0].get("message"),
        "done": task["result"],
        "error": task["error"],
    }[verb]
    assert stored == message[:4000] + "… [cut 96000 chars]"
    assert len(done.stdout) < 6000  # the plain line or push shows the cut text too


def test_a_2mb_message_through_the_api_is_cut_too(pulse_api, redis_client, caplog):
    task_id = pulse_api.create("big", ["a", "b"]).id
    message = "x" * (2 * 1024 * 1024)

    with caplog.at_level(logging.WARNING, logger="pulse"):
        change = pulse_api.heartbeat(task_id, message)

    cut = f"… [cut {len(message) - 4000} chars]"
    assert change.task["steps"][0]["message"] == "x" * 4000 + cut
    assert pulse_api.get(task_id)["steps"][0]["message"] == "x" * 4000 + cut
    assert [r.getMessage() for r in caplog.records] == ["message cut to 4000 characters"]
    # neither the event nor the mirror carries the 2 MB
    (_, fields), *_ = redis_client.xrevrange(EVENTS, count=1)
    assert len(fields["task"]) < 10_000
    assert pulse_api.mirror.path(task_id).stat().st_size < 10_000


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PULSE_TZ", "inf"),
        ("PULSE_TZ", "1e400"),
        ("PULSE_STALL_SECONDS", "nan"),
        ("PULSE_STALL_SECONDS", "inf"),
        ("PULSE_RETENTION_DAYS", "inf"),
        ("PULSE_RETENTION_DAYS", "nan"),
        ("PULSE_HEARTBEAT_PUSH_SECONDS", "nan"),
        ("PULSE_AGENT", "two\nlines"),
        ("PULSE_AGENT", "a" * 65),
    ],
)
def test_non_finite_or_bad_settings_are_one_line_naming_the_variable(refused, var, value):
    refused("create", "t", "s", code=1, says=var, env={var: value})
