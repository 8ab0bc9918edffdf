"""Updates made while Redis is down: 4 agent processes keep calling the CLI through an outage.

Each agent (on a host of its own: its own PULSE_DIR, so its own mirror and journal) runs
``pulse heartbeat`` and ``pulse next`` in a loop on tasks of 20 steps, a new process per call,
and logs every call. Redis (AOF, as the team stack runs it) is stopped for 30 s (``--quick``:
5 s) and started again. During the outage each update is journaled (exit 0, one warning); the
agent's next call after Redis is back replays its journal first.

Figures: updates made during the outage; lost (an acknowledged update, exit 0, missing from
the event stream or different there: must be 0); delivered after recovery (outage updates in
the stream, %); in order (each task's events are versions 1, 2, 3, ... in stream order); time
to catch up, from Redis answering again to every agent's journal replayed.

``--mode freeze`` (SIGSTOP instead of a stop) makes Redis a host that accepts connections and
never answers: every call then waits out the 2 s timeout before it journals.

    python bench/bench_outage.py [--quick] [--outage SECONDS] [--agents N] [--mode stop|freeze]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import redis

NS = "bench"
EVENTS = f"pulse:{{{NS}}}:events"
KEPT = "the update is kept in"

# One agent: tasks of STEPS steps, a heartbeat and a `next` per step, until the stop file
# appears. A failed call (exit != 0: not acknowledged) is made again. One JSON line per call.
AGENT = r"""
import json, subprocess, sys, time
from pathlib import Path

log_path, stop, name, steps = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
log = open(log_path, "a", buffering=1)


def pulse(*args):
    while True:
        t0 = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "pulse", *args, "--json"], capture_output=True, text=True
        )
        task = json.loads(done.stdout)["task"] if done.returncode == 0 else None
        log.write(json.dumps({"t0": t0, "t1": time.time(), "rc": done.returncode,
                              "stderr": done.stderr, "task": task}) + "\n")
        if task is not None:
            return task
        time.sleep(0.05)


n = 0
while not stop.exists():
    n += 1
    task_id = pulse("create", f"{name}-{n}", *[f"s{j}" for j in range(steps)])["taskId"]
    for j in range(steps):
        if stop.exists():
            break
        pulse("heartbeat", task_id, "--progress", str(5 * j), f"{name}-{n} beat {j}")
        pulse("next", task_id, f"{task_id} step {j} done")
