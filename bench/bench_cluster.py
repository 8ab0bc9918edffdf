"""pulse on a local Redis Cluster, each figure a ratio against a floor measured in the same run.

1. Redirects, library: an update sent through a node that does not own the namespace, against
   the same update sent to the owner, after the first call (the connection remembers where
   the namespace lives). Target <= 1.1x.
2. Redirects, CLI: ``pulse heartbeat`` (a new process per call, so one MOVED each time)
   through a node that does not own the namespace, against the same call to the owner.
3. Throughput: updates/s of 8 namespaces, one process each, on a 3-master cluster, against
   the same 8 processes on one server (same build, TCP on 127.0.0.1 both).
4. Failover: a master of a 3+3 cluster killed while an agent updates a task every ~5 ms:
   the time from the kill to the first update applied on its replica, and updates lost.

    python bench/bench_cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, ratio_line

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pulse.client import Client  # noqa: E402
from pulse.settings import Settings  # noqa: E402
from pulse.store import Store  # noqa: E402
from pulse.transport import SocketConnection  # noqa: E402
from tests.cluster_proc import Cluster, call, cluster_proc, free_ports  # noqa: E402


def heartbeat_loop(url: str, namespace: str, work: Path):  # type: ignore[no-untyped-def]
    client = Client(Settings(redis_url=url, namespace=namespace, dir=work / "lib"))
    handle = client.create("bench", ["one"])
    handle.heartbeat("warm")  # the first call learns where the namespace lives

    def run(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            client.store.update(handle.id, "heartbeat", now="x", now_ms=i, message="m", ttl=600)
        return (time.perf_counter() - start) / n

    return run


def library(cluster: Cluster, work: Path, rounds: int, n: int) -> None:
    ns = "redirect"
    through = heartbeat_loop(cluster.other(ns).url, ns, work)
    direct = heartbeat_loop(cluster.owner(ns).url, ns, work)
    a, b = [], []
    for _ in range(rounds):
        a.append(direct(n))
        b.append(through(n))
    print(f"# library, {rounds} rounds of {n} updates, median per update:")
    print(
        f"#   to the owner {median(a) * 1e6:.0f} us, through another node {median(b) * 1e6:.0f} us"
    )
    print(ratio_line("library: through another node / owner", median(b), median(a), "<= 1.1"))


def cli(cluster: Cluster, work: Path, rounds: int, n: int) -> None:
    ns = "redirect-cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PULSE_NAMESPACE=ns, PULSE_DIR=str(work / "cli"), PULSE_TZ="0", PULSE_LANG="en")
    env["PYTHONPATH"] = str(ROOT)

    def pulse(url: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pulse", *args],
            env={**env, "PULSE_REDIS_URL": url},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    owner, other = cluster.owner(ns).url, cluster.other(ns).url
    task = pulse(owner, "create", "bench", "one")

    def timed(url: str) -> float:
        start = time.perf_counter()
        for _ in range(n):
            pulse(url, "heartbeat", task, "m")
        return (time.perf_counter() - start) / n

    a, b = [], []
    for _ in range(rounds):
        a.append(timed(owner))
        b.append(timed(other))

    # What each CLI process pays for Redis, without Python's start-up: a new connection,
    # HELLO, and one update (plus, through another node, the MOVED and a second connection).
    # This difference is all a file remembering the owner across calls could save.
    def fresh(url: str, count: int = 200) -> float:
        start = time.perf_counter()
        for _ in range(count):
            conn = SocketConnection(url)
            Store(conn, ns).update(task, "heartbeat", now="x", now_ms=1, message="m", ttl=600)
            conn.close()
        return (time.perf_counter() - start) / count

    fa, fb = [], []
    for _ in range(rounds):
        fa.append(fresh(owner))
        fb.append(fresh(other))
    print(f"# CLI, {rounds} rounds of {n} calls, median per call:")
    print(
        f"#   to the owner {median(a) * 1e3:.1f} ms, through another node {median(b) * 1e3:.1f} ms"
    )
    print(ratio_line("CLI: through another node / owner", median(b), median(a)))
    extra = median(fb) - median(fa)
    print(
        f"# a CLI call's Redis part (new connection, HELLO, one update), median: to the owner "
        f"{median(fa) * 1e6:.0f} us, through another node {median(fb) * 1e6:.0f} us"
    )
    print(ratio_line("CLI Redis part: through another node / owner", median(fb), median(fa)))
    print(
        f"# the redirect costs {extra * 1e6:.0f} us a call, {extra / median(a) * 100:.2f}% of a "
        "whole CLI call: the most a cache of the owner across calls could save"
    )


def _updater(url: str, namespace: str, work: str, seconds: float, out) -> None:  # type: ignore[no-untyped-def]
    client = Client(Settings(redis_url=url, namespace=namespace, dir=Path(work)))
    handle = client.create("bench", ["one"])
    store, count = client.store, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        store.update(handle.id, "heartbeat", now="x", now_ms=count, message="m", ttl=600)
        count += 1
    out.put(count)


def throughput(urls: list[str], work: Path, seconds: float) -> float:
    """Updates/s of 8 processes, one namespace each, the i-th through urls[i % len]."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=_updater, args=(urls[i % len(urls)], f"ns{i}", str(work), seconds, queue)
        )
        for i in range(8)
    ]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def spread(cluster: Cluster, binary: str, work: Path, rounds: int, seconds: float) -> None:
    (port,) = free_ports(1)
    single = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                call(port, "PING")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        owners = {cluster.owner(f"ns{i}").port for i in range(8)}
        urls = [n.url for n in cluster.nodes]
        one, many = [], []
        for _ in range(rounds):
            one.append(throughput([f"redis://127.0.0.1:{port}"], work, seconds))
            many.append(throughput(urls, work, seconds))
    finally:
        single.send_signal(signal.SIGTERM)
        single.wait()
    print(
        f"# 8 namespaces (on {len(owners)} of 3 masters), one process each, {seconds:g} s rounds:"
    )
    print(f"#   one server {median(one):,.0f} updates/s, 3-master cluster {median(many):,.0f}/s")
    print(ratio_line("cluster / one server, updates/s", median(many), median(one)))


