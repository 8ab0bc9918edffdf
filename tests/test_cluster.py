"""pulse on a real Redis Cluster of three masters: every verb through any node, namespaces
spread over the nodes, redirects remembered, slots migrating (ASK, TRYAGAIN), `watch` live."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from pulse.client import Client
from pulse.cluster import command_key, key_slot
from pulse.settings import Settings
from pulse.transport import SocketConnection, sharded_channels
from tests.cluster_proc import Cluster, call
from tests.conftest import _run_pulse


@pytest.fixture
def fresh(cluster: Cluster) -> Cluster:
    cluster.flushall()
    return cluster


def env_for(pulse_env: dict[str, str], url: str, namespace: str) -> dict[str, str]:
    return {**pulse_env, "PULSE_REDIS_URL": url, "PULSE_NAMESPACE": namespace}


def owner_client(cluster: Cluster, namespace: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis(port=cluster.owner(namespace).port, decode_responses=True)


def test_the_key_of_each_command_pulse_sends() -> None:
    assert command_key(("EVALSHA", "f00", 4, "pulse:{a}:task:x", "k2", "k3", "k4", "arg")) == (
        "pulse:{a}:task:x"
    )
    assert command_key(("EVAL", "return 1", 0)) is None
    assert command_key(("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "STREAMS", "s", ">")) == "s"
    assert command_key(("XGROUP", "CREATE", "s", "g", "0", "MKSTREAM")) == "s"
    assert command_key(("XINFO", "GROUPS", "s")) == "s"
    assert command_key(("HGET", "h", "snap")) == "h"
    assert command_key((b"zrangebylex", "z", b"[a", b"[a\xff")) == "z"
    assert command_key(("PING",)) is None and command_key(("HELLO", "2")) is None


def test_sharded_channels_on_a_cluster_of_redis_7_or_later_only() -> None:
    assert sharded_channels({"mode": "cluster", "version": "7.0.15"})
    assert sharded_channels({"mode": "cluster", "version": "8.1.8", "server": "valkey"})
    assert not sharded_channels({"mode": "cluster", "version": "6.2.14"})
    assert not sharded_channels({"mode": "standalone", "version": "7.0.15"})
    assert not sharded_channels({})


def test_key_slot_is_the_clusters(cluster: Cluster) -> None:
    for key in ("pulse:{team}:events", "pulse:{a}:task:x", "plain", "{}x", "a{}{b}", "{ß}"):
        assert key_slot(key) == int(call(cluster.nodes[0].port, "CLUSTER", "KEYSLOT", key))


def test_every_verb_through_a_node_that_does_not_own_the_namespace(fresh, pulse_env, tmp_path):
    cluster, ns = fresh, "team"
    env = env_for(pulse_env, cluster.other(ns).url, ns)

    def pulse(*args: str) -> str:
        done = _run_pulse(env, *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout.strip()

    task = pulse("create", "deploy", "build", "test", "ship")
    pulse("next", task, "built")
    pulse("heartbeat", task[:12], "half", "--progress", "50")  # a prefix: a read, then a script
    failing = pulse("create", "other", "one")
    pulse("error", failing, "broke")
    assert json.loads(pulse("status", task, "--json"))["steps"][1]["progress"] == 50
    pulse("next", task)
    pulse("done", task, "shipped")
    shown = json.loads(pulse("status", "--all", "--json"))
    assert {t["taskId"]: t["status"] for t in shown["tasks"]} == {task: "done", failing: "error"}

    raw = owner_client(cluster, ns)
    kinds = [f["kind"] for _, f in raw.xrange(f"pulse:{{{ns}}}:events")]
    assert kinds == ["create", "next", "heartbeat", "create", "error", "next", "done"]
    assert json.loads(raw.hget(f"pulse:{{{ns}}}:task:{task}", "snap"))["result"] == "shipped"
    # nothing landed anywhere else
    for node in cluster.nodes:
        if node is not cluster.owner(ns):
            assert call(node.port, "DBSIZE") == 0

    assert pulse("cleanup", "--days", "0") == "removed 2 finished tasks"
    assert raw.exists(f"pulse:{{{ns}}}:task:{task}") == 0
    running = pulse("create", "again", "one")
    raw.delete(f"pulse:{{{ns}}}:task:{running}")  # Redis lost it; the mirror has it
    assert pulse("recover", "--json") and raw.exists(f"pulse:{{{ns}}}:task:{running}") == 1
    assert pulse("sync") == "replayed 0 journaled updates"


def test_namespaces_spread_over_the_nodes_through_one_url(fresh, tmp_path):
    cluster = fresh
    names = cluster.namespaces(6, per_master=True)
    assert len({cluster.owner(n).port for n in names}) == 3
    url = cluster.nodes[0].url
    ids = {}
    for name in names:
        with Client(Settings(redis_url=url, namespace=name, dir=tmp_path)) as client:
            handle = client.create(f"job in {name}", ["a", "b"])
            handle.next("a done")
            ids[name] = handle.id
    for name in names:
        raw = owner_client(cluster, name)
        snap = json.loads(raw.hget(f"pulse:{{{name}}}:task:{ids[name]}", "snap"))
        assert (snap["namespace"], snap["version"]) == (name, 2)
        with Client(Settings(redis_url=url, namespace=name, dir=tmp_path)) as client:
            assert [t["taskId"] for t in client.status()] == [ids[name]]


def test_a_create_with_an_operation_id_applies_once_on_a_cluster(fresh, tmp_path):
    # the operation's key shares the namespace's hash tag: one slot, one script
    name = fresh.namespaces(3, per_master=True)[1]
    url = next(n.url for n in fresh.nodes if n.port != fresh.owner(name).port)
    with Client(Settings(redis_url=url, namespace=name, dir=tmp_path)) as client:
        first = client.create("job", ["a"], op_id="job-1")
        retry = client.create("job", ["a"], op_id="job-1")
        assert retry.id == first.id and retry.change.kind == "applied"
        assert [t["taskId"] for t in client.status()] == [first.id]


def test_one_connection_remembers_where_each_namespace_lives(fresh, tmp_path, monkeypatch):
    cluster = fresh
    names = cluster.namespaces(3, per_master=True)
    conn = SocketConnection(cluster.other(names[0]).url)
    sent: list[tuple[int, str]] = []
    roundtrip = SocketConnection._roundtrip

    def counted(self: SocketConnection, commands):  # type: ignore[no-untyped-def]
        sent.extend((self._port, str(c[0])) for c in commands)
        return roundtrip(self, commands)

    monkeypatch.setattr(SocketConnection, "_roundtrip", counted)
    clients = {n: Client(Settings(redis_url="", namespace=n, dir=tmp_path), conn) for n in names}
    handles = {n: c.create("job", ["a", "b", "c"]) for n, c in clients.items()}
    sent.clear()
    for _ in range(5):
        for handle in handles.values():
            handle.heartbeat("still at it")
    # every update went straight to its namespace's master: no redirect, one round trip each
    owners = [cluster.owner(n).port for n in names]
    assert sent == [(port, "EVALSHA") for port in owners] * 5
    conn.close()


def test_a_slot_moving_to_another_node_is_followed(fresh, pulse_env):
    """TRYAGAIN (waited out) while the namespace's keys are split between two nodes, MOVED once
    the slot has moved, and ASK for a key already on the node a slot is moving to. (A script
    whose keys do not all exist yet, e.g. a step history not written so far, meets TRYAGAIN
    on the importing node until the move ends: Redis Cluster's rule for multi-key commands.)"""
    cluster, ns = fresh, "moving"
    source, target = cluster.owner(ns), cluster.other(ns)
    env = env_for(pulse_env, source.url, ns)
    task = _run_pulse(env, "create", "move", "a", "b", "c", "d").stdout.strip()
    slot = cluster.slot(ns)
    ids = {p: call(p, "CLUSTER", "MYID") for p in (source.port, target.port)}

    def move(src: int, dst: int, keys: list[str] | None = None, finish: bool = True) -> None:
        if keys is None:
            keys = [str(k) for k in call(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)]
        if keys:
            call(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
        if finish:
            for port in (src, dst):
                call(port, "CLUSTER", "SETSLOT", slot, "NODE", ids[dst])

    def start(src: int, dst: int) -> list[str]:
        call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
        call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
        return [str(k) for k in call(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)]

    def pulse(*args: str) -> str:
        done = _run_pulse(env, *args)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return done.stdout

    keys = start(source.port, target.port)
    move(source.port, target.port, keys[:1], finish=False)  # split: TRYAGAIN until it ends
    threading.Timer(0.3, move, [source.port, target.port]).start()
    pulse("next", task, "during the migration")
    assert call(source.port, "DBSIZE") == 0
    pulse("next", task, "moved")  # the source answers MOVED

    task_key = f"pulse:{{{ns}}}:task:{task}"
    start(target.port, source.port)  # and back: the task's hash first
    move(target.port, source.port, [task_key], finish=False)
    shown = json.loads(pulse("status", task, "--json"))  # HGET: ASK from the target
    assert [s.get("message") for s in shown["steps"][:2]] == ["during the migration", "moved"]
    move(target.port, source.port)
    assert call(target.port, "DBSIZE") == 0
    pulse("next", task, "back")
    snap = json.loads(owner_client(cluster, ns).hget(task_key, "snap"))
    assert [s.get("message") for s in snap["steps"][:3]] == [
        "during the migration",
        "moved",
        "back",
    ]


def test_the_live_channel_is_sharded_where_the_server_has_it(fresh, pulse_env):
    cluster, ns = fresh, "live"
    hello = call(cluster.nodes[0].port, "HELLO", "2")
    version = int(str(hello[hello.index("version") + 1]).split(".")[0])
    env = env_for(pulse_env, cluster.other(ns).url, ns)
    watch = subprocess.Popen(
        [sys.executable, "-m", "pulse", "watch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        owner = cluster.owner(ns).port
        channel = f"pulse:{{{ns}}}:events"
        cluster.wait_until(lambda: cluster.subscribed(ns), "watch subscribed")
        if version >= 7:  # sharded, on the node that serves the namespace
            assert channel in call(owner, "PUBSUB", "SHARDCHANNELS")
            assert all(channel not in call(n.port, "PUBSUB", "CHANNELS") for n in cluster.nodes)
        task = _run_pulse(env, "create", "watched", "one").stdout.strip()
        assert _run_pulse(env, "done", task, "fine").returncode == 0
        lines = [watch.stdout.readline().split() for _ in range(2)] if watch.stdout else []
        assert [(line[1], line[2]) for line in lines] == [("create", task), ("done", task)]
    finally:
        watch.kill()
        watch.wait()


def test_redis_client_is_a_cluster_client_on_a_cluster(cluster: Cluster) -> None:
    import redis

    from pulse.connection import redis_client

    client = redis_client(Settings(redis_url=cluster.nodes[0].url))
    try:
        assert isinstance(client, redis.RedisCluster)
        for name in cluster.namespaces(6):
            client.set(f"pulse:{{{name}}}:probe", 1)  # each to the node serving it
    finally:
        client.close()


def test_the_cli_says_one_line_when_no_node_answers(pulse_env, free_port) -> None:
    env = env_for(pulse_env, f"redis://127.0.0.1:{free_port}", "x")
    done = _run_pulse(env, "status")
    assert done.returncode == 3 and len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_the_acl_users_of_docs_work_on_a_cluster(fresh, pulse_env):
    """docs/acl.md's agent user plus its cluster line, on every node: every verb and `watch`
    through a node that does not serve the namespace; another namespace is out of reach (the
    nodes it is redirected to see the same user, never `default`)."""
    from tests.test_acl import doc_lines, rules

    cluster, ns = fresh, "team"  # the namespace test_acl fills in
    hello = call(cluster.nodes[0].port, "HELLO", "2")
    sharded = int(str(hello[hello.index("version") + 1]).split(".")[0]) >= 7
    line = next(iter(doc_lines("redis-cli -h NODE -p PORT ACL SETUSER pulse-agent ")))
    extra = [w.strip("'") for w in line.split()[8:]]
    if not sharded:
        extra = [w for w in extra if w not in ("+spublish", "+ssubscribe")]
    for node in cluster.nodes:
        call(node.port, "ACL", "SETUSER", "pulse-agent", "reset", *rules("pulse-agent"), *extra)
        call(node.port, "ACL", "SETUSER", "pulse-agent", ">agent-pw")
    try:
        url = f"redis://pulse-agent:agent-pw@127.0.0.1:{cluster.other(ns).port}"
        env = env_for(pulse_env, url, ns)
        watch = subprocess.Popen(
            [sys.executable, "-m", "pulse", "watch"], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            cluster.wait_until(lambda: cluster.subscribed(ns), "watch subscribed")
            task = _run_pulse(env, "create", "guarded", "a", "b").stdout.strip()
            for verb in (("next", task), ("heartbeat", task, "hi"), ("done", task, "ok")):
                done = _run_pulse(env, *verb)
                assert done.returncode == 0 and done.stderr == "", done.stderr
            assert json.loads(_run_pulse(env, "status", task, "--json").stdout)["status"] == "done"
            lines = [watch.stdout.readline().split()[1] for _ in range(4)] if watch.stdout else []
            assert lines == ["create", "next", "heartbeat", "done"]
        finally:
            watch.kill()
            watch.wait()
        other = cluster.namespaces(6, per_master=True)
        elsewhere = next(n for n in other if cluster.owner(n) is not cluster.owner(ns))
        refused = _run_pulse(env_for(pulse_env, url, elsewhere), "status")
        assert refused.returncode == 3 and "NOPERM" in refused.stderr
        assert all(call(n.port, "DBSIZE") == 0 for n in cluster.nodes if n is not cluster.owner(ns))
    finally:
        for node in cluster.nodes:
            call(node.port, "ACL", "DELUSER", "pulse-agent")


def test_the_workers_feed_and_stall_alerts_through_any_node(fresh, tmp_path):
    """The workers' redis-py cluster client (redis_client): a consumer group read, and stall
    alerts emitted by stall.lua on the sharded channel, through a node that does not serve
    the namespace."""
    from datetime import timezone

    from pulse.connection import redis_client
    from pulse.events import Feed, listen, mark_stalled

    cluster, ns = fresh, "relayed"
    settings = Settings(redis_url=cluster.other(ns).url, namespace=ns, dir=tmp_path)
    client = redis_client(settings)
    live = listen(client, ns, tick=0.1)
    next(live)  # subscribed
    with Client(settings) as c:
        task = c.create("relayed", ["a"], stall=1)
    feed = Feed(client, ns, "relay:console", "one")
    feed.ensure_group("0")
    assert [e.kind for e in feed.read(10).events] == ["create"]
    stalled = mark_stalled(client, ns, time.time() + 60, timezone.utc)
    assert [(e.kind, e.task["taskId"]) for e in stalled] == [("stall", task.id)]
    assert [e.kind for e in feed.read(10).events] == ["stall"]
    seen = []
    for event in live:  # both were published while nobody read: delivered now
        if event is not None:
            seen.append(event)
        if len(seen) == 2:
            break
    assert [(e.kind, e.task["taskId"]) for e in seen] == [("create", task.id), ("stall", task.id)]
    live.close()
    client.close()