"""


class Redis:
    """A redis-server with an AOF on a unix socket, which this script stops and starts."""

    def __init__(self, work: Path) -> None:
        from pulse.embedded import find_redis_server

        self.binary = find_redis_server()
        self.work = work
        self.socket = str(work / "redis.sock")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [self.binary, "--port", "0", "--unixsocket", self.socket, "--dir", str(self.work)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--logfile", str(self.work / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.wait_answering()

    def wait_answering(self) -> None:
        deadline = time.monotonic() + 30
        while not self.answers():
            if time.monotonic() > deadline:
                sys.exit("redis-server did not answer")
            time.sleep(0.005)

    def answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.2)
                sock.connect(self.socket)
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


def calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 5 s outage instead of 30 s")
    ap.add_argument("--outage", type=float, help="seconds Redis is down (overrides --quick)")
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--mode", choices=("stop", "freeze"), default="stop")
    a = ap.parse_args()
    outage = a.outage or (5.0 if a.quick else 30.0)

    work = Path(tempfile.mkdtemp(prefix="pulse-outage-", dir="/tmp"))
    server = Redis(work)
    server.start()
    agents: list[subprocess.Popen] = []
    try:
        version = subprocess.run([server.binary, "--version"], capture_output=True, text=True)
        print(f"# redis-server {version.stdout.split()[2][2:]}, unix socket, AOF everysec")
        print(
            f"# python {sys.version.split()[0]} on {os.cpu_count()} cpus; {a.agents} agent "
            f"processes, each with its own PULSE_DIR; outage: {a.mode} for {outage:g} s"
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "TASK_"))}
        base.update(PULSE_REDIS_URL=f"unix://{server.socket}", PULSE_NAMESPACE=NS, PULSE_TZ="0")
        (work / "agent.py").write_text(AGENT)
        stop_file = work / "stop"
        logs, dirs = [], []
        for i in range(a.agents):
            dirs.append(work / f"host{i}")
            logs.append(work / f"agent{i}.jsonl")
            env = {**base, "PULSE_DIR": str(dirs[-1])}
            argv = [sys.executable, str(work / "agent.py"), str(logs[-1]), str(stop_file)]
            agents.append(subprocess.Popen([*argv, f"a{i}", "20"], env=env))
        time.sleep(3)  # a steady stream first

        if a.mode == "freeze":
            server.proc.send_signal(signal.SIGSTOP)
        else:
            server.stop()
        time.sleep(outage)
        if a.mode == "freeze":
            server.proc.send_signal(signal.SIGCONT)
            server.wait_answering()
        else:
            server.start()
        back = time.time()
        journals = [d / NS / ".journal.jsonl" for d in dirs]
        while any(j.exists() for j in journals):
            if time.time() - back > 120:
                sys.exit("the journals were not replayed within 120 s")
            time.sleep(0.002)
        caught_up = time.time() - back
        time.sleep(2)  # and on as usual for a while
        stop_file.touch()
        for p in agents:
            p.wait(timeout=120)

        made = [c for log in logs for c in calls(log)]
        acked = [c for c in made if c["rc"] == 0]
        during = [c for c in acked if KEPT in c["stderr"]]
        r = redis.Redis(unix_socket_path=server.socket, decode_responses=True)
        stream: dict[tuple[str, int], dict] = {}
        versions: dict[str, list[int]] = defaultdict(list)
        for _, fields in r.xrange(EVENTS):
            task = json.loads(fields["task"])
            stream[task["taskId"], task["version"]] = task
            versions[task["taskId"]].append(task["version"])
        lost = [
            c for c in acked if stream.get((c["task"]["taskId"], c["task"]["version"])) != c["task"]
        ]
        delivered = sum(
            stream.get((c["task"]["taskId"], c["task"]["version"])) == c["task"] for c in during
        )
        in_order = all(v == list(range(1, len(v) + 1)) for v in versions.values())
        rejected = sum((d / NS / ".journal.conflicts.jsonl").exists() for d in dirs)
        replayed = sum(
            json.loads(
                subprocess.run(
                    [sys.executable, "-m", "pulse", "sync", "--json"],
                    env={**base, "PULSE_DIR": str(d)},
                    capture_output=True,
                    text=True,
                ).stdout
            )["replayed"]
            for d in dirs
        )
        slow = max((c["t1"] - c["t0"] for c in during), default=0.0)

        print(f"updates acknowledged (exit 0), in all        {len(acked):8d}")
        print(
            f"updates made during the outage (journaled)   {len(during):8d}"
            f"   ({len(during) / outage:.0f}/s; slowest call {slow:.2f} s)"
        )
        print(f"failed calls (exit != 0), made again         {len(made) - len(acked):8d}")
        print(f"lost                                         {len(lost):8d}")
        pct = 100 * delivered / len(during) if during else 0.0
        print(
            f"delivered after recovery                     {pct:8.1f} %"
            f" ({delivered} of {len(during)})"
        )
        print(
            f"in order per task ({len(versions)} tasks)                "
            f"{'yes' if in_order else 'NO':>8}"
        )
        print(f"time to catch up (Redis back -> journals gone){caught_up:7.2f} s")
        print(f"# then: left to replay {replayed}; rejected-journal files {rejected}")
        if lost or not in_order or replayed or rejected:
            sys.exit(1)
    finally:
        for p in agents:
            if p.poll() is None:
                p.kill()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