def failover(work: Path) -> None:
    with cluster_proc(masters=3, replicas=1) as cluster:
        ns = "failover"
        master = cluster.owner(ns)
        replica = cluster.replica_of(master)
        warnings: list[str] = []
        settings = Settings(redis_url=cluster.other(ns).url, namespace=ns, dir=work / "fo")
        client = Client(settings, warn=warnings.append)
        handle = client.create("bench", ["one"])
        for _ in range(20):
            handle.heartbeat("before")
            time.sleep(0.005)
        assert call(master.port, "WAIT", 1, 5000) == 1
        sent = 20
        killed = time.monotonic()
        master.kill()
        first_applied = None
        journaled = 0
        while first_applied is None or time.monotonic() < first_applied + 0.5:
            change = handle.heartbeat(f"after {sent}")
            sent += 1
            if change.event_id == "":
                journaled += 1
            elif first_applied is None:
                first_applied = time.monotonic()
            time.sleep(0.005)
        client.close()
        import redis

        raw = redis.Redis(port=replica.port, decode_responses=True)
        version = int(raw.hget(f"pulse:{{{ns}}}:task:{handle.id}", "version"))
        events = raw.xlen(f"pulse:{{{ns}}}:events")
        print(
            f"# failover: cluster-node-timeout {500} ms; an update every ~5 ms through another node"
        )
        print(
            f"failover: kill -> first update applied on the replica {first_applied - killed:.2f} s"
        )
        print(
            f"failover: updates sent {sent}, applied {version - 1} (events {events - 1}), "
            f"journaled meanwhile {journaled}, lost {sent - (version - 1)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    opts = ap.parse_args()
    rounds = 3 if opts.quick else 9
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-cluster-", dir="/tmp"))
    try:
        with cluster_proc(masters=3) as cluster:
            version = subprocess.run(
                [cluster.binary, "--version"], capture_output=True, text=True
            ).stdout.split()[2]
            print(f"# server: {cluster.binary} ({version}); 3 masters on 127.0.0.1 TCP")
            print(f"# python {sys.version.split()[0]} on {os.cpu_count()} cpus")
            library(cluster, work, rounds * 3, 300 if opts.quick else 500)
            cli(cluster, work, rounds, 10 if opts.quick else 20)
            spread(cluster, cluster.binary, work, rounds, 2.0 if opts.quick else 4.0)
        failover(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
