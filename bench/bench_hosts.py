"""Two hosts write the same 20 tasks while one of them loses Redis for 30 s.

Each host is a process using the library as an agent does (``pulse.client.Client``, its own
PULSE_DIR, so its own mirror and journal). Host A reaches Redis through a proxy (a unix socket
this script forwards to the server's), which is cut for the outage: its connections closed and
its socket gone, so A's connection attempts fail at once, as against a port that refuses. Host
B stays online. Both send
``next`` (40%) and ``heartbeat`` (60%) to random tasks of the same 20 (100 steps each), every
message unique, and log each call acknowledged.

Figures: updates made (acknowledged), of them journaled; applied (found in the event stream,
each exactly once); reported as conflicts (in the hosts' conflict files); lost = made - applied
- conflicts (must be 0); applied twice (must be 0); time to converge after the outage: from
the proxy coming back to A's journal replayed. A's mirror must then hold, for every task, a
snapshot Redis had (the event of that version), none of A's offline guesses.

    python bench/bench_hosts.py [--quick] [--outage SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
NS = "bench"
EVENTS = f"pulse:{{{NS}}}:events"
TASKS = 20
STEPS = 100

AGENT = r"""
import json, random, sys, time
from pathlib import Path
from pulse.client import Client
from pulse.errors import PulseError
from pulse.settings import Settings

name, log_path, stop, ids = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4].split(",")
client = Client(Settings.from_env(), warn=lambda m: None)
log = open(log_path, "a", buffering=1)
rng = random.Random(name)
n = 0
while not stop.exists():
    n += 1
    task = rng.choice(ids)
    op = "next" if rng.random() < 0.4 else "heartbeat"
    message = f"{name}-{n}"
    try:
        change = client.update(task, op, message)
    except PulseError as e:
        log.write(json.dumps({"m": message, "ok": False, "why": str(e)[:80]}) + "\n")
        continue
    log.write(json.dumps({"m": message, "ok": True, "journaled": not change.event_id,
                          "t": time.time()}) + "\n")
    time.sleep(0.01)
