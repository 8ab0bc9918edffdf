"""Faults the record must survive: Redis losing everything, dying or stopping under load, its
script cache flushed, writers killed mid-write, and hostile ids and names.

Every test runs a redis-server of its own (tests/redis_proc.py) that it stops, kills and starts,
and drives the real CLI in subprocesses, as agents do. Nothing here asserts on timing: waits
poll for a state and give up after a generous deadline.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import pulse
import pulse.client
from pulse.errors import BadValue
from pulse.events import mark_stalled
from pulse.keys import Keys
from pulse.mirror import Mirror
from pulse.model import check_id
from pulse.settings import Settings, check_namespace
from pulse.transport import connect
from tests.redis_proc import RedisProc, redis_proc

NS = "test"
EVENTS = f"pulse:{{{NS}}}:events"
KEY_PREFIX = f"pulse:{{{NS}}}:"


@pytest.fixture
def server() -> Iterator[RedisProc]:
    with redis_proc() as s:
        yield s


@pytest.fixture
def durable() -> Iterator[RedisProc]:
    """A server with an AOF fsynced on every write: a stop and start keeps everything."""
    with redis_proc(persist=True) as s:
        yield s


@pytest.fixture
def env(pulse_env, server) -> dict[str, str]:
    return {**pulse_env, "PULSE_REDIS_URL": server.url}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``pulse ARGS`` in a fresh process; a hang fails the test instead of blocking it."""
    return subprocess.run(
        [sys.executable, "-m", "pulse", *args], env=env, capture_output=True, text=True, timeout=20
    )


def ok(env: dict[str, str], *args: str) -> str:
    """Run the CLI and insist it succeeded without a word on stderr; its stdout."""
    done = run(env, *args)
    assert done.returncode == 0 and done.stderr == "", (args, done.returncode, done.stderr)
    return done.stdout


def ok_json(env: dict[str, str], *args: str) -> dict:
    return json.loads(ok(env, *args, "--json"))


