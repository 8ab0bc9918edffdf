"""The relay (``pulse-relay``) end to end: latency, throughput and a SIGKILL, against floors.

Everything runs on one machine: a private redis-server (unix socket), a loopback webhook
receiver in this process (``ThreadingHTTPServer``, HTTP/1.1 keep-alive, answers 200 at once,
records ``X-Pulse-Event-Id`` and the arrival time), and the relay as a real subprocess
(``python -m workers --sink webhook+http://127.0.0.1:PORT/hook?secret=S --name bench``) with
``PULSE_REDIS_URL``, ``PULSE_NAMESPACE`` and ``PULSE_HEARTBEAT_PUSH_SECONDS=0`` (so no
heartbeat is held back by the throttle: every event is a push).

1. Event-to-webhook latency at a steady 200 events/s, from the moment the write call was made
   (in a producer process of its own) to the arrival of the push. Relay: redis-py XADD of real
   heartbeat events (copies of what ``Client.heartbeat`` wrote) -> relay -> webhook. Floors,
   same run, alternating, each a bare consumer process: A) the same XADD -> XREADGROUP (to the
   moment XREADGROUP returned the entry), B) A plus a POST of the entry to the same receiver
   over one keep-alive connection. For context: two relays sharing a namespace (each asks
   push.lua before each push), C) B fed by ``Client.heartbeat`` itself, and the relay fed the
   same way (end to end, the agent's update call included).
2. Throughput: N events made first (relay not running), then the relay started and timed
   until every push arrived. Floor: the same entries copied to a bare stream, drained by a
   consumer process doing XREADGROUP COUNT 200 -> POST each (keep-alive) -> XACK.
3. SIGKILL: N events made, a relay started and SIGKILLed once 20% of them arrived, a second
   relay (another --name, --claim-idle 1) started and timed until the stream is drained:
   pushes lost (event ids never received), duplicates (received more than once) against the
   batch in hand (entries pending for the killed relay when it died).

    python bench/bench_relay.py [--quick] [--profile] [--pin none|split|same] [--only 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
from _common import Server, add_pin_option, median, ratio_line, redis_server

import pulse

SECRET = "bench-s3cret"
RATE = 200  # updates/s for the latency figure
BATCH = 200  # what the relay reads per XREADGROUP (RelayConfig.batch); the floors use the same

# -- the webhook receiver -------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client that reuses its connection can

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]  # one handler per connection

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        at = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.arrivals.append(  # type: ignore[attr-defined]
            (self.headers.get("X-Pulse-Event-Id", ""), at, self.client_address[1])
        )
        self.send_response_only(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a relay SIGKILLed mid-request resets its connection: expected here


class Receiver:
    """The loopback webhook: ``arrivals`` is a list of (event id, time.time(), client port)."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.arrivals = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def arrivals(self) -> list[tuple[str, float, int]]:
        return self.server.arrivals  # type: ignore[attr-defined]

    def take(self) -> list[tuple[str, float, int]]:
        """The arrivals so far, and a fresh list for the next ones."""
        got, self.server.arrivals = self.server.arrivals, []  # type: ignore[attr-defined]
        return got

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the floors' consumer (a subprocess, like the relay) -----------------------------------

FLOOR_CONSUMER = r"""
import http.client, json, sys, time
import redis
sock, stream, mode, target, start, batch = sys.argv[1:7]
r = redis.Redis(unix_socket_path=sock)
try:
    r.xgroup_create(stream, "floor", id=start, mkstream=True)
except redis.ResponseError:
    pass
host, _, rest = target.removeprefix("http://").partition("/")
conn = http.client.HTTPConnection(host) if mode == "post" else None
read_at = []
print("ready", flush=True)
done = False
while not done:
    got = r.xreadgroup("floor", "c", {stream: ">"}, count=int(batch), block=1000)
    if not got:
        continue
    now = time.time()
    ids = []
    for entry_id, fields in got[0][1]:
        ids.append(entry_id)
        if b"stop" in fields:
            done = True
            continue
        if conn is None:
            read_at.append((entry_id.decode(), now))
            continue
        body = fields[b"task"]
        conn.request("POST", "/" + rest, body, {"X-Pulse-Event-Id": entry_id.decode(),
                                               "Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        if reply.status != 200:
            sys.exit(f"POST answered {reply.status}")
    r.xack(stream, "floor", *ids)
print(json.dumps(read_at), flush=True)
"""


