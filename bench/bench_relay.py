"""The relay (``pulse-relay``) end to end, on one machine: a private redis-server (unix
socket), a loopback webhook receiver in this process (HTTP/1.1 keep-alive; answers at once or
after ``--delay``), relays as real subprocesses (``python -m pulse_workers``).

Events are real ``next`` snapshots of 64 tasks (versions counting up per task), written with
XADD by a producer process of its own: ``next`` is never dropped or throttled, so every event
is a push.

1. latency: event-to-webhook at 200 events/s (from just before XADD to the push's arrival),
   against floor B, measured in the same run: a bare consumer process doing XREADGROUP BLOCK
   then a keep-alive POST of each entry to the same receiver, then XACK.
2. throughput: N events waiting, one active relay started, timed until every push arrived;
   to an instant receiver and to one answering in 50 ms.
3. soak: 200 events/s to the 50 ms receiver for --soak seconds: the largest lag (entries not
   yet acknowledged), the relay's memory (RSS) at the start and the end.
4. takeovers: three relays, 200 events/s, --takeovers forced takeovers (SIGKILL and SIGSTOP
   in turn, the frozen one woken after the takeover): takeover time (signal to the lease
   changing hands), lost, out of order and duplicate pushes at the receiver.

    python bench/bench_relay.py [--only 1,2,3,4] [--soak 600] [--takeovers 20] [--lease 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
from _common import Server, add_pin_option, redis_server

NS = "bench"
EVENTS = f"pulse:{{{NS}}}:events"
LEASE_KEY = f"pulse:{{{NS}}}:relay:relay"
TASKS = 64
RATE = 200
ROOT = Path(__file__).resolve().parent.parent

# -- the receiver ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:  # a relay killed mid-request: nothing was delivered
            self.close_connection = True
            return
        if self.server.delay:  # type: ignore[attr-defined]
            time.sleep(self.server.delay)  # type: ignore[attr-defined]
        at = time.time()
        # recorded before the answer: the relay sends a task's next push only after it, so
        # the list keeps each task's order (appended after, two threads could swap them)
        self.server.arrivals.append((at, body))  # type: ignore[attr-defined]
        self.send_response_only(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a relay killed mid-request resets its connection: expected here


class Receiver:
    def __init__(self, delay: float = 0.0) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.delay = delay  # type: ignore[attr-defined]
        self.server.arrivals = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def arrivals(self) -> list[tuple[float, bytes]]:
        return self.server.arrivals  # type: ignore[attr-defined]

    def pushes(self) -> list[tuple[float, str, str, int]]:
        """(arrival, event id, task id, version) of every push so far."""
        out = []
        for at, body in list(self.arrivals):
            data = json.loads(body)
            event = data.get("event") or {}
            task = data["task"]
            out.append((at, event.get("id") or data.get("id"), task["taskId"], task["version"]))
        return out

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the producer (a process of its own) ----------------------------------------------------

PRODUCER = r"""
import json, sys, time, redis
url, key, rate, n, out, template = sys.argv[1:7]
rate, n = float(rate), int(n)
task = json.loads(template)
r = redis.Redis.from_url(url)
versions = {}
sent = {}
start = time.perf_counter()
for i in range(n):
    due = start + i / rate if rate > 0 else 0
    while rate > 0 and time.perf_counter() < due:
        time.sleep(max(0.0, min(0.0005, due - time.perf_counter())))
    tid = f"bench-{i % 64:02d}"
    versions[tid] = versions.get(tid, 1) + 1
    snap = dict(task, taskId=tid, version=versions[tid])
    t0 = time.time()
    eid = r.xadd(key, {"kind": "next", "at": snap["updatedAt"], "task": json.dumps(snap)}).decode()
    sent[eid] = t0