def wait_for(what: Callable[[], bool], timeout: float = 60.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {why or what}")
        time.sleep(0.05)


def mirror_of(env: dict[str, str]) -> Path:
    return Path(env["PULSE_DIR"]) / NS


# -- FLUSHALL, then recover ------------------------------------------------------------------


def test_recover_after_flushall_brings_back_every_snapshot_and_index(env, server):
    r = server.client()
    tasks = []
    first = ok(env, "create", "deploy", "build", "test", "ship").strip()
    ok(env, "next", first, "built")
    ok(env, "heartbeat", first, "--progress", "40", "testing")
    done = ok(env, "create", "backup", "dump").strip()
    ok(env, "done", done, "42 GB")
    failed = ok(env, "create", "migrate", "lock", "copy").strip()
    ok(env, "error", failed, "disk full")
    tasks += [first, done, failed]
    # a running task whose last word is an hour old: stalled, and due for the relay's alert
    quiet = "quiet-20200101-000000-abcd"
    hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    (mirror_of(env) / f"{quiet}.json").write_text(json.dumps(old_task(quiet, hour_ago)))
    # one whose retention ran out while Redis was down: it must stay gone
    gone = "gone-20200101-000000-abcd"
    old = datetime.now(timezone.utc) - timedelta(days=8)
    (mirror_of(env) / f"{gone}.json").write_text(json.dumps(old_task(gone, old)))
    assert ok_json(env, "recover") == {"restored": 1, "unchanged": 3, "expired": 1, "refused": []}
    tasks.append(quiet)

    before = {t: ok_json(env, "status", t) for t in tasks}
    expiry = {t: time.time() * 1000 + r.pttl(KEY_PREFIX + "task:" + t) for t in tasks}
    listing = ok_json(env, "status", "--all")
    assert before[quiet]["stalled"] is True

    r.flushall()
    assert r.xlen(EVENTS) == 0
    report = ok_json(env, "recover")

    assert report == {"restored": 4, "unchanged": 0, "expired": 1, "refused": []}
    assert {t: ok_json(env, "status", t) for t in tasks} == before
    assert r.exists(KEY_PREFIX + "task:" + gone) == 0
    for t in tasks:  # the same absolute expiry (updatedAt has whole seconds)
        now_ms = time.time() * 1000
        assert abs(now_ms + r.pttl(KEY_PREFIX + "task:" + t) - expiry[t]) < 2000
    assert r.xlen(EVENTS) == 0  # history is not pushed again
    again = ok_json(env, "recover")
    assert again == {"restored": 0, "unchanged": 4, "expired": 1, "refused": []}
    assert r.xlen(EVENTS) == 0

    # status, the stalled view and the running index work at once
    after = ok_json(env, "status", "--all")["tasks"]
    # the same tasks; newest first, though only to the second (the mirror has no milliseconds)
    assert sorted(after, key=by_id) == sorted(listing["tasks"], key=by_id)
    stamps = [t["updatedAt"] for t in after]
    assert stamps == sorted(stamps, reverse=True)
    assert [t["taskId"] for t in ok_json(env, "status", "--stalled")["tasks"]] == [quiet]
    running = {t["taskId"] for t in ok_json(env, "status", "--running")["tasks"]}
    assert running == {first, quiet}
    due = r.zrangebyscore(KEY_PREFIX + "running", "-inf", time.time() * 1000)
    assert due == [quiet]
    assert "→ ship" in ok(env, "next", first[:-2], "tested")  # the id index: prefixes resolve
    assert r.xlen(EVENTS) == 1

    stall = mark_stalled(server.client(), NS, time.time(), timezone.utc)
    assert [(e.kind, e.task["taskId"]) for e in stall] == [("stall", quiet)]


def by_id(task: dict) -> str:
    return task["taskId"]


def old_task(task_id: str, when: datetime) -> dict:
    at = when.isoformat(timespec="seconds")
    return {
        "taskId": task_id,
        "taskName": task_id.split("-")[0],
        "status": "running",
        "startedAt": at,
        "updatedAt": at,
        "steps": [{"name": "wait", "status": "running", "startedAt": at}],
        "version": 3,
        "namespace": NS,
        "stallSeconds": 60,
    }


# -- agents that keep calling the CLI while Redis comes and goes -----------------------------

# One agent: task after task of STEPS steps, a heartbeat and a `next` per step, until the stop
# file appears (it finishes the task in hand first). A call that fails (exit != 0: nothing was
# acknowledged) is made again, as an agent would. Every call is one JSON line in the log.
AGENT = r"""
import json, subprocess, sys, time
from pathlib import Path

log_path, stop, name, steps = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
log = open(log_path, "a", buffering=1)


def pulse(*args):
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "pulse", *args, "--json"],
            capture_output=True, text=True, timeout=30,
        )
        task = json.loads(done.stdout)["task"] if done.returncode == 0 else None
        log.write(json.dumps(
            {"args": args, "rc": done.returncode, "stderr": done.stderr, "task": task}
        ) + "\n")
        if task is not None:
            return task
        time.sleep(0.05)


n = 0
while not stop.exists():
    n += 1
    task_id = pulse("create", f"{name}-{n}", *[f"s{j}" for j in range(steps)])["taskId"]
    for j in range(steps):
        pulse("heartbeat", task_id, "--progress", str(10 * j), f"{name}-{n} beat {j}")
        pulse("next", task_id, f"{task_id} step {j} done")
"""

KEPT = "the update is kept in"  # what the one warning line says of a journaled update


class Agents:
    """Agent processes, each logging its calls; the test reads the logs to know what was
    acknowledged (exit 0) and what was journaled while Redis was away."""

    def __init__(self, env: dict[str, str], folder: Path, count: int, steps: int = 4) -> None:
        self.folder = folder
        self.stop_file = folder / "stop"
        script = folder / "agent.py"
        script.write_text(AGENT)
        self.logs = [folder / f"agent{i}.jsonl" for i in range(count)]
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(log), str(self.stop_file), f"a{i}", str(steps)],
                env=env,
            )
            for i, log in enumerate(self.logs)
        ]

    def calls(self, i: int) -> list[dict]:
        lines = self.logs[i].read_text().splitlines() if self.logs[i].exists() else []
        return [json.loads(line) for line in lines if line.endswith("}")]

    def all_calls(self) -> list[dict]:
        return [c for i in range(len(self.logs)) for c in self.calls(i)]

    def acked(self, i: int) -> int:
        return sum(c["rc"] == 0 for c in self.calls(i))

    def journaled(self, i: int) -> int:
        return sum(c["rc"] == 0 and KEPT in c["stderr"] for c in self.calls(i))

    def each_makes(self, count: int, more: Callable[[int], int], why: str) -> None:
        """Wait until every agent has made ``count`` more of what ``more`` counts."""
        start = [more(i) for i in range(len(self.logs))]
        wait_for(lambda: all(more(i) >= start[i] + count for i in range(len(self.logs))), why=why)

    def finish(self) -> None:
        self.stop_file.touch()
        for p in self.procs:
            assert p.wait(timeout=120) == 0

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def last_acked(self) -> dict[str, dict]:
        """Each task's snapshot as the last acknowledged call returned it."""
        last: dict[str, dict] = {}
        for call in self.all_calls():
            if call["rc"] == 0:
                last[call["task"]["taskId"]] = call["task"]
        return last


