"""ETAs and learned stall times over a simulated month, replayed through the real scripts.

A synthetic month (fixed seed): 20 task names of 3-8 steps, each step's duration log-normal
with a median from 10 s to 30 min and a sigma from 0.1 to 0.6. Steps report in one of three
ways: a heartbeat every 30 s, messages at irregular gaps (5-90 s), or nothing at all until they
end (silent steps, medians 10 s to 5 min, so runs of up to 10 minutes and more are silent).
5% of runs die mid-step (a real stall: no update ever again). Runs of one name follow each
other, about 50 of them a month; the names run concurrently.

Every update goes through ``Store.create``/``Store.update`` (create.lua, update.lua) and the
stall scan through ``pulse.events.mark_stalled`` (stall.lua over the running index), on simulated
time: the scripts take ``now`` as an argument. The scan runs as a relay's does, once a second,
here jumped straight to the next second the running index says something is due. The month is
replayed twice on the same schedule: with learned stall times, and with
PULSE_ADAPTIVE_STALL=0 (the fixed 180 s).

Figures:
- ETA error: median absolute percentage error of the remaining time at every step boundary
  (when a step ends and the next starts) of the runs that finish, for ETAs based on 3-5 past
  runs and on 20 or more, against the current-run-rate estimate a progress bar would give
  (elapsed / steps done x steps left) at the same boundaries. Target: at most half its error.
- Stall alerts: false alerts (a `stall` of a task whose agent updates it again) per 1,000
  step runs, learned against fixed (target: at least 90% fewer); real stalls missed (target
  0); the delay from the agent's death to its alert (median and max). A task alerted while
  its agent was still alive but quiet, that then died without another update, counts as
  detected with delay 0: the alert stands (stall.lua alerts once per stall).

    python bench/bench_eta.py [--fake] [--seed N] [--runs N]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from _common import redis_server

from pulse import model
from pulse.events import mark_stalled
from pulse.keys import DEFAULT_STALL_SECONDS
from pulse.store import Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MONTH = 30 * 86400
NAMES = 20
TTL = 40 * 86400


@dataclass
class Step:
    name: str
    mode: str  # beat | chatty | silent
    median: float
    sigma: float


@dataclass
class Run:
    name: str
    steps: list[Step]
    start: float
    durations: list[float]
    updates: list[tuple[float, str]] = field(default_factory=list)  # (time, op)
    dies_at: float | None = None  # a real stall: the agent dies at this time
    index: int = 0  # how many runs of this name came before
    end: float = 0.0


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def month(seed: int, runs_per_name: int) -> list[Run]:
    rng = random.Random(seed)
    runs: list[Run] = []
    for n in range(NAMES):
        steps = []
        for s in range(rng.randint(3, 8)):
            mode = rng.choice(["beat", "chatty", "silent"])
            top = 300 if mode == "silent" else 1800
            steps.append(Step(f"step{s}", mode, log_uniform(rng, 10, top), rng.uniform(0.1, 0.6)))
        at = rng.uniform(0, 3600)
        spacing = MONTH / runs_per_name
        for index in range(runs_per_name):
            durations = [max(1.0, rng.lognormvariate(math.log(s.median), s.sigma)) for s in steps]
            run = Run(f"job{n:02d}", steps, at, durations, index=index)
            dies = rng.random() < 0.05
            dying_step = rng.randrange(len(steps)) if dies else -1
            t = at
            for k, (step, d) in enumerate(zip(steps, durations, strict=True)):
                if k == dying_step:
                    run.dies_at = t + rng.uniform(0.1, 0.9) * d
                if step.mode == "beat":
                    beats = [t + 30 * i for i in range(1, int(d // 30) + 1) if 30 * i < d]
                elif step.mode == "chatty":
                    beats, b = [], t + rng.uniform(5, 90)
                    while b < t + d:
                        beats.append(b)
                        b += rng.uniform(5, 90)
                else:
                    beats = []
                run.updates += [(b, "heartbeat") for b in beats]
                t += d
                run.updates.append((t, "next" if k < len(steps) - 1 else "done"))
            if run.dies_at is not None:
                run.updates = [u for u in run.updates if u[0] < run.dies_at]
            run.end = t
            runs.append(run)
            at = max(t + 60, at + spacing * rng.uniform(0.5, 1.5))
    return runs


@dataclass
class Outcome:
    eta: list[tuple[int, float, float]] = field(default_factory=list)  # runs, ape, rate ape
    no_eta: int = 0
    false_alerts: int = 0
    false_early: int = 0  # in a name's first 3 runs, before anything can be learned
    step_runs: int = 0
    delays: list[float] = field(default_factory=list)
    missed: int = 0
    quiet_then_died: int = 0
    calls: int = 0


def iso(t: float) -> str:
    return model.iso(datetime.fromtimestamp(t, timezone.utc))


def replay(conn, client, namespace: str, runs: list[Run], *, adaptive: bool) -> Outcome:
    """``conn``: pulse's connection (the CLI's); ``client``: redis-py's (the relay's)."""
    store = Store(conn, namespace)
    out = Outcome()
    queue: list[tuple[float, int, int, str]] = []  # (time, run, update index, op)
    for r, run in enumerate(runs):
        heapq.heappush(queue, (run.start, r, -1, "create"))
    ids: dict[int, str] = {}
    by_id: dict[str, int] = {}
    dead_alerted: set[int] = set()
    alerted_at: dict[int, float] = {}  # alerts not yet followed by an update of the task
    while queue:
        t_next = queue[0][0]
        due = conn.call("ZRANGE", store.keys.running, 0, 0, "WITHSCORES")
        if due and float(due[1]) / 1000 <= t_next:
            scan_at = math.ceil(float(due[1]) / 1000)  # a relay looks once a second
            for event in mark_stalled(client, namespace, scan_at, timezone.utc):
                r = by_id[event.task["taskId"]]
                dies = runs[r].dies_at
                if dies is not None and scan_at >= dies:
                    out.delays.append(scan_at - dies)
                    dead_alerted.add(r)
                    # found: the person deals with it; out of the scan, as cleanup would
                    conn.call("ZREM", store.keys.running, event.task["taskId"])
                else:  # false if the agent updates the task again, else it died quiet
                    alerted_at[r] = scan_at
            out.calls += 1
            continue
        t, r, i, op = heapq.heappop(queue)
        run = runs[r]
        if op == "create":
            task = model.new_task(
                f"{run.name}-{r}", run.name, [s.name for s in run.steps], iso(t),
                stall_seconds=DEFAULT_STALL_SECONDS, namespace=namespace,
            )  # fmt: skip
            store.create(task, int(t * 1000), TTL, adaptive=adaptive)
            ids[r], by_id[task["taskId"]] = task["taskId"], r
        else:
            if alerted_at.pop(r, None) is not None:
                out.false_alerts += 1
                out.false_early += run.index < 3
            change = store.update(ids[r], op, now=iso(t), now_ms=int(t * 1000), ttl=TTL)
            if op in ("next", "done"):
                out.step_runs += 1
            if op == "next" and run.dies_at is None:
                done = sum(1 for u in run.updates[: i + 1] if u[1] == "next")
                total = len(run.steps)
                actual = run.end - t
                rate = (t - run.start) / done * (total - done)
                eta = change.task["eta"]
                if eta is None:
                    out.no_eta += 1
                else:
                    ape = abs(eta["remainingSeconds"] - actual) / actual
                    out.eta.append((eta["runs"], ape, abs(rate - actual) / actual))
        out.calls += 1
        if i + 1 < len(run.updates):
            heapq.heappush(queue, (run.updates[i + 1][0], r, i + 1, run.updates[i + 1][1]))
    for r in alerted_at:
        # The agent went quiet past its stall time and then died without a word: the alert
        # it had was the real one, given before the death.
        out.delays.append(0.0)
        out.quiet_then_died += 1
        dead_alerted.add(r)
    out.missed = sum(1 for r, run in enumerate(runs) if run.dies_at and r not in dead_alerted)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fake", action="store_true", help="fakeredis instead of a redis-server")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--runs", type=int, default=50, help="runs of each name in the month")
    args = ap.parse_args()
    runs = month(args.seed, args.runs)
    steps = sum(len(r.steps) for r in runs)
    dying = sum(1 for r in runs if r.dies_at)
    print(f"# month: {len(runs)} runs of {NAMES} names, {steps} steps planned, "
          f"{dying} runs die mid-step, seed {args.seed}")  # fmt: skip
    if args.fake:
        import fakeredis

        from pulse.redispy import RedisPyConnection

        client = fakeredis.FakeRedis(decode_responses=True)
        conn = RedisPyConnection(client)
        results = {a: replay(conn, client, f"b{int(a)}", runs, adaptive=a) for a in (True, False)}
    else:
        import redis

        from pulse.transport import connect

        with redis_server("none") as server:
            conn = connect(server.url)
            client = redis.Redis(unix_socket_path=server.socket, decode_responses=True)
            t0 = time.perf_counter()
            results = {
                a: replay(conn, client, f"b{int(a)}", runs, adaptive=a) for a in (True, False)
            }
            took = time.perf_counter() - t0
            calls = sum(o.calls for o in results.values())
            print(f"# replayed {calls} script calls in {took:.1f} s")
    learned, fixed = results[True], results[False]

    def mdape(rows: list[tuple[int, float, float]], lo: int, hi: int) -> tuple[int, float, float]:
        got = [(a, b) for n, a, b in rows if lo <= n <= hi]
        if not got:
            return 0, float("nan"), float("nan")
        return len(got), statistics.median(a for a, _ in got), statistics.median(b for _, b in got)

    print("\nETA error at step boundaries (median absolute % error of the remaining time)")
    print(f"{'based on':<22}{'boundaries':>11}{'ETA':>9}{'run rate':>10}{'ratio':>8}")
    for label, lo, hi in (("3-5 past runs", 3, 5), ("20+ past runs", 20, 10**9),
                          ("any (3+)", 3, 10**9)):  # fmt: skip
        n, ours, rate = mdape(learned.eta, lo, hi)
        verdict = "met" if ours <= rate / 2 else "MISSED"
        print(f"{label:<22}{n:>11}{ours:>8.1%}{rate:>10.1%}{ours / rate:>7.2f}x"
              f"  (target <= 0.5: {verdict})")  # fmt: skip
    print(f"boundaries without an ETA (fewer than 3 past runs): {learned.no_eta}")

    print("\nStall alerts")
    per_k = [1000 * o.false_alerts / o.step_runs for o in (learned, fixed)]
    fewer = 1 - per_k[0] / per_k[1] if per_k[1] else float("nan")
    print(f"false alerts per 1,000 step runs: learned {per_k[0]:.2f} ({learned.false_alerts}), "
          f"fixed 180 s {per_k[1]:.2f} ({fixed.false_alerts}); {fewer:.1%} fewer "
          f"(target >= 90%: {'met' if fewer >= 0.9 else 'MISSED'})")  # fmt: skip
    print(f"false alerts in a name's first 3 runs: learned {learned.false_early}, "
          f"fixed {fixed.false_early}")  # fmt: skip
    for label, o in (("learned", learned), ("fixed 180 s", fixed)):
        d = sorted(o.delays)
        if not d:
            print(f"real stalls, {label}: none alerted, {o.missed} missed")
            continue
        print(f"real stalls, {label}: {len(d)} of {dying} alerted ({o.quiet_then_died} before "
              f"they died: already quiet too long), {o.missed} missed; delay from death "
              f"median {statistics.median(d):.0f} s, max {max(d):.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