json.dump(sent, open(out, "w"))
"""


def template() -> str:
    steps = [{"name": f"s{k}", "status": "done" if k < 3 else "running" if k == 3 else "pending",
              "message": "ok" if k < 3 else None} for k in range(8)]  # fmt: skip
    task = {
        "taskId": "bench-00", "taskName": "bench job", "status": "running", "stalled": False,
        "startedAt": "2026-01-01T00:00:00+00:00", "updatedAt": "2026-01-01T00:01:00+00:00",
        "finishedAt": None, "steps": steps, "error": None, "result": None, "version": 1,
        "namespace": NS,
    }  # fmt: skip
    return json.dumps(task)


def produce(server: Server, rate: float, n: int, tag: str) -> tuple[subprocess.Popen, Path]:
    out = server.work / f"sent-{tag}.json"
    args = [sys.executable, "-c", PRODUCER, server.url, EVENTS, str(rate), str(n), str(out)]
    return subprocess.Popen([*args, template()]), out


# -- relays and the floor -------------------------------------------------------------------


class Relays:
    def __init__(self, server: Server, sink: str, lease: float, extra: list[str]) -> None:
        self.server, self.sink, self.lease, self.extra = server, sink, lease, extra
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "PULSE_REDIS_URL": self.server.url,
            "PULSE_NAMESPACE": NS,
            "PULSE_RELAY_LEASE_SECONDS": str(self.lease),
            "PULSE_HEARTBEAT_PUSH_SECONDS": "0",
            "PYTHONPATH": str(ROOT),
        }
        log = open(self.server.work / f"relay-{name}.log", "a")  # noqa: SIM115
        argv = [sys.executable, "-m", "pulse_workers", "--sink", self.sink, "--name", name]
        proc = subprocess.Popen([*argv, *self.extra], env=env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


FLOOR = r"""
import http.client, json, sys, redis
url, key, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = redis.Redis.from_url(url)
try:
    r.xgroup_create(key, "floor", "$", mkstream=True)
except redis.ResponseError:
    pass
print("ready", flush=True)
conn = http.client.HTTPConnection("127.0.0.1", port)
done = 0
while done < n:
    got = r.xreadgroup("floor", "f", {key: ">"}, count=200, block=1000)
    for _, entries in got or []:
        for eid, fields in entries:
            body = json.dumps({"event": {"id": eid.decode(), "kind": "next"},
                               "task": json.loads(fields[b"task"])}).encode()
            conn.request("POST", "/hook", body, {"Content-Type": "application/json"})
            conn.getresponse().read()
            done += 1
        r.xack(key, "floor", *[e for e, _ in entries])