@pytest.fixture
def agents(tmp_path):
    made = []

    def start(env: dict[str, str], count: int) -> Agents:
        folder = tmp_path / f"agents{len(made)}"
        folder.mkdir()
        made.append(Agents(env, folder, count))
        return made[-1]

    yield start
    for a in made:
        a.kill()


def check_journaled_calls(agents: Agents) -> None:
    """Updates made while Redis was away: acknowledged with one warning line each."""
    journaled = [c for c in agents.all_calls() if KEPT in c["stderr"]]
    assert journaled
    for call in journaled:
        assert call["rc"] == 0
        assert call["stderr"].count("\n") == 1 and call["stderr"].startswith("pulse: warning: ")


def test_redis_killed_and_restarted_empty_under_load_loses_nothing_acknowledged(
    server, env, agents
):
    r = server.client()
    crew = agents(env, 4)
    crew.each_makes(3, crew.acked, "calls before the crash")
    before_crash = set(crew.last_acked())

    server.kill()
    crew.each_makes(5, crew.journaled, "updates journaled while Redis is down")
    server.start()  # without persistence: empty (agents may be back at it already)
    assert not any(r.exists(KEY_PREFIX + "task:" + t) for t in before_crash)
    report = ok_json(env, "recover", "--from", str(mirror_of(env)))
    assert report["restored"] > 0 and report["refused"] == []
    run(env, "sync")
    crew.each_makes(3, crew.acked, "calls after the recovery")
    crew.finish()
    ok(env, "sync")

    check_journaled_calls(crew)
    last = crew.last_acked()
    assert len(last) >= 4
    for task_id, acked in last.items():
        key = KEY_PREFIX + "task:" + task_id
        in_redis = json.loads(r.hget(key, "snap"))
        in_mirror = json.loads((mirror_of(env) / f"{task_id}.json").read_text())
        assert in_redis == in_mirror == acked, task_id
        assert int(r.hget(key, "version")) == acked["version"]
        assert acked["status"] == "done"
    # every `next` acknowledged left its message on its step
    for call in crew.all_calls():
        if call["rc"] == 0 and call["args"][0] == "next":
            task_id, message = call["args"][1], call["args"][2]
            step = int(message.rsplit(" ", 2)[-2])
            assert last[task_id]["steps"][step]["message"] == message
    assert not (mirror_of(env) / ".journal.jsonl").exists()