class FloorConsumer:
    """``mode`` read: XREADGROUP only, the read times come back on stdout at the end;
    ``post``: XREADGROUP -> POST each entry to the receiver (one keep-alive connection) -> XACK.
    An entry with a ``stop`` field ends it."""

    def __init__(
        self, server: Server, stream: str, mode: str, target: str, start: str = "0"
    ) -> None:
        self.r = redis.Redis(unix_socket_path=server.socket)
        self.stream = stream
        self.started = time.time()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FLOOR_CONSUMER,
                server.socket,
                stream,
                mode,
                target,
                start,
                str(BATCH),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            sys.exit("the floor consumer did not start")

    def finish(self) -> list[tuple[str, float]]:
        self.r.xadd(self.stream, {"stop": "1"})
        out, _ = self.proc.communicate(timeout=60)
        self.r.close()
        return [tuple(x) for x in json.loads(out)]  # type: ignore[misc]


# -- the relay ------------------------------------------------------------------------------


class Relays:
    """Starts ``python -m workers`` processes; logs go to files in the temp dir."""

    def __init__(self, server: Server, receiver: Receiver, profile: bool = False) -> None:
        self.server = server
        self.sink = f"webhook+{receiver.url}?secret={SECRET}"
        self.procs: list[subprocess.Popen] = []
        self.profile = profile

    def start(self, namespace: str, name: str, *extra: str, profile: str = "") -> subprocess.Popen:
        env = dict(
            os.environ,
            PULSE_REDIS_URL=self.server.url,
            PULSE_NAMESPACE=namespace,
            PULSE_HEARTBEAT_PUSH_SECONDS="0",
            PULSE_LANG="en",
        )
        cmd = [sys.executable, "-m", "workers", "--sink", self.sink, "--name", name, *extra]
        if profile:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spy_args = ["record", "--format", "raw", "--threads", "-r", "250", "-o", profile]
            cmd = [spy, *spy_args, "--", *cmd]
        log = open(self.server.work / f"relay-{namespace}-{name}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


# -- helpers --------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def make_tasks(client: pulse.Client, count: int, steps: int = 12) -> list[str]:
    # a long stall time: a task left quiet between rounds must not emit a stall event
    return [
        client.create(f"bench task {i}", [f"step {s}" for s in range(steps)], stall=86400).id
        for i in range(count)
    ]


def generate(client: pulse.Client, n: int, tasks: int) -> tuple[list[str], float]:
    """``n`` events on ``tasks`` tasks, interleaved as concurrent agents make them: each task's
    create, then round-robin updates (a `next` every 10th, heartbeats between). Returns the
    event ids and the seconds taken."""
    t0 = time.perf_counter()
    ids = make_tasks(client, tasks)
    out: list[str] = []
    for i in range(n - tasks):
        task = ids[i % tasks]
        if (i // tasks) % 10 == 9:
            out.append(client.next(task, f"next {i}").event_id)
        else:
            out.append(client.heartbeat(task, f"beat {i}", progress=(i // tasks) % 100).event_id)
    return out, time.perf_counter() - t0


def stream_ids(r: redis.Redis, key: str) -> list[str]:
    ids: list[str] = []
    start = "-"
    while True:
        chunk = r.xrange(key, start, "+", count=10_000)
        ids += [e.decode() for e, _ in chunk]
        if len(chunk) < 10_000:
            return ids
        start = "(" + chunk[-1][0].decode()


def copy_stream(r: redis.Redis, src: str, dst: str) -> int:
    """The entries of ``src`` XADDed to ``dst`` (same fields), pipelined."""
    start, n = "-", 0
    while True:
        chunk = r.xrange(src, start, "+", count=2000)
        pipe = r.pipeline(transaction=False)
        for _, fields in chunk:
            pipe.xadd(dst, fields)
        pipe.execute()
        n += len(chunk)
        if len(chunk) < 2000:
            return n
        start = "(" + chunk[-1][0].decode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


# -- 1. latency -----------------------------------------------------------------------------

# The updates come from a process of their own, as an agent's do: in this process they would
# hold the GIL the receiver needs to record an arrival, and so add to the latency measured.
PRODUCER = r"""
import json, statistics, sys, time
mode, url, target, n, rate, tasks = sys.argv[1:7]
n, rate, tasks = int(n), float(rate), json.loads(tasks)
if mode == "xadd":  # tasks: a file of real events, [kind, at, task JSON], XADDed in turn
    import redis
    r = redis.Redis(unix_socket_path=url.removeprefix("unix://"))
    with open(tasks[0]) as f:
        entries = [{"kind": k, "at": a, "task": t} for k, a, t in json.load(f)]
    def send(i):
        return r.xadd(target, entries[i % len(entries)]).decode()
else:
    import pulse
    client = pulse.connect(url, namespace=target, dir=tasks.pop())
    def send(i):
        return client.heartbeat(tasks[i % len(tasks)], f"beat {i}", progress=i % 100).event_id
for i in range(20):  # warm-up (the consumer drops them: not in "sent")
    send(i)
time.sleep(0.2)
sent, took = [], []
interval = 1.0 / rate
t0 = time.perf_counter()
for i in range(n):
    delay = t0 + i * interval - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    at, start = time.time(), time.perf_counter()
    sent.append((send(i), at))
    took.append(time.perf_counter() - start)
print(json.dumps({"sent": sent, "took": statistics.median(took)}))
"""


def produce(
    server: Server, mode: str, target: str, n: int, tasks: list[str]
) -> tuple[dict[str, float], float]:
    """Runs PRODUCER: ``n`` writes at RATE/s; ({event id: time.time() at the call}, median
    seconds per call)."""
    args = [mode, server.url, target, str(n), str(RATE), json.dumps(tasks)]
    done = subprocess.run(
        [sys.executable, "-c", PRODUCER, *args], capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        sys.exit(f"the producer failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    return dict(map(tuple, out["sent"])), out["took"]  # type: ignore[arg-type]


def real_events(server: Server, mirror: str, n: int) -> str:
    """A file of ``n`` heartbeat events as ``Client.heartbeat`` writes them (kind, at, task
    snapshot), made round-robin on 50 tasks of a namespace nobody reads; the XADD producers
    copy them, so every variant carries the same entries."""
    client = pulse.connect(server.url, namespace="bench-source", dir=Path(mirror))
    tasks = make_tasks(client, 50)
    for i in range(n):
        client.heartbeat(tasks[i % len(tasks)], f"beat {i}", progress=i % 100)
    r = redis.Redis(unix_socket_path=server.socket, decode_responses=True)
    entries = [
        [f["kind"], f["at"], f["task"]]
        for _, f in r.xrange(client.store.keys.events, count=n + len(tasks))
        if f["kind"] == "heartbeat"
    ]
    client.close()
    r.close()
    path = server.work / "events.json"
    path.write_text(json.dumps(entries))
    return str(path)


def latency(server: Server, receiver: Receiver, relays: Relays, quick: bool) -> None:
    per_round, rounds = (400, 2) if quick else (2000, 3)
    mirror = str(server.work / "tasks")
    events_file = real_events(server, mirror, per_round)
    setup: dict[str, tuple[pulse.Client, list[str]]] = {}
    for ns in ("bench-latency", "bench-floor-c", "bench-shared"):
        client = pulse.connect(server.url, namespace=ns, dir=Path(mirror))
        setup[ns] = client, make_tasks(client, 50)
    client, tasks = setup["bench-latency"]
    relay_events = client.store.keys.events
    shared_events = setup["bench-shared"][0].store.keys.events
    floor_c_events = setup["bench-floor-c"][0].store.keys.events
    snap = client.store.conn.call("HGET", client.store.keys.task(tasks[0]), "snap")
    started = time.monotonic()
    # one relay (alone: it marks as it pushes), and two sharing a namespace (each asks
    # push.lua before each push)
    procs = [relays.start("bench-latency", "bench")]
    procs += [relays.start("bench-shared", name) for name in ("shared-1", "shared-2")]
    # warm-up: the relays' groups, connections and lazy imports; the create pushes
    n_warm = 0
    for ns in ("bench-latency", "bench-shared"):
        c, ids = setup[ns]
        n_warm += len(ids) + 100
        for i in range(100):
            c.heartbeat(ids[i % len(ids)], "warm-up")
    if not wait_for(lambda: len(receiver.arrivals) >= n_warm, 30):
        sys.exit(f"the relays did not deliver the warm-up ({len(receiver.arrivals)}/{n_warm})")
    # a relay asks before each push for its first seconds (workers/presence.py, VALID): the
    # figures are of the steady state
    time.sleep(max(0.0, started + 5.5 - time.monotonic()))
    receiver.take()
    call_s: dict[str, list[float]] = {"xadd": [], "heartbeat": []}

    def via_relay(producer: str, stream: str = relay_events) -> Callable[[int], list[float]]:
        def run(rnd: int) -> list[float]:
            if producer == "xadd":
                sent, took = produce(server, "xadd", stream, per_round, [events_file])
            else:
                args = [*tasks, mirror]
                sent, took = produce(server, "heartbeat", "bench-latency", per_round, args)
            call_s[producer].append(took)
            wait_for(lambda: len(receiver.arrivals) >= per_round + 20, 30)
            time.sleep(0.05)
            got = {e: at for e, at, _ in receiver.take()}
            return [got[e] - t for e, t in sent.items() if e in got]

        return run

    def bare(producer: str, consumer: str) -> Callable[[int], list[float]]:
        def run(rnd: int) -> list[float]:
            if producer == "xadd":
                stream = target = f"floor:{consumer}:{rnd}"
                args = [events_file]
            else:
                stream, target = floor_c_events, "bench-floor-c"
                args = [*setup["bench-floor-c"][1], mirror]
            reader = FloorConsumer(server, stream, consumer, receiver.url, start="$")
            sent, took = produce(server, producer, target, per_round, args)
            call_s[producer].append(took)
            if consumer == "read":
                got = dict(reader.finish())
            else:
                wait_for(lambda: len(receiver.arrivals) >= per_round + 20, 30)
                reader.finish()
                got = {e: at for e, at, _ in receiver.take()}
            return [got[e] - t for e, t in sent.items() if e in got]

        return run

    variants = {
        "floor A: XADD -> XREADGROUP": bare("xadd", "read"),
        "floor B: XADD -> XREADGROUP -> POST": bare("xadd", "post"),
        "relay: XADD -> relay -> webhook": via_relay("xadd"),
        "2 relays sharing: XADD -> webhook": via_relay("xadd", shared_events),
        "floor C: heartbeat -> XREADGROUP -> POST": bare("heartbeat", "post"),
        "relay end to end: heartbeat -> webhook": via_relay("heartbeat"),
    }
    print(
        f"\n## 1. latency at {RATE} updates/s: {rounds} rounds x {per_round} events per variant, "
        f"alternating; tasks of 12 steps (snapshot ~{len(snap.encode()):,} bytes)"
    )
    print(
        "# from the moment the write call was made, in a producer process, to the moment "
        "XREADGROUP returned the entry (floor A) or the push arrived at the receiver (the "
        "others); time.time() in every process. XADD: redis-py XADD of real heartbeat events "
        "(copies of what Client.heartbeat wrote, the same entries for every XADD variant): "
        "the event-to-webhook latency. heartbeat: Client.heartbeat itself, so its update "
        "script (and mirror file) is counted too. Floors: a bare consumer process (redis-py "
        "XREADGROUP COUNT 200 BLOCK, then for B and C an http.client POST of the entry over one "
        "keep-alive connection, XACK)."
    )
    samples: dict[str, list[float]] = {name: [] for name in variants}
    p99s: dict[str, list[float]] = {name: [] for name in variants}
    missing: Counter[str] = Counter()
    for rnd in range(rounds):
        names = list(variants)
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            got = variants[name](rnd)
            missing[name] += per_round - len(got)
            samples[name] += got
            p99s[name].append(percentile(got, 99))
    for proc in procs:
        relays.stop(proc)
    for c, _ in setup.values():
        c.close()

    print(f"\n{'variant':<42} {'p50':>10} {'p99':>10} {'max':>10} {'missing':>8}")
    for name, got in samples.items():
        print(
            f"{name:<42} {ms(percentile(got, 50))} {ms(percentile(got, 99))} "
            f"{ms(max(got))} {missing[name]:8d}"
        )
    print(
        f"# the write calls themselves (median): XADD {ms(median(call_s['xadd']))}, "
        f"Client.heartbeat {ms(median(call_s['heartbeat']))} (its mirror file included)"
    )
    a, b, relay_x, shared, c, relay_h = variants
    print("\nratios relay/floor (pooled samples; lower is better):")
    for label, lib, floor, target in (
        ("event-to-webhook vs floor A (bare XADD -> XREADGROUP hop)", relay_x, a, "<= 3"),
        ("event-to-webhook vs floor B (A + keep-alive POST)", relay_x, b, ""),
        ("2 relays sharing, each asking first, vs floor A", shared, a, ""),
        ("end to end vs floor C (B with Client.heartbeat)", relay_h, c, ""),
        ("end to end vs floor A", relay_h, a, ""),
    ):
        print(label)
        for q in (99, 50):
            got = percentile(samples[lib], q) / percentile(samples[floor], q)
            print(ratio_line(f"  p{q}", got, 1.0, target if q == 99 else ""))
        paired = median([x / y for x, y in zip(p99s[lib], p99s[floor], strict=True)])
        print(ratio_line("  p99, median of per-round ratios", paired, 1.0, target))


# -- 2. throughput --------------------------------------------------------------------------


def drain_relay(
    server: Server, receiver: Receiver, relays: Relays, ns: str, total: int, profile: str
) -> tuple[float, list[tuple[str, float, int]], float, int]:
    """Starts a relay on ``ns`` and waits for ``total`` pushes: (start time, arrivals, CPU
    seconds it used, connections it opened to the receiver)."""
    receiver.take()
    opened = receiver.server.connections  # type: ignore[attr-defined]
    t0 = time.time()
    proc = relays.start(ns, "bench", profile=profile)
    if not wait_for(lambda: len(receiver.arrivals) >= total, 600, 0.01):
        print(f"# relay: only {len(receiver.arrivals)} of {total} arrived")
    got = receiver.take()
    cpu = 0.0 if profile else cpu_seconds(proc.pid)
    relays.stop(proc, signal.SIGINT if profile else signal.SIGTERM)
    return t0, got, cpu, receiver.server.connections - opened  # type: ignore[attr-defined]


def drain_floor(
    server: Server, receiver: Receiver, r: redis.Redis, events: str, stream: str, total: int
) -> tuple[float, list[tuple[str, float, int]]]:
    """The same entries copied to a bare stream and drained by FLOOR_CONSUMER (post)."""
    copy_stream(r, events, stream)
    receiver.take()
    t0 = time.time()
    consumer = FloorConsumer(server, stream, "post", receiver.url)
    wait_for(lambda: len(receiver.arrivals) >= total, 600, 0.01)
    got = receiver.take()
    consumer.finish()
    r.delete(stream)
    return t0, got


def throughput(
    server: Server, receiver: Receiver, relays: Relays, quick: bool, profile: bool
) -> float:
    """Returns the relay's pushes/s from its start (median of rounds)."""
    n, rounds = (2000, 1) if quick else (20_000, 3)
    tasks = 200
    r = redis.Redis(unix_socket_path=server.socket)
    print(
        f"\n## 2. throughput: {n:,} events made first ({tasks} tasks; relay not running), then "
        f"drained; {rounds} round(s), alternating"
    )
    print(
        "# from start: from the process start to the last arrival; steady: first to last "
        "arrival. Floor: a bare consumer process, XREADGROUP COUNT 200 -> http.client POST of "
        "each entry over one keep-alive connection -> XACK, on a copy of the same entries"
    )
    rates: dict[str, list[tuple[float, float]]] = {"floor": [], "relay": []}
    conns: list[int] = []
    cpu: list[float] = []
    for rnd in range(rounds):
        ns = f"bench-throughput-{rnd}"
        client = pulse.connect(server.url, namespace=ns, dir=server.work / "tasks")
        _, took = generate(client, n, tasks)
        events = client.store.keys.events
        total = r.xlen(events)
        client.close()
        print(f"# round {rnd + 1}: made {total:,} events in {took:.1f} s with the library")
        for name in ("floor", "relay") if rnd % 2 == 0 else ("relay", "floor"):
            if name == "relay":
                t0, got, used, opened = drain_relay(server, receiver, relays, ns, total, "")
                conns.append(opened)
                cpu.append(used / len(got))
            else:
                t0, got = drain_floor(server, receiver, r, events, f"floor:thr:{rnd}", total)
            first, last = got[0][1], got[-1][1]
            rates[name].append((len(got) / (last - t0), (len(got) - 1) / (last - first)))
            print(
                f"#   {name}: {len(got):,} pushes, {last - t0:.2f} s from start "
                f"({first - t0:.2f} s to the first)"
            )
        r.delete(events)

    print(f"\n{'variant':<40} {'from start':>12} {'steady':>12}   (pushes/s, median of rounds)")
    labels = {"floor": "floor: XREADGROUP -> keep-alive POST", "relay": "relay -> webhook"}
    for name, got in rates.items():
        print(
            f"{labels[name]:<40} {median([g[0] for g in got]):12,.0f} "
            f"{median([g[1] for g in got]):12,.0f}"
        )
    relay_start = median([g[0] for g in rates["relay"]])
    met = "met" if relay_start >= 1000 else "MISSED"
    print(f"relay pushes/s from its start: {relay_start:,.0f} (target >= 1,000: {met})")
    print(f"connections the relay opened to the receiver, per round: {conns}")
    if cpu:
        print(
            f"relay CPU time (user+sys, start-up included) per push: {median(cpu) * 1e6:.0f} us "
            f"(so at most {1 / median(cpu):,.0f} pushes/s on one core)"
        )
    print("ratios relay/floor (higher is better):")
    floor_start = median([g[0] for g in rates["floor"]])
    print(ratio_line("from start", relay_start, floor_start))
    steady = [median([g[1] for g in rates[name]]) for name in ("relay", "floor")]
    print(ratio_line("steady (first to last arrival)", *steady))
    if profile:  # one more drain under py-spy, not counted in the figures
        client = pulse.connect(server.url, namespace="bench-profile", dir=server.work / "tasks")
        generate(client, n, tasks)
        client.close()
        out = str(server.work / "relay-profile.txt")
        drain_relay(server, receiver, relays, "bench-profile", n, out)
        print_profile(out)
    r.close()
    return relay_start


def print_profile(path: str) -> None:
    """Own time per function (and per thread) from py-spy's collapsed stacks."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        print(f"\n# no profile: {path} was not written (py-spy needs ptrace rights)")
        return
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        # with --threads the first frame is the thread, the second where it started
        threads[frames[0].split(" ")[0] + " " + " ".join(frames[1:3])] += n
        leaf = frames[-1]
        own[leaf] += n
    print(f"\npy-spy of the relay draining the same load once more ({total} samples at 250 Hz):")
    print("by thread:")
    for name, n in threads.most_common(6):
        print(f"  {100 * n / total:5.1f}%  {name[:110]}")
    print("top functions by own time:")
    for name, n in own.most_common(20):
        print(f"  {100 * n / total:5.1f}%  {name[:110]}")


# -- 3. SIGKILL -----------------------------------------------------------------------------


def sigkill(
    server: Server, receiver: Receiver, relays: Relays, quick: bool, reference: float | None
) -> None:
    n, tasks = (2000, 100) if quick else (10_000, 500)
    kill_at = n // 5
    ns = "bench-kill"
    client = pulse.connect(server.url, namespace=ns, dir=server.work / "tasks")
    r = redis.Redis(unix_socket_path=server.socket)
    key = client.store.keys.events
    _, took = generate(client, n, tasks)
    ids = stream_ids(r, key)
    client.close()
    print(
        f"\n## 3. SIGKILL: {len(ids):,} events pending ({tasks} tasks), the relay killed after "
        f"{kill_at:,} pushes arrived"
    )
    receiver.take()
    first = relays.start(ns, "kill-a")
    if not wait_for(lambda: len(receiver.arrivals) >= kill_at, 120, 0.001):
        sys.exit("the first relay did not deliver")
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(0.05)  # pushes the dead relay had on the wire land
    arrived_before = len(receiver.arrivals)
    # the webhook's consumer group: "relay:<sink name>"
    group = next(g["name"] for g in r.xinfo_groups(key) if g["name"].startswith(b"relay:"))
    pending_ids = [
        p["message_id"].decode()
        for p in r.xpending_range(key, group, "-", "+", n, consumername="kill-a")
    ]
    in_hand = len(pending_ids)
    t0 = time.time()
    second = relays.start(ns, "kill-b", "--claim-idle", "1")
    wanted = set(ids)

    def drained() -> bool:
        if wanted <= {e for e, _, _ in receiver.arrivals}:
            return True
        info = next(g for g in r.xinfo_groups(key) if g["name"] == group)
        done = info["pending"] == 0 and info["last-delivered-id"].decode() == ids[-1]
        return done and time.time() - receiver.arrivals[-1][1] > 1.0

    ok = wait_for(drained, 180, 0.05)
    got = receiver.take()
    end = got[-1][1]
    relays.stop(second)
    counts = Counter(e for e, _, _ in got)
    lost = [e for e in ids if e not in counts]
    duplicates = sum(c - 1 for c in counts.values())
    drain = end - t0
    after = [at for _, at, _ in got[arrived_before:]] or [t0]
    orphans = set(pending_ids)
    orphans_at = [at for e, at, _ in got[arrived_before:] if e in orphans]
    orphans_done = f"{max(orphans_at) - t0:.2f} s" if orphans_at else "never"
    print(
        f"# made in {took:.1f} s; {arrived_before:,} arrived before the kill; "
        f"batch in hand (pending for the killed relay): {in_hand:,}"
    )
    if not ok:
        print("# the second relay did NOT drain the stream within 180 s")
    rate = (len(got) - arrived_before) / drain
    print(
        f"# second relay: first push {after[0] - t0:.2f} s after its start, the killed relay's "
        f"{in_hand:,} pending entries: {len(orphans_at):,} pushed by it, the last at {orphans_done}"
    )
    print(
        f"time to drain with the second relay:     {drain:.2f} s "
        f"({rate:,.0f} pushes/s, start-up and the 1 s claim-idle included)"
    )
    if reference:
        print(ratio_line("drain rate vs the undisturbed relay of 2.", rate, reference))
    print(
        f"pushes lost (ids never received):         {len(lost)} (target 0: "
        f"{'met' if not lost else 'MISSED'})"
    )
    print(
        f"duplicates (received more than once):     {duplicates} (target <= batch in hand "
        f"{in_hand}: {'met' if duplicates <= in_hand else 'MISSED'})"
    )
    if lost:
        explain_lost(r, key, lost, counts)
    r.close()


def explain_lost(r: redis.Redis, key: str, lost: list[str], counts: Counter[str]) -> None:
    """Were the lost ones dropped as stale (a newer event of the task was pushed)?"""
    task_of: dict[str, str] = {}
    start = "-"
    while True:
        chunk = r.xrange(key, start, "+", count=10_000)
        for entry_id, fields in chunk:
            task_of[entry_id.decode()] = json.loads(fields[b"task"])["taskId"]
        if len(chunk) < 10_000:
            break
        start = "(" + chunk[-1][0].decode()
    newest: dict[str, str] = {}
    for e in counts:
        t = task_of.get(e)
        if t is not None and _newer(e, newest.get(t)):
            newest[t] = e
    stale = sum(1 for e in lost if _newer(newest.get(task_of[e]), e))
    print(
        f"  of the lost, {stale} are older than an event of their task that was pushed "
        "(skipped as stale by a sink's push.lua mark after the restart)"
    )


def _newer(a: str | None, b: str | None) -> bool:
    if a is None:
        return False
    if b is None:
        return True
    return tuple(map(int, a.split("-"))) > tuple(map(int, b.split("-")))


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run: fewer events and rounds")
    ap.add_argument(
        "--profile", action="store_true", help="py-spy the relay in an extra throughput drain"
    )
    ap.add_argument("--only", default="1,2,3", help="which figures, e.g. 2 or 1,3")
    add_pin_option(ap)
    # Up to four busy processes (producer, relay, receiver, redis-server): on a 2-CPU machine
    # "split" would put all but the server on one CPU, the relay queued behind the producer
    # and the receiver, a placement no deployment has.
    ap.set_defaults(pin="none")
    args = ap.parse_args()
    only = set(args.only.split(","))
    reference = None
    with redis_server(args.pin) as server:
        print("# load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        receiver = Receiver()
        relays = Relays(server, receiver)
        try:
            if "1" in only:
                latency(server, receiver, relays, args.quick)
            if "2" in only:
                reference = throughput(server, receiver, relays, args.quick, args.profile)
            if "3" in only:
                sigkill(server, receiver, relays, args.quick, reference)
        finally:
            relays.stop_all()
            receiver.stop()


if __name__ == "__main__":
    main()