"""


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def active(r: redis.Redis) -> str | None:
    holder = r.get(LEASE_KEY)
    return holder.decode().rsplit(":", 1)[0] if holder else None


def wait_active(r: redis.Redis, name: str | None = None, timeout: float = 30.0) -> None:
    ok = wait_for(
        lambda: (
            active(r) is not None
            and (name is None or active(r) == name)
            and r.exists(EVENTS)
            and any(g["name"].startswith(b"relay:") for g in r.xinfo_groups(EVENTS))
        ),
        timeout,
    )
    assert ok, "no relay became active"


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def audit(receiver: Receiver, sent: dict[str, float]) -> dict[str, int]:
    pushes = receiver.pushes()
    ids = [p[1] for p in pushes]
    highest: dict[str, int] = defaultdict(int)
    backwards = late = 0
    seen: set[str] = set()
    for _, eid, task, version in pushes:
        if version < highest[task]:
            backwards += 1
            late += eid in seen  # a copy of a push that had arrived already: dropped by version
        seen.add(eid)
        highest[task] = max(highest[task], version)
    return {
        "events": len(sent),
        "pushes": len(pushes),
        "lost": len(set(sent) - set(ids)),
        "out_of_order": backwards,
        "of_which_late_copies": late,
        "duplicates": len(ids) - len(set(ids)),
    }


# -- 1. latency -------------------------------------------------------------------------------


def latency(server: Server, seconds: float) -> None:
    n = int(RATE * seconds)
    r = redis.Redis.from_url(server.url)
    results = {}
    for _round in range(2):  # alternating, so a slow moment does not fall on one side only
        for who in ("floor B", "relay"):
            r.delete(EVENTS, LEASE_KEY)
            receiver = Receiver()
            relays = None
            if who == "relay":
                relays = Relays(server, f"webhook+{receiver.url}", 10, [])
                relays.start("lat")
                wait_active(r)
                proc = None
            else:
                argv = [sys.executable, "-c", FLOOR, server.url, EVENTS]
                proc = subprocess.Popen([*argv, str(receiver.server.server_port), str(n)],
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            producer, out = produce(server, RATE, n, f"lat-{who}")
            producer.wait()
            wait_for(lambda r=receiver: len(r.arrivals) >= n, 60)
            sent = json.loads(out.read_text())
            lat = [(at - sent[eid]) * 1000 for at, eid, _, _ in receiver.pushes() if eid in sent]
            results.setdefault(who, []).extend(lat)
            if relays:
                relays.stop_all()
            if proc:
                proc.wait(timeout=30)
            receiver.stop()
    print(f"\n## 1. event-to-webhook latency at {RATE} events/s, {seconds:.0f} s x 2 rounds each")
    for who, lat in results.items():
        print(f"{who:<8} n={len(lat)}  p50 {pct(lat, .5):6.2f} ms  p90 {pct(lat, .9):6.2f} ms  "
              f"p99 {pct(lat, .99):6.2f} ms  max {max(lat):6.2f} ms")  # fmt: skip
    rb, fb = results["relay"], results["floor B"]
    ratio = pct(rb, 0.99) / pct(fb, 0.99)
    verdict = "met" if ratio <= 1.5 else "MISSED"
    print(f"relay p99 / floor B p99 = {ratio:.2f}x (target <= 1.5: {verdict}); "
          f"relay's own overhead at p50 {pct(rb, .5) - pct(fb, .5):.2f} ms, "
          f"at p99 {pct(rb, .99) - pct(fb, .99):.2f} ms")  # fmt: skip


# -- 2. throughput ----------------------------------------------------------------------------


def throughput(server: Server, n: int, delay: float, in_flight: int) -> float:
    r = redis.Redis.from_url(server.url)
    r.delete(EVENTS, LEASE_KEY)
    receiver = Receiver(delay)
    extra = ["--in-flight", str(in_flight)]
    relays = Relays(server, f"webhook+{receiver.url}", 10, extra)
    relays.start("tp0")  # makes its group at the end of the (empty) stream, then goes
    wait_active(r)
    relays.stop_all()
    producer, out = produce(server, 0, n, f"tp-{delay}")
    producer.wait()
    start = time.monotonic()
    relays.start("tp1")
    ok = wait_for(lambda: len(receiver.arrivals) >= n, 300)
    took = time.monotonic() - start
    relays.stop_all()
    got = audit(receiver, json.loads(out.read_text()))
    receiver.stop()
    rate = got["pushes"] / took
    label = "instant receiver" if not delay else f"{delay * 1000:.0f} ms receiver"
    late = "" if ok else "  TIMED OUT"
    print(f"{label:<18} in-flight {in_flight:>3}: {n} pushes of {TASKS} tasks in {took:.2f} s "
          f"(relay start included) = {rate:,.0f} pushes/s  {got}{late}")  # fmt: skip
    return rate


# -- 3. soak ----------------------------------------------------------------------------------


def soak(server: Server, seconds: float) -> None:
    r = redis.Redis.from_url(server.url)
    r.delete(EVENTS, LEASE_KEY)
    receiver = Receiver(0.05)
    relays = Relays(server, f"webhook+{receiver.url}", 10, [])
    proc = relays.start("soak")
    wait_active(r)
    time.sleep(1.0)
    n = int(RATE * seconds)
    producer, out = produce(server, RATE, n, "soak")
    samples, lags = [], []
    group = next(g["name"] for g in r.xinfo_groups(EVENTS) if g["name"].startswith(b"relay:"))
    start = time.monotonic()
    while producer.poll() is None:
        time.sleep(1.0)
        pending = r.xpending(EVENTS, group)["pending"]
        last = next(g for g in r.xinfo_groups(EVENTS) if g["name"] == group)["last-delivered-id"]
        unread = len(r.xrange(EVENTS, b"(" + last, "+", count=100_000))
        lags.append(pending + unread)
        samples.append((time.monotonic() - start, rss_mb(proc.pid)))
    wait_for(lambda: len(receiver.arrivals) >= n, 120)
    end_rss = rss_mb(proc.pid)
    relays.stop_all()
    got = audit(receiver, json.loads(out.read_text()))
    receiver.stop()
    print(f"\n## 3. soak: {RATE} events/s to the 50 ms receiver for {seconds:.0f} s")
    print(f"largest lag {max(lags)} entries (median {sorted(lags)[len(lags) // 2]}); "
          f"relay RSS {samples[0][1]:.1f} MB at {samples[0][0]:.0f} s, "
          f"{samples[len(samples) // 2][1]:.1f} MB at {samples[len(samples) // 2][0]:.0f} s, "
          f"{end_rss:.1f} MB at the end; {got}")  # fmt: skip


# -- 4. takeovers -----------------------------------------------------------------------------


def takeovers(server: Server, count: int, lease: float) -> None:
    r = redis.Redis.from_url(server.url)
    r.delete(EVENTS, LEASE_KEY)
    receiver = Receiver()
    relays = Relays(server, f"webhook+{receiver.url}", lease, [])
    for name in ("a", "b", "c"):
        relays.start(name)
    wait_active(r)
    # enough events for every takeover (each takes about the lease), then some
    n = int(RATE * (count * (lease + 1.5) + 5))
    producer, out = produce(server, RATE, n, "takeovers")
    times = []
    time.sleep(1.0)
    for i in range(count):
        holder = active(r)
        assert holder is not None
        proc = relays.procs[holder]
        how = signal.SIGKILL if i % 2 == 0 else signal.SIGSTOP
        proc.send_signal(how)
        t0 = time.monotonic()
        assert wait_for(lambda h=holder: active(r) not in (None, h), lease * 3, 0.005)
        times.append(time.monotonic() - t0)
        if how == signal.SIGKILL:
            proc.wait()
            relays.start(holder)  # a supervisor restarts it; it stands by
        else:
            proc.send_signal(signal.SIGCONT)  # wakes believing it pushes; it stands by
        time.sleep(0.5)
    producer.wait()
    sent = json.loads(out.read_text())
    wait_for(lambda: audit(receiver, sent)["lost"] == 0, 60)
    time.sleep(1.0)
    got = audit(receiver, sent)
    relays.stop_all()
    receiver.stop()
    times.sort()
    print(f"\n## 4. {count} forced takeovers (SIGKILL and SIGSTOP in turn) under {RATE} events/s, "
          f"lease {lease:g} s, three relays")  # fmt: skip
    print(
        f"takeover time: median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s "
        f"(signal to the lease changing hands)"
    )
    print(f"{got}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="1,2,3,4")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--events", type=int, default=20_000, help="for the throughput figure")
    ap.add_argument("--soak", type=float, default=600.0, help="seconds")
    ap.add_argument("--takeovers", type=int, default=20)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--lease", type=float, default=2.0, help="for the takeovers")
    add_pin_option(ap)
    a = ap.parse_args()
    only = {int(x) for x in a.only.split(",")}
    with redis_server(a.pin) as server:
        if 1 in only:
            latency(server, a.latency_seconds)
        if 2 in only:
            print(f"\n## 2. throughput with one active relay, {TASKS} tasks updating")
            instant = throughput(server, a.events, 0.0, a.in_flight)
            slow = throughput(server, a.events // 2, 0.05, a.in_flight)
            fast_ok = "met" if instant >= 1000 else "MISSED"
            slow_ok = "met" if slow >= 500 else "MISSED"
            print(f"instant: {instant:,.0f}/s (target >= 1,000: {fast_ok}); "
                  f"50 ms: {slow:,.0f}/s (target >= 500: {slow_ok})")  # fmt: skip
        if 3 in only:
            soak(server, a.soak)
        if 4 in only:
            takeovers(server, a.takeovers, a.lease)


if __name__ == "__main__":
    main()
