"""Update throughput of the library against a bare redis-py EVALSHA floor, same server.

Floor: redis-py ``r.evalsha(sha, 4, ...)`` of a Lua script doing the four writes every pulse
update does (HSET of the task hash, ZADD to the updated index, XADD to the event stream,
PUBLISH), on keys of the same shape and with the same snapshot as payload. The library
figures are ``Store.update`` alone, ``Client.heartbeat`` with the mirror write skipped,
``Client.heartbeat`` as ``pulse.connect`` ships it (validation, Redis, the JSON mirror file
written on a background thread, waited for at the end of each run), and the same with the
file written in line, as the CLI does for its single update.

Variants run alternately, round after round, and each figure is the median (and best) of the
rounds, so a noisy neighbour hurts all of them alike.

    python bench/bench_update.py [--quick] [--profile] [--mirror-dir DIR] [--pin MODE]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import redis
from _common import add_pin_option, median, ratio_line, redis_server

import pulse
from pulse import model
from pulse.client import Client
from pulse.keys import STREAM_MAXLEN, Keys

FLOOR_LUA = """
redis.call('HSET', KEYS[1], 'snap', ARGV[1], 'version', ARGV[2], 'status', 'running',
  'updated', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local sid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
  'kind', 'heartbeat', 'at', ARGV[6], 'task', ARGV[1])
redis.call('PUBLISH', ARGV[7],
  '{"id":"' .. sid .. '","kind":"heartbeat","at":"' .. ARGV[6] .. '","task":' .. ARGV[1] .. '}')
return {sid, 'heartbeat', ARGV[1]}
"""


def floor_loop(r: redis.Redis, snap: str) -> Callable[[int], None]:
    sha = r.script_load(FLOOR_LUA)
    k = Keys("floor")
    keys = (k.task("floor-task"), k.updated, k.running, k.events)
    at = model.iso(datetime.now().astimezone())

    def run(n: int) -> None:
        for i in range(n):
            now_ms = int(time.time() * 1000)
            r.evalsha(sha, 4, *keys, snap, i, now_ms, "floor-task", STREAM_MAXLEN, at, k.channel)

    return run


def store_loop(client: pulse.Client, task_id: str) -> Callable[[int], None]:
    store, tz, ttl = client.store, client.settings.tz, client.settings.retention_seconds

    def run(n: int) -> None:
        for i in range(n):
            now = datetime.now(tz)
            store.update(
                task_id,
                "heartbeat",
                now=model.iso(now),
                now_ms=int(now.timestamp() * 1000),
                message=f"beat {i}",
                ttl=ttl,
            )

    return run


def client_loop(client: pulse.Client, task_id: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            client.heartbeat(task_id, f"beat {i}")
        client.flush_mirror()  # the mirror writes are part of the work: wait for them

    return run


def target(name: str) -> str:
    # The CLI makes one update per process; its figure is bench_cli.py's wall-time ratio.
    return "" if "(CLI)" in name else ">= 0.8"


def rate(run: Callable[[int], None], n: int) -> float:
    t0 = time.perf_counter()
    run(n)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run: fewer ops and rounds")
    ap.add_argument("--profile", action="store_true", help="cProfile Client.heartbeat after")
    ap.add_argument("--mirror-dir", type=Path, help="mirror folder (default: in the temp dir)")
    add_pin_option(ap)
    args = ap.parse_args()
    n, rounds = (300, 3) if args.quick else (2000, 11)

    with redis_server(args.pin) as server:
        mirror = server.work / "mirror"
        if args.mirror_dir:  # e.g. /dev/shm, to see what the file system adds
            mirror = Path(tempfile.mkdtemp(prefix="pulse-bench-", dir=args.mirror_dir))
        client = pulse.connect(server.url, dir=mirror)
        bare = pulse.connect(server.url, dir=mirror)
        bare._mirror = lambda task, **kw: None  # type: ignore[method-assign]  # Redis part only
        inline = Client(client.settings)  # as the CLI runs it: the file written in line
        ids = [client.create("bench update", ["one step"]).id for _ in range(4)]
        snap = client.store.conn.call("HGET", client.store.keys.task(ids[0]), "snap")
        r = redis.Redis(unix_socket_path=server.socket)
        variants = {
            "floor: redis-py evalsha (4 writes)": floor_loop(r, snap),
            "Store.update (no mirror)": store_loop(client, ids[0]),
            "Client.heartbeat, mirror skipped": client_loop(bare, ids[1]),
            "Client.heartbeat (with mirror)": client_loop(client, ids[2]),
            "Client.heartbeat, mirror in line (CLI)": client_loop(inline, ids[3]),
        }
        print(f"# {n} updates per variant per round, {rounds} rounds, alternating")
        print(f"# snapshot {len(snap)} bytes; mirror in {mirror}")
        for run in variants.values():  # warm up: scripts cached, files and code paths hot
            run(max(n // 10, 50))
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(rounds):
            names = list(variants)
            names = names[i % len(names) :] + names[: i % len(names)]  # rotate who goes first
            for name in names:
                rates[name].append(rate(variants[name], n))

        print(f"\n{'variant':<40} {'median ops/s':>12} {'best ops/s':>11} {'us/op':>7}")
        for name, got in rates.items():
            print(f"{name:<40} {median(got):12,.0f} {max(got):11,.0f} {1e6 / median(got):7.1f}")
        floor = list(variants)[0]
        print("\nratios library/floor (median of rounds; higher is better):")
        for name in list(variants)[1:]:
            print(ratio_line(name, median(rates[name]), median(rates[floor]), target(name)))
        print("ratios library/floor (median of each round's own ratio, floor run beside it):")
        for name in list(variants)[1:]:
            paired = [lib / fl for lib, fl in zip(rates[name], rates[floor], strict=True)]
            print(ratio_line(name, median(paired), 1.0, target(name)))
        with_mirror = 1e6 / median(rates["Client.heartbeat (with mirror)"])
        skipped = 1e6 / median(rates["Client.heartbeat, mirror skipped"])
        print(f"\nthe mirror write costs {with_mirror - skipped:.1f} us per update (medians)")

        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(variants["Client.heartbeat (with mirror)"], n)
            print(f"\ncProfile of {n} Client.heartbeat calls, top by own time:")
            pstats.Stats(prof).sort_stats("tottime").print_stats(14)
        client.close()
        bare.close()
        r.close()
        if args.mirror_dir:
            shutil.rmtree(mirror, ignore_errors=True)


if __name__ == "__main__":
    main()
