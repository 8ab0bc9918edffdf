"""``status`` of the 1000 most recent of 100,000 tasks against a bare redis-py read of them.

Library: ``client.status("all", limit=1000)``: ZREVRANGE of the updated index, one pipeline
of HGET snap, each snapshot decoded and normalized into a dict, stall flags derived.
Floors, on the same server: ZREVRANGE plus a redis-py pipeline (transaction=False) of
HGETALL of the same 1000 hashes; once fetch only, once also ``json.loads`` of each ``snap``
field, since the library hands back decoded dicts. For context only, a third read goes
through pulse's own socket client (HGET snap + json.loads, nothing else), showing what
``status`` adds on top of its transport. Variants alternate, round after round.

The tasks are loaded through ``Store.create`` (the library builds each snapshot, key and
script call), its EVALSHA calls sent in pipelined batches; the load time is not a figure.

    python bench/bench_status.py [--quick] [--profile] [--pin MODE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from _common import add_pin_option, median, ratio_line, redis_server

import pulse
from pulse import model
from pulse.store import Store
from pulse.transport import ReplyError

LIMIT = 1000
STEPS = ["fetch", "build", "test", "package", "ship"]


class Recorder:
    """A Connection that keeps each call for a later pipeline; answers as create.lua would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def call(self, *args: Any) -> Any:
        self.calls.append(args)
        numkeys = args[2]  # EVALSHA sha numkeys key... id snap ...
        return ["0-0", args[3 + numkeys + 1]]


def load(client: pulse.Client, count: int, batch: int = 2000) -> float:
    """``count`` tasks made by Store.create, step i of each done; returns the seconds taken."""
    t0 = time.perf_counter()
    conn, s = client.store.conn, client.settings
    now = datetime.now(s.tz) - timedelta(seconds=count)
    client.create("warm-up", ["one"])  # caches create.lua on the server, so EVALSHA finds it
    recorder = Recorder()
    store = Store(recorder, s.namespace)  # type: ignore[arg-type]
    for i in range(count):
        at = now + timedelta(seconds=i)  # distinct update times: "most recent" is exact
        task = model.new_task(
            model.make_id(f"task {i}", at),
            f"task {i}",
            STEPS,
            model.iso(at),
            stall_seconds=s.stall_seconds,
            namespace=s.namespace,
            host="bench",
        )
        store.create(task, int(at.timestamp() * 1000), s.retention_seconds)
        if len(recorder.calls) >= batch or i == count - 1:
            for reply in conn.pipeline(recorder.calls):
                if isinstance(reply, ReplyError):
                    raise SystemExit(f"loading failed: {reply}")
            recorder.calls.clear()
    return time.perf_counter() - t0


def floor(r: redis.Redis, updated: str, prefix: str, decode: bool) -> Callable[[], int]:
    def run() -> int:
        ids = r.zrevrange(updated, 0, LIMIT - 1)
        pipe = r.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(prefix + task_id.decode())
        hashes = pipe.execute()
        if decode:
            return len([json.loads(h[b"snap"]) for h in hashes])
        return len(hashes)

    return run


def transport_floor(client: pulse.Client) -> Callable[[], int]:
    """For context: pulse's own socket client, ZREVRANGE + pipelined HGET snap + json.loads."""
    conn, keys = client.store.conn, client.store.keys

    def run() -> int:
        ids = conn.call("ZREVRANGE", keys.updated, 0, LIMIT - 1)
        snaps = conn.pipeline([("HGET", keys.task(t), "snap") for t in ids])
        return len([json.loads(snap) for snap in snaps])

    return run


def timed(run: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    got = run()
    took = (time.perf_counter() - t0) * 1000
    if got != LIMIT:
        raise SystemExit(f"read {got} tasks, not {LIMIT}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 tasks and fewer rounds")
    ap.add_argument("--profile", action="store_true", help="cProfile client.status after")
    add_pin_option(ap)
    args = ap.parse_args()
    count, rounds = (10_000, 7) if args.quick else (100_000, 21)

    with redis_server(args.pin) as server:
        client = pulse.connect(server.url, dir=server.work / "mirror")
        took = load(client, count)
        r = redis.Redis(unix_socket_path=server.socket)
        keys = client.store.keys
        used = r.info("memory")["used_memory_human"]
        print(f"# loaded {count:,} tasks in {took:.1f} s via Store.create ({used} in Redis)")
        print(f"# status of the {LIMIT} most recent; {rounds} rounds, alternating")
        variants = {
            "floor: zrevrange + pipelined hgetall": floor(r, keys.updated, keys.task(""), False),
            "floor: the same + json.loads(snap)": floor(r, keys.updated, keys.task(""), True),
            'client.status("all", limit=1000)': lambda: len(client.status("all", limit=LIMIT)),
            "context: pulse transport, hget + loads": transport_floor(client),
        }
        for run in variants.values():
            timed(run)  # warm-up
        ms: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(rounds):
            names = list(variants)
            for name in names[i % len(names) :] + names[: i % len(names)]:
                ms[name].append(timed(variants[name]))

        print(f"\n{'variant':<40} {'median ms':>9} {'best ms':>8} {'us/task':>8}")
        for name, got in ms.items():
            per_task = median(got) * 1000 / LIMIT
            print(f"{name:<40} {median(got):9.2f} {min(got):8.2f} {per_task:8.1f}")
        fetch, decoded, lib, own = (median(got) for got in ms.values())
        print("\nratios library/floor (medians; lower is better):")
        print(ratio_line("vs fetch + json.loads (the fair floor)", lib, decoded, "<= 1.5"))
        print(ratio_line("vs fetch only", lib, fetch, "<= 1.5"))
        _, floor_ms, lib_ms, _ = ms.values()  # per round, each beside the other
        paired = median([a / b for a, b in zip(lib_ms, floor_ms, strict=True)])
        print(ratio_line("same, median of per-round ratios", paired, 1.0, "<= 1.5"))
        print("for context, what status adds to its own transport's fetch + json.loads:")
        print(ratio_line("vs pulse transport, hget + loads", lib, own))

        if args.profile:
            prof = cProfile.Profile()
            for _ in range(5):
                prof.runcall(client.status, "all", limit=LIMIT)
            print("\ncProfile of 5 client.status calls, top by own time:")
            pstats.Stats(prof).sort_stats("tottime").print_stats(14)
        client.close()
        r.close()


if __name__ == "__main__":
    main()