"""


class Proxy:
    """A unix socket forwarding to Redis's, which can be cut (every connection closed, the
    socket gone) and mended."""

    def __init__(self, path: Path, target: Path) -> None:
        self.path, self.target = path, target
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.mend()

    def mend(self) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        assert self.listener is not None
        self.listener.close()
        self.path.unlink()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def introduced(before: dict | None, after: dict) -> set[str]:
    """The messages an event's snapshot holds that the task's previous one did not."""

    def said(task: dict | None) -> set[str]:
        if task is None:
            return set()
        found = {s.get("message") for s in task["steps"]} | {task["result"], task["error"]}
        return {m for m in found if m}

    return said(after) - said(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 5 s outage")
    parser.add_argument("--outage", type=float, default=None)
    args = parser.parse_args()
    outage = args.outage or (5.0 if args.quick else 30.0)

    sys.path.insert(0, str(ROOT))
    from pulse.client import Client
    from pulse.embedded import find_redis_server
    from pulse.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="pulse-bench-hosts-", dir="/tmp"))
    sock = work / "redis.sock"
    server = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--appendonly", "no", "--dir", str(work), "--logfile", str(work / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    agents: list[subprocess.Popen] = []
    try:
        r = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "TASK_"))}
        env.update(PULSE_NAMESPACE=NS, PYTHONPATH=str(ROOT), PULSE_TZ="0")
        proxy = Proxy(work / "A.sock", sock)
        hosts = {}
        for name, path in (("A", work / "A.sock"), ("B", sock)):
            hosts[name] = {
                **env,
                "PULSE_REDIS_URL": f"unix://{path}",
                "PULSE_DIR": str(work / f"dir{name}"),
            }
        # the 20 tasks, known to both hosts (each has them in its mirror)
        clients = {n: Client(Settings.from_env(e), warn=lambda m: None) for n, e in hosts.items()}
        ids = [
            clients["A"].create(f"t{i}", [f"s{j}" for j in range(STEPS)]).id for i in range(TASKS)
        ]
        for task_id in ids:
            clients["B"].heartbeat(task_id, "B knows it")
            clients["A"].heartbeat(task_id, "A knows it")
        for c in clients.values():
            c.close()
        (work / "agent.py").write_text(AGENT)
        stop = work / "stop"
        logs = {n: work / f"log{n}.jsonl" for n in hosts}
        for n, e in hosts.items():
            agents.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(work / "agent.py"),
                        n,
                        str(logs[n]),
                        str(stop),
                        ",".join(ids),
                    ],
                    env=e,
                )  # fmt: skip
            )
        time.sleep(3)
        proxy.cut()  # host A loses Redis
        print(f"# outage of host A: {outage:g} s; host B stays online")
        time.sleep(outage)
        proxy.mend()
        back = time.monotonic()
        journal = Path(hosts["A"]["PULSE_DIR"]) / NS / ".journal.jsonl"
        while journal.exists() and time.monotonic() - back < 120:
            time.sleep(0.01)
        replayed_after = time.monotonic() - back
        time.sleep(3)
        stop.touch()
        for a in agents:
            a.wait(timeout=60)
        subprocess.run([sys.executable, "-m", "pulse", "sync"], env=hosts["A"], check=True,
                       capture_output=True)  # fmt: skip

        calls = {n: [json.loads(x) for x in logs[n].read_text().splitlines()] for n in hosts}
        made = {c["m"] for n in hosts for c in calls[n] if c["ok"]}
        journaled = sum(c["ok"] and c["journaled"] for n in hosts for c in calls[n])
        applied: dict[str, int] = {}
        last: dict[str, dict] = {}
        history: dict[tuple[str, int], dict] = {}
        for _, fields in r.xrange(EVENTS):
            task = json.loads(fields["task"])
            if fields["kind"] in ("next", "heartbeat", "done", "error"):
                for m in introduced(last.get(task["taskId"]), task):
                    applied[m] = applied.get(m, 0) + 1
            last[task["taskId"]] = task
            history[task["taskId"], task["version"]] = task
        conflicts = set()
        for e in hosts.values():
            path = Path(e["PULSE_DIR"]) / NS / ".journal.conflicts.jsonl"
            if path.exists():
                conflicts |= {json.loads(x)["message"] for x in path.read_text().splitlines()}
        landed = {m for m in applied if m in made}
        lost = made - landed - conflicts
        twice = [m for m, k in applied.items() if k > 1 and m in made]
        # every event introduces the one message of its update (heartbeats of a step overwrite
        # each other later, so the final snapshots alone would not show them all)
        mirror_ok = 0
        for task_id in ids:
            have = json.loads((Path(hosts["A"]["PULSE_DIR"]) / NS / f"{task_id}.json").read_text())
            mirror_ok += "unconfirmed" not in have and history.get((task_id, have["version"])) == {
                **have,
                "stalled": False,
            }
        print(f"updates made (acknowledged): {len(made)}  (A: "
              f"{sum(c['ok'] for c in calls['A'])}, B: {sum(c['ok'] for c in calls['B'])}); "
              f"journaled by A during the outage: {journaled}")  # fmt: skip
        print(f"applied (in the event stream): {len(landed)}")
        print(f"reported as conflicts: {len(conflicts)}")
        print(f"lost: {len(lost)}   applied twice: {len(twice)}")
        print(f"time to converge: A's journal ({journaled} updates) replayed "
              f"{replayed_after:.2f} s after the outage ended")  # fmt: skip
        print(f"A's mirror holds a snapshot Redis had (none of its offline guesses) for "
              f"{mirror_ok}/{TASKS} tasks")  # fmt: skip
        if lost or twice or mirror_ok != TASKS:
            print("FAIL")
            sys.exit(1)
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
