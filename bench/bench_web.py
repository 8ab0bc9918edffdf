"""``pulse web``: event-to-page latency with many open pages, API ``next`` against
``Client.next``, and the server's memory with 200 open pages.

Everything runs on this machine: a private redis-server (unix socket), ``pulse web`` as a
real subprocess on a free loopback port (PULSE_WEB_TOKEN set, so writes are allowed), and
the clients in this process.

1. Event-to-page latency at a steady 10 events/s with 1, 50 and 200 open event streams
   (``GET /api/events``, each its own TCP connection, read by asyncio in this process): from
   just before the XADD of an event (redis-py, a copy of a real heartbeat event) to the
   moment each stream delivered that event's ``id:`` line. p50 and p99 over every
   (event, page) pair; target: p99 at 200 pages <= 3x p99 at 1 page (the one stream reader
   fans out; the pages do not each read Redis).
2. ``next`` throughput: ``POST /api/tasks/ID/next`` over keep-alive HTTP/1.1 against the
   floor ``Client.next`` (``pulse.connect()``, the same Redis), alternating rounds, medians;
   one caller at a time, and 4 at once (4 threads, each its own connection or Client).
3. The server's RSS (``/proc/PID/status`` VmRSS) idle and with 200 open event streams.

    python bench/bench_web.py [--quick] [--pin none|split|same]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import add_pin_option, median, ratio_line, redis_server  # noqa: E402

import pulse  # noqa: E402

TOKEN = "bench-token"
NS = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_web(url: str, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "PULSE_REDIS_URL": url,
        "PULSE_NAMESPACE": NS,
        "PULSE_DIR": str(work / "mirror-web"),
        "PULSE_WEB_TOKEN": TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulse", "web", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(
                f"pulse web did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- 1. latency ----------------------------------------------------------------------------


async def open_page(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/events?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass  # the response head
    return reader, writer


async def read_page(reader: asyncio.StreamReader, sent: dict[str, float], got: list[float]):
    # chunked transfer encoding: the "id: " lines are whole lines inside the chunks
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"id: "):
            at = time.perf_counter()
            t0 = sent.get(line[4:].strip().decode())
            if t0 is not None:
                got.append(at - t0)


async def latency_run(port: int, url: str, pages: int, seconds: float, server_pid: int):
    import redis.asyncio as aioredis

    sync = pulse.connect(url, namespace=NS)
    handle = sync.create("latency", ["one", "two"])
    change = sync.heartbeat(handle.id, "tick", progress=10)
    sync.close()
    r = aioredis.Redis.from_url(url, decode_responses=True)
    fields = {"kind": "heartbeat", "at": change.task["updatedAt"], "task": json.dumps(change.task)}
    key = f"pulse:{{{NS}}}:events"

    conns = [await open_page(port) for _ in range(pages)]
    await asyncio.sleep(1.0)  # every stream subscribed
    rss = rss_mb(server_pid)
    sent: dict[str, float] = {}
    got: list[float] = []
    readers = [asyncio.create_task(read_page(rd, sent, got)) for rd, _ in conns]
    count = int(seconds * 10)
    cpu0 = cpu_seconds(server_pid)
    start = time.perf_counter()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / 10 - time.perf_counter()))
        t0 = time.perf_counter()
        eid = await r.xadd(key, fields)
        sent[eid] = t0
    deadline = time.perf_counter() + 5
    while len(got) < count * pages and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    cpu = cpu_seconds(server_pid) - cpu0
    for t in readers:
        t.cancel()
    for _, w in conns:
        w.close()
    await r.aclose()
    got.sort()
    missing = count * pages - len(got)
    p50 = got[len(got) // 2] * 1000
    p99 = got[min(len(got) - 1, int(len(got) * 0.99))] * 1000
    return p50, p99, missing, rss, cpu * 1e6 / (count * pages)


# -- 2. throughput -------------------------------------------------------------------------


class Tasks:
    """Task ids with steps left: each 100-step task takes 99 ``next`` while still running."""

    def __init__(self, client, n: int) -> None:
        steps = [f"s{i}" for i in range(100)]
        self.ids = [client.create("bench-next", steps).id for _ in range(n)]

    def take(self, k: int) -> list[str]:
        return [self.ids.pop() for _ in range(k)]


def http_next(port: int, task_id: str, calls: int) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for _ in range(calls):
        c.request("POST", f"/api/tasks/{task_id}/next", body=b'{"message": "ok"}', headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"next answered {r.status}")
    c.close()


def lib_next(url: str, work: Path, task_id: str, calls: int) -> None:
    client = pulse.connect(url, namespace=NS, dir=str(work / "mirror-lib"))
    for _ in range(calls):
        client.next(task_id, "ok")
    client.close()


def timed(fn, ids: list[str], calls: int) -> float:
    threads = [threading.Thread(target=fn, args=(i, calls)) for i in ids]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(ids) * calls / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (noisier figures)")
    add_pin_option(ap)
    args = ap.parse_args()
    seconds = 5 if args.quick else 20
    rounds = 3 if args.quick else 7

    with redis_server(args.pin) as srv:
        proc, port = start_web(srv.url, srv.work)
        if args.pin == "split" and hasattr(os, "sched_getaffinity"):
            # the server side (Redis and pulse web) on one CPU, the pages on the other
            import redis

            info = redis.Redis.from_url(srv.url).info("server")
            redis_cpus = os.sched_getaffinity(int(info["process_id"]))
            os.sched_setaffinity(proc.pid, redis_cpus)
            print(f"# pulse web on cpu {sorted(redis_cpus)} with redis-server")
        try:
            print(
                f"# pulse web pid {proc.pid} on 127.0.0.1:{port}; "
                f"idle RSS {rss_mb(proc.pid):.1f} MB"
            )
            print(f"\n1. event-to-page latency, 10 events/s for {seconds} s")
            p99s = {}
            for pages in (1, 50, 200):
                p50, p99, missing, rss, cpu_us = asyncio.run(
                    latency_run(port, srv.url, pages, seconds, proc.pid)
                )
                p99s[pages] = p99
                print(
                    f"   {pages:>3} pages: p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                    f"missed {missing}  server RSS {rss:.1f} MB  "
                    f"server CPU {cpu_us:.0f} us per event and page"
                )
            print(
                "   " + ratio_line("p99 at 200 pages / p99 at 1 page", p99s[200], p99s[1], "<= 3")
            )

            print(f"\n2. next throughput, {rounds} alternating rounds, medians")
            lib = pulse.connect(srv.url, namespace=NS, dir=str(srv.work / "mirror-lib"))
            calls = 30 if args.quick else 99
            for callers in (1, 4):
                tasks = Tasks(lib, rounds * 2 * callers)
                api_rates, lib_rates, ratios = [], [], []
                for _ in range(rounds):
                    a = timed(lambda i, n: http_next(port, i, n), tasks.take(callers), calls)
                    b = timed(
                        lambda i, n: lib_next(srv.url, srv.work, i, n), tasks.take(callers), calls
                    )
                    api_rates.append(a)
                    lib_rates.append(b)
                    ratios.append(a / b)
                print(
                    f"   {callers} caller(s): API {median(api_rates):7.0f}/s  "
                    f"Client.next {median(lib_rates):7.0f}/s  "
                    f"API/library {median(ratios):.2f} "
                    f"(per-round {min(ratios):.2f}-{max(ratios):.2f})"
                )
            lib.close()
            print(f"\n3. server RSS after the runs: {rss_mb(proc.pid):.1f} MB")
        finally:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    main()