def test_redis_stopped_while_agents_keep_calling_every_update_arrives_in_order(
    durable, pulse_env, agents
):
    env = {**pulse_env, "PULSE_REDIS_URL": durable.url}
    r = durable.client()
    crew = agents(env, 3)
    crew.each_makes(3, crew.acked, "calls before the stop")

    durable.stop()
    crew.each_makes(5, crew.journaled, "updates journaled while Redis is stopped")
    durable.start()  # with everything it had: the AOF
    crew.each_makes(3, crew.acked, "calls after the start")
    crew.finish()

    check_journaled_calls(crew)
    assert not (mirror_of(env) / ".journal.jsonl").exists()
    assert ok_json(env, "sync")["replayed"] == 0
    assert not (mirror_of(env) / ".journal.conflicts.jsonl").exists()

    # the stream holds every acknowledged update, each task's in the order it was made
    versions: dict[str, list[int]] = defaultdict(list)
    events: dict[tuple[str, int], dict] = {}
    for _, fields in r.xrange(EVENTS):
        task = json.loads(fields["task"])
        versions[task["taskId"]].append(task["version"])
        events[task["taskId"], task["version"]] = task
    last = crew.last_acked()
    assert set(versions) == set(last)
    for task_id, acked in last.items():
        assert versions[task_id] == list(range(1, acked["version"] + 1)), task_id
        assert events[task_id, acked["version"]] == acked
    for call in crew.all_calls():
        if call["rc"] == 0:
            task = call["task"]
            assert events[task["taskId"], task["version"]] == task


