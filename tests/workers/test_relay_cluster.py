"""The relay on a real Redis Cluster of three masters: one process relays several namespaces
that live on different nodes, each with its own lease; a standby takes each one over."""

from __future__ import annotations

import time

from pulse.client import Client
from pulse.settings import Settings
from tests.cluster_proc import call
from tests.workers.conftest import Receiver, Relays, audit, wait_until


def test_relays_serve_namespaces_spread_over_the_nodes(cluster, pulse_env, tmp_path):
    import redis

    cluster.flushall()
    names = cluster.namespaces(3, per_master=True)
    assert len({cluster.owner(ns).port for ns in names}) == 3  # one namespace per master
    url = cluster.nodes[0].url  # any node: the relay finds where each namespace lives
    env = {**pulse_env, "PULSE_REDIS_URL": url}
    client = redis.RedisCluster.from_url(url, decode_responses=True)
    receiver = Receiver()
    relays = Relays(env, tmp_path, client)
    try:
        args = ["--sink", f"webhook+{receiver.url}/hook"]
        for ns in names:
            args += ["--namespace", ns]
        relays.start(*args, name="a")
        relays.start(*args, name="b")
        for ns in names:
            relays.wait_active(namespace=ns)
        writers = {
            ns: Client(Settings(redis_url=cluster.owner(ns).url, namespace=ns, dir=tmp_path / ns))
            for ns in names
        }
        ids = {ns: w.create(f"job in {ns}", ["a", "b", "c"]).id for ns, w in writers.items()}
        for ns, w in writers.items():
            w.next(ids[ns], "a done")
        first = relays.active(names[0])
        assert first is not None
        relays.procs[first].kill()  # the other relay takes this namespace (and any it held)
        wait_until(lambda: all(relays.active(ns) not in (None, first) for ns in names), 10)
        for ns, w in writers.items():
            w.next(ids[ns], "b done")
            w.done(ids[ns], "shipped")
        streams = {ns: client.xrange(f"pulse:{{{ns}}}:events") for ns in names}
        every = [entry for stream in streams.values() for entry in stream]
        wait_until(lambda: audit(every, receiver.delivered)["lost"] == 0, 20)
        time.sleep(0.5)
        got = audit(every, receiver.delivered)
        assert got["lost"] == 0 and got["backwards"] == 0 and got["made_up"] == 0
        assert got["duplicates"] <= len(names)  # at most the push in hand per task
        assert {d["task"] for d in receiver.delivered} == set(ids.values())
        for ns in names:  # each lease lives in its namespace's slot, on its own node
            lease = f"pulse:{{{ns}}}:relay:relay"
            assert call(cluster.owner(ns).port, "EXISTS", lease) == 1
        for w in writers.values():
            w.close()
    finally:
        relays.stop_all()
        receiver.stop()
        client.close()
