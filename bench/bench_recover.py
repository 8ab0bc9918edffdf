"""``Client.recover()`` of 100,000 tasks from a mirror folder after Redis lost everything.

Writes 100,000 snapshots (``--quick``: 10,000) of 5 steps with ``Mirror.write``, as the writers'
mirror or the central mirror holds them (running, done and failed tasks, each with its own
update time within the retention), then FLUSHALL and times ``client.recover()``: reading and
checking each file and putting it back into Redis with its indexes and absolute expiry.
A second ``recover()`` (nothing to restore) is timed too, and the result is checked: every
task back, each snapshot equal to its file, no event emitted.

``recover`` sends its restores in pipelines of ``pulse.client.RECOVER_BATCH`` (1000);
``--batch 1`` shows one round trip per task, as it was before.

    python bench/bench_recover.py [--quick] [--batch N] [--pin MODE]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import datetime, timedelta, timezone

import redis
from _common import add_pin_option, redis_server

import pulse
import pulse.client
from pulse import model
from pulse.mirror import Mirror

NS = "bench"
STEPS = ["fetch", "build", "test", "package", "ship"]


def write_mirror(mirror: Mirror, count: int) -> float:
    """``count`` snapshots in the mirror folder; returns the seconds taken."""
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    for i in range(count):
        at = now - timedelta(seconds=count - i)  # distinct times, all within the retention
        stamp = model.iso(at)
        task = model.new_task(
            model.make_id(f"task {i}", at),
            f"task {i}",
            STEPS,
            stamp,
            stall_seconds=180,
            namespace=NS,
            host="bench",
        )
        for _ in range(i % 6):  # every stage: running at each step, or done
            task, _ = model.apply(task, "next", stamp, f"step done at {stamp}")
        if i % 10 == 9 and task["status"] == "running":
            task, _ = model.apply(task, "error", stamp, "failed")
        mirror.write(task)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 tasks instead of 100,000")
    ap.add_argument("--tasks", type=int, help="how many tasks (overrides --quick)")
    ap.add_argument(
        "--batch",
        type=int,
        help="tasks per pipeline (default: pulse.client.RECOVER_BATCH; 1: a round trip each)",
    )
    add_pin_option(ap)
    a = ap.parse_args()
    count = a.tasks or (10_000 if a.quick else 100_000)
    if a.batch:
        pulse.client.RECOVER_BATCH = a.batch

    with redis_server(a.pin) as server:
        folder = server.work / "mirror"
        mirror = Mirror(folder, NS)
        took = write_mirror(mirror, count)
        size = sum(p.stat().st_size for p in mirror) / count
        print(f"# {count:,} mirror files of {size / 1024:.1f} KB written in {took:.1f} s")
        print(f"# {pulse.client.RECOVER_BATCH} tasks per pipeline (round trip)")
        r = redis.Redis(unix_socket_path=server.socket, decode_responses=True)
        client = pulse.connect(server.url, dir=folder, namespace=NS, tz=timezone.utc)
        r.flushall()

        t0 = time.perf_counter()
        report = client.recover()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = client.recover()
        second = time.perf_counter() - t0

        assert report.restored == count and not report.refused, report
        assert again.restored == 0 and again.unchanged == count, again
        assert r.zcard(f"pulse:{{{NS}}}:updated") == count
        assert r.exists(f"pulse:{{{NS}}}:events") == 0, "recover emitted events"
        for path in random.sample(list(mirror), 200):
            snap = json.loads(r.hget(f"pulse:{{{NS}}}:task:{path.stem}", "snap"))
            assert snap == json.loads(path.read_text()), path
        running = r.zcard(f"pulse:{{{NS}}}:running")
        print(f"# {running:,} of them running; every task back, snapshots equal, no event")
        print(
            f"recover of {count:,} tasks            {first:8.2f} s   {count / first:10,.0f} tasks/s"
        )
        print(
            f"again (nothing to restore)         {second:8.2f} s   {count / second:10,.0f} tasks/s"
        )
        client.close()
        r.close()


if __name__ == "__main__":
    main()
