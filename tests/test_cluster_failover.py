"""A master of a 3+3 Redis Cluster dies mid-task: updates made while its replica takes over
are kept (waited out, or journaled and replayed) and land in order; nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

import pulse.cluster
from pulse.client import Client
from pulse.journal import Journal
from pulse.settings import Settings
from tests.cluster_proc import Cluster, ClusterUnavailable, Node, call, cluster_proc
from tests.conftest import _run_pulse


@pytest.fixture(scope="module")
def replicated() -> Iterator[Cluster]:
    try:
        with cluster_proc(masters=3, replicas=1) as c:
            yield c
    except ClusterUnavailable as e:
        pytest.skip(str(e))


def doomed(cluster: Cluster, taken: set[int]) -> tuple[str, Node, Node]:
    """A namespace whose master still has a replica (each test kills one), that master and
    a live master that does not serve it (the URL the agents use)."""
    for name in cluster.namespaces(100):
        owner = cluster.owner(name)
        if owner.port not in taken:
            try:
                cluster.replica_of(owner)
            except LookupError:
                continue
            taken.add(owner.port)
            return name, owner, cluster.other(name)
    raise LookupError("no master with a replica left")


_taken: set[int] = set()


def kill_when_replicated(cluster: Cluster, master: Node) -> Node:
    """Kill ``master`` once its replica holds every write it acknowledged (replication is
    asynchronous: a write acknowledged in the last instant before a crash can be lost, which
    no client can help), and return that replica."""
    replica = cluster.replica_of(master)
    assert call(master.port, "WAIT", 1, 5000) == 1
    master.kill()
    return replica


def heartbeats(raw, ns: str, task: str) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """(version, message) of each heartbeat event of ``task``, in stream order."""
    out = []
    for _, fields in raw.xrange(f"pulse:{{{ns}}}:events"):
        snap = json.loads(fields["task"])
        if fields["kind"] == "heartbeat" and snap["taskId"] == task:
            out.append((snap["version"], snap["steps"][0].get("message")))
    return out


def test_cli_updates_during_a_failover_are_kept_in_order(replicated, pulse_env, tmp_path):
    cluster = replicated
    ns, master, origin = doomed(cluster, _taken)
    env = {**pulse_env, "PULSE_REDIS_URL": origin.url, "PULSE_NAMESPACE": ns}

    def pulse(*args: str) -> str:
        done = _run_pulse(env, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    watch = subprocess.Popen(
        [sys.executable, "-m", "pulse", "watch"], env=env, stdout=subprocess.PIPE, text=True
    )
    shown: list[str] = []
    threading.Thread(target=lambda: shown.extend(watch.stdout or ()), daemon=True).start()
    try:
        cluster.wait_until(lambda: cluster.subscribed(ns), "watch subscribed")
        task = pulse("create", "long", "work", "wrap up")
        for i in range(3):
            pulse("heartbeat", task, f"before {i}")
        replica = kill_when_replicated(cluster, master)
        for i in range(5):  # waited out, or journaled: exit 0 either way
            pulse("heartbeat", task, f"during {i}")
        cluster.wait_owner(ns, replica)
        # watch lost its subscription with the master, and subscribes on the replica
        cluster.wait_until(lambda: cluster.subscribed(ns), "watch subscribed again")
        pulse("heartbeat", task, "after")  # replays whatever was journaled first
        cluster.wait_until(lambda: any("after" in line for line in shown), "watch shows it")
    finally:
        watch.kill()
        watch.wait()
    assert cluster.owner(ns) is replica
    assert [line.split()[1] for line in shown[:4]] == ["create"] + ["heartbeat"] * 3

    raw = replica_client(replica)
    expected = [f"before {i}" for i in range(3)] + [f"during {i}" for i in range(5)] + ["after"]
    assert heartbeats(raw, ns, task) == list(zip(range(2, 11), expected, strict=True))
    journal = Journal(tmp_path / "mirror" / ns)
    assert not journal  # all replayed
    assert not (journal.folder / ".journal.rejected.jsonl").exists()


def test_library_updates_journaled_during_a_failover_replay_in_order(
    replicated, tmp_path, monkeypatch
):
    cluster = replicated
    ns, master, origin = doomed(cluster, _taken)
    # no waiting out the failover: every update meanwhile goes to the journal
    monkeypatch.setattr(pulse.cluster, "CLUSTER_PATIENCE", 0.0)
    warnings: list[str] = []
    client = Client(
        Settings(redis_url=origin.url, namespace=ns, dir=tmp_path), warn=warnings.append
    )
    handle = client.create("long", ["work", "wrap up"])
    handle.heartbeat("before")
    replica = kill_when_replicated(cluster, master)
    for i in range(4):
        assert handle.heartbeat(f"during {i}").event_id == ""  # journaled
    assert len(client.journal.path.read_text().splitlines()) == 4
    cluster.wait_owner(ns, replica)
    handle.heartbeat("after")
    client.close()
    assert any("replayed 4" in w for w in warnings), warnings

    expected = ["before"] + [f"during {i}" for i in range(4)] + ["after"]
    got = heartbeats(replica_client(replica), ns, handle.id)
    assert got == list(zip(range(2, 8), expected, strict=True))
    assert handle.task["version"] == 7
    assert not client.journal


def replica_client(node: Node):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis(port=node.port, decode_responses=True)


def test_a_long_lived_client_waits_out_a_failover(replicated, tmp_path, monkeypatch):
    """Its socket to the master that died is found closed, the node refuses it, and the slot
    is asked of the other nodes again until the replica has taken over: not one update
    journaled, none lost."""
    cluster = replicated
    ns, master, origin = doomed(cluster, _taken)
    # longer than any failover here, so the figure is how long it took, never a timeout
    monkeypatch.setattr(pulse.cluster, "CLUSTER_PATIENCE", 30.0)
    warnings: list[str] = []
    client = Client(
        Settings(redis_url=origin.url, namespace=ns, dir=tmp_path), warn=warnings.append
    )
    handle = client.create("long", ["work", "wrap up"])
    handle.heartbeat("before")  # the connection now knows the master, and holds a socket to it
    replica = kill_when_replicated(cluster, master)
    assert handle.heartbeat("during").event_id != ""  # applied, on the replica
    handle.heartbeat("after")
    client.close()
    assert warnings == [] and not client.journal
    got = heartbeats(replica_client(replica), ns, handle.id)
    assert got == [(2, "before"), (3, "during"), (4, "after")]