def test_no_journal_no_redis_exits_3_with_one_line(pulse_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {**pulse_env, "PULSE_REDIS_URL": f"unix://{tmp_path}/nobody.sock"}
    env["PULSE_DIR"] = str(blocker / "mirror")
    for args in (("create", "t", "a"), ("next", "t-20260101-000000-abcd", "x")):
        done = run(env, *args)
        assert done.returncode == 3, done.stderr
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("pulse: error: ")
        assert "cannot reach Redis" in done.stderr or "unreachable" in done.stderr


def silent_server() -> socket.socket:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_connection_attempts_are_bounded(pulse_env, free_port):
    hang = silent_server()
    try:
        for url in (f"redis://127.0.0.1:{free_port}", f"redis://127.0.0.1:{hang.getsockname()[1]}"):
            env = {**pulse_env, "PULSE_REDIS_URL": url}
            created = run(env, "create", "offline", "a", "b")
            assert created.returncode == 0 and KEPT in created.stderr  # journaled, no hang
            task_id = created.stdout.strip()
            moved = run(env, "next", task_id, "done offline")
            assert moved.returncode == 0 and KEPT in moved.stderr
            looked = run(env, "status")
            assert looked.returncode == 3 and looked.stderr.count("\n") == 1
            Path(env["PULSE_DIR"], NS, ".journal.jsonl").unlink()
    finally:
        hang.close()


# -- writers killed mid-write -----------------------------------------------------------------


def big_task(task_id: str, n: int) -> dict:
    """A snapshot of 20-600 KB whose end says how long it is: a cut file cannot pass."""
    body = f"{n}:" + "x" * random.randrange(20_000, 600_000)
    return {"taskId": task_id, "result": body, "size": len(body), "version": n}


def test_kill_9_during_mirror_writes_never_leaves_a_torn_file(tmp_path):
    mirror = Mirror(tmp_path, NS)
    ids = [f"t{i}-20260101-000000-abcd" for i in range(5)]
    kills, writers = 0, set()

    def writer(seed: int) -> int:
        pid = os.fork()
        if pid == 0:  # the child writes until it is killed
            try:
                random.seed(seed)
                for n in range(1, 10**9):
                    task = big_task(random.choice(ids), n)
                    if n % 2:
                        mirror.write(task)
                    else:
                        mirror.write_if_newer(task)
            finally:
                os._exit(0)
        return pid

    for seed in range(4):
        writers.add(writer(seed))
    seed = 4
    while kills < 1000:
        time.sleep(random.uniform(0, 0.004))
        victim = random.choice(sorted(writers))
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
        writers.remove(victim)
        kills += 1
        seed += 1
        writers.add(writer(seed))
    for pid in writers:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    names = {p.name for p in mirror.folder.iterdir()}
    done = sorted(p for p in mirror.folder.glob("*.json"))
    assert {p.name for p in done} == {f"{i}.json" for i in ids}
    for path in done:
        task = json.loads(path.read_text())
        assert task["taskId"] == path.stem and len(task["result"]) == task["size"]
    temp = re.compile(r"\.(.+)\.json\.\d+\.[0-9a-f]{6}\.tmp")
    leftovers = names - {p.name for p in done} - {".lock"}
    assert all(temp.fullmatch(name) for name in leftovers), leftovers
    assert leftovers  # some kills did land mid-write (about a quarter of them, typically)


# -- script cache flushed, Redis restarted between calls -------------------------------------


def test_script_flush_and_restarts_between_calls_fail_no_call(durable, pulse_env):
    env = {**pulse_env, "PULSE_REDIS_URL": durable.url}
    r = durable.client()
    task_id = ok(env, "create", "deploy", "a", "b", "c").strip()
    for args in [
        ("heartbeat", task_id, "--progress", "10", "going"),
        ("next", task_id, "a done"),
        ("status", task_id),
        ("next", task_id, "b done"),
        ("done", task_id, "shipped"),
        ("create", "second", "only"),
    ]:
        r.script_flush()
        ok(env, *args)
    for args in [("create", "third", "x", "y"), ("status",), ("recover",), ("sync",)]:
        durable.restart()  # an empty script cache again, and every connection dropped
        ok(env, *args)

    # a long-lived client (the Python API, the relay) keeps its connection across both
    warnings: list[str] = []
    with pulse.client.Client(Settings.from_env(env), warn=warnings.append) as client:
        handle = client.create("api", ["one", "two", "three"])
        r.script_flush()
        handle.next("one done")
        durable.restart()
        handle.heartbeat("still here", progress=50)
        durable.restart()
        handle.next("two done")
        r.script_flush()
        handle.done("all done")
        assert client.get(handle.id)["version"] == 5
    assert warnings == []
    assert ok_json(env, "status", task_id)["result"] == "shipped"
    assert not (mirror_of(env) / ".journal.jsonl").exists()


# -- fuzzed ids, names and namespaces ---------------------------------------------------------

HOSTILE = [
    "..",
    "../x",
    "a/../../etc",
    "/etc/passwd",
    "x\\y",
    "x\n",
    "\nx",
    "x\r",
    "x\x1b[31m",
    "x\x7f",
    "x\u0085",
    ".hidden",
    "~root",
    "$HOME",
    "*",
    "-rf",
    "--json",
    "a b",
    "é-中文_٣",
    "x" * 130,
    "pulse:{other}:task:x",
    "}:x",
    "{other}",
    "a..b",
    "C:\\x",
    "x\u2028y",
]
# argv cannot carry NUL or lone surrogates; the in-process property below covers NUL
argv_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


def refused_cleanly(done: subprocess.CompletedProcess, codes: tuple[int, ...] = (1, 2)) -> bool:
    """Exit 1 or 2 (3: Redis unreachable) and one line saying why. A call with a well-formed id
    looks at a pending journal before it finds no such task: what it did with it (replayed, or
    left alone as made for another Redis) is a warning line before the error."""
    lines = done.stderr.splitlines()
    while len(lines) > 1 and lines[0].startswith("pulse: warning: "):
        lines.pop(0)
    return (
        done.returncode in codes
        and done.stderr.endswith("\n")
        and len(lines) == 1
        and lines[0].startswith("pulse: ")
        and "Traceback" not in done.stderr
    )


def accepted(check: Callable[[str], str], value: str) -> bool:
    try:
        return bool(check(value))
    except BadValue:
        return False


def well_formed(task_id: str) -> bool:
    return accepted(check_id, task_id)


@given(st.text(max_size=20) | st.sampled_from(HOSTILE + ["a\x00b", "\x00"]))
@settings(max_examples=2000, deadline=None)
def test_an_accepted_id_or_namespace_is_a_plain_name(value):
    """What check_id or check_namespace lets through becomes a key and a file name as is."""
    for check in (check_id, check_namespace):
        try:
            check(value)
        except BadValue:
            continue
        assert value not in ("", ".", "..")
        assert ".." not in value or check is check_namespace
        assert not re.search(r"[\x00-\x1f\x7f-\x9f/\\:{}*\s]", value), repr(value)
    try:
        path = Mirror(Path("/m"), "ns").path(value)
    except BadValue:
        return
    assert path.parent == Path("/m/ns") and Keys("ns").task(value).startswith("pulse:{ns}:task:")


def test_fuzzed_ids_names_and_namespaces_stay_inside_the_folder_and_the_namespace(
    env, server, tmp_path
):
    r = server.client()
    root = Path(env["PULSE_DIR"])
    offline = {**env, "PULSE_REDIS_URL": f"unix://{tmp_path}/nobody.sock"}
    valid_ns = {NS}

    ids = st.sampled_from(["{id}", "{prefix}"]) | argv_text  # the new task's id, or fuzz

    @given(name=argv_text, task_id=ids, ns=st.just(NS) | argv_text, up=st.booleans())
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def calls(name: str, task_id: str, ns: str, up: bool) -> None:
        e = {**(env if up else offline), "PULSE_NAMESPACE": ns}
        if accepted(check_namespace, ns or "default"):  # unset or empty: the default one
            valid_ns.add(ns or "default")
        created = run(e, "create", name, "step")
        if created.returncode == 0:
            assert created.stdout.count("\n") == 1
            new_id = created.stdout.strip()
            task_id = {"{id}": new_id, "{prefix}": new_id[:-3]}.get(task_id, task_id)
        else:
            assert refused_cleanly(created), created
        for args in (("next", task_id, name), ("status", task_id), ("done", task_id)):
            done = run(e, *args)
            if task_id == "" or task_id.startswith("-"):  # the listing, or an option
                assert done.returncode == 0 or refused_cleanly(done, (1, 2, 3)), (args, done)
            elif not well_formed(task_id):
                assert refused_cleanly(done) and "replayed" not in done.stderr, done
            else:  # offline, an id the mirror does not know: Redis unreachable (3)
                assert done.returncode == 0 or refused_cleanly(done, (1, 2, 3)), (args, done)

    calls()
    prefixes = tuple(f"pulse:{{{ns}}}:" for ns in valid_ns)
    assert all(key.startswith(prefixes) for key in r.keys("*")), r.keys("*")
    folders = [root / ns for ns in valid_ns]
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_relative_to(tmp_path / "data"):
            assert path.parent in folders, path


# -- recover in pipelines; the journal and stall alerts ---------------------------------------


def test_recover_pipelines_restores_and_survives_a_script_flush_in_between(
    server, tmp_path, monkeypatch
):
    class FlushingFirst:
        """The server's script cache is flushed right before each pipeline goes out."""

        def __init__(self, conn) -> None:
            self.conn, self.url = conn, conn.url

        def call(self, *args):
            return self.conn.call(*args)

        def pipeline(self, commands):
            self.conn.call("SCRIPT", "FLUSH")
            return self.conn.pipeline(commands)

        def connect(self) -> None:
            self.conn.connect()

        def close(self) -> None:
            self.conn.close()

    writer = pulse.connect(server.url, dir=tmp_path, namespace=NS)
    ids = [writer.create(f"t{i}", ["a", "b"]).id for i in range(10)]
    writer.next(ids[0], "a done")
    before = {t: writer.get(t) for t in ids}
    writer.close()  # the Python API mirrors in the background: wait for its files
    server.client().flushall()

    monkeypatch.setattr(pulse.client, "RECOVER_BATCH", 3)  # 4 pipelines, the last of 1
    settings = Settings(redis_url=server.url, namespace=NS, dir=tmp_path)
    with pulse.client.Client(settings, FlushingFirst(connect(server.url))) as client:
        report = client.recover()
        assert (report.restored, report.unchanged, report.refused) == (10, 0, [])
        assert {t: client.get(t) for t in ids} == before
        assert client.recover().unchanged == 10


def test_a_journaled_update_survives_a_stall_alert_made_before_its_replay(durable, tmp_path):
    with pulse.connect(durable.url, dir=tmp_path, namespace=NS, stall_seconds=1) as agent:
        task_id = agent.create("deploy", ["a", "b"]).id
        durable.stop()
        assert agent.next(task_id, "a done while Redis was down").task["version"] == 2
        durable.start()
        # Redis is back; the relay's stall check comes before the agent's next call
        mark_stalled(durable.client(), NS, time.time() + 5, timezone.utc)
        agent.sync()
        steps = agent.get(task_id)["steps"]
    assert steps[0] == {**steps[0], "status": "done", "message": "a done while Redis was down"}
