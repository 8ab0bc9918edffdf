"""Step history, learned stall times, the ETA and waiting: the scripts on an injected clock,
on fakeredis and again on a real redis-server, each step checked against the pure model."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from pulse import model
from pulse.keys import Keys
from pulse.store import Store

NS = "t"
K = Keys(NS)
T0 = 1_780_000_000_000
TTL = 7 * 86400
MIN = 60


def at(seconds: float) -> dict:
    ms = T0 + int(seconds * 1000)
    return {"now": model.iso(datetime.fromtimestamp(ms / 1000, timezone.utc)), "now_ms": ms}


class Twin:
    """The store and the model side by side: every change is made on both and compared."""

    def __init__(self, store: Store, *, adaptive: bool = True) -> None:
        self.store = store
        self.adaptive = adaptive
        self.history: dict[str, list[list[int]]] = {}
        self.paces: dict[str, dict] = {}
        self.tasks: dict[str, model.Task] = {}
        self.n = 0

    def create(self, seconds: float, steps=("build", "test", "ship"), name="deploy", stall=180):
        self.n += 1
        task = model.new_task(
            f"{name}-{self.n}", name, list(steps), at(seconds)["now"],
            stall_seconds=stall, namespace=NS, host="h",
        )  # fmt: skip
        change = self.store.create(task, at(seconds)["now_ms"], TTL, adaptive=self.adaptive)
        want = model.normalize(json.loads(json.dumps(task)))
        pace = model.new_pace(adaptive=self.adaptive)
        model.pace_start(pace, want, 0, at(seconds)["now_ms"], self.history)
        model.pace_eta(pace, want, at(seconds)["now"], at(seconds)["now_ms"])
        assert change.task == want
        self.tasks[task["taskId"]], self.paces[task["taskId"]] = change.task, pace
        return change

    def update(self, task_id: str, op: str, seconds: float, message=None):
        change = self.store.update(task_id, op, message=message, ttl=TTL, **at(seconds))
        want, kind = model.apply(
            self.tasks[task_id], op, at(seconds)["now"], message,
            pace=self.paces[task_id], history=self.history, now_ms=at(seconds)["now_ms"],
        )  # fmt: skip
        assert (change.kind, change.task) == (kind, want)
        self.tasks[task_id] = change.task
        return change

    def run(self, start: float, durations, *, quiet_every: float | None = None, name="deploy"):
        """A whole task from ``start``: each step lasts its duration, with a heartbeat every
        ``quiet_every`` seconds; returns when it ended."""
        steps = [f"s{i}" for i in range(len(durations))] if name != "deploy" else None
        tid = self.create(start, steps or ("build", "test", "ship")[: len(durations)], name)
        tid = tid.task["taskId"]
        now = start
        for d in durations:
            if quiet_every:
                beat = now + quiet_every
                while beat < now + d:
                    self.update(tid, "heartbeat", beat)
                    beat += quiet_every
            now += d
            self.update(tid, "next", now)
        return now


def stored_history(raw) -> dict:
    return {f: json.loads(v) for f, v in raw.hgetall(K.history).items()}


def test_a_never_seen_name_has_no_eta_and_the_fixed_stall_time(store, raw):
    twin = Twin(store)
    task = twin.create(0).task
    assert task["eta"] is None and task["stallAfter"] == 180
    assert task["waiting"] is False and task["question"] is None
    assert raw.zscore(K.running, task["taskId"]) == T0 + 180_000
    assert not raw.exists(K.history)


def test_three_past_runs_then_a_fourth(store, raw):
    twin = Twin(store)
    # Three runs: build 100/120/110 s, test 600/660/630 s (quiet all along), ship 10 s.
    end = 0.0
    for build, test in ((100, 600), (120, 660), (110, 630)):
        end = twin.run(end + 1000, (build, test, 10))
    hist = stored_history(raw)
    assert hist["deploy\nbuild"] == [[100_000, 100_000], [120_000, 120_000], [110_000, 110_000]]
    assert hist["deploy\ntest"] == [[600_000, 600_000], [660_000, 660_000], [630_000, 630_000]]
    assert raw.zscore(K.history_used, "deploy\nship") == T0 + end * 1000

    fourth = twin.create(10_000).task
    tid = fourth["taskId"]
    # Medians: build 110 s, test 630 s, ship 10 s.
    assert fourth["eta"] == {
        "remainingSeconds": 750,
        "finishAt": at(10_750)["now"],
        "runs": 3,
    }
    assert fourth["stallAfter"] == 180  # build was never quiet for 120 s (1.5 x 120 = 180)
    # 40 s into build: 70 s of it left, then 640.
    assert twin.update(tid, "heartbeat", 10_040).task["eta"]["remainingSeconds"] == 710
    # build overruns its median: only the steps ahead remain.
    assert twin.update(tid, "heartbeat", 10_200).task["eta"]["remainingSeconds"] == 640
    test = twin.update(tid, "next", 10_210).task
    # test was quiet up to 660 s: its p95, x 1.5 = 990 s before it counts as stalled.
    assert test["stallAfter"] == 990
    assert raw.zscore(K.running, tid) == at(10_210)["now_ms"] + 990_000
    assert test["eta"]["remainingSeconds"] == 640
    done = twin.update(tid, "done", 10_800).task
    assert done["eta"] is None
    assert stored_history(raw)["deploy\ntest"][-1] == [590_000, 590_000]
    assert len(stored_history(raw)["deploy\nship"]) == 3  # ship never ran in the fourth


def test_a_wait_in_the_middle_counts_neither_as_duration_nor_as_quiet(store, raw):
    twin = Twin(store)
    tid = twin.create(0, ("ask", "apply")).task["taskId"]
    twin.update(tid, "heartbeat", 20)
    waiting = twin.update(tid, "wait", 30, "apply to prod?")
    assert waiting.kind == "wait"
    assert waiting.task["waiting"] is True and waiting.task["question"] == "apply to prod?"
    assert raw.zscore(K.running, tid) == float("inf")
    # A heartbeat keeps the wait; the stall scan skips a waiting task however long it waits.
    assert twin.update(tid, "heartbeat", 500).task["waiting"] is True
    assert raw.zscore(K.running, tid) == float("inf")
    answered = twin.update(tid, "next", 1000, "yes").task
    assert answered["waiting"] is False and answered["question"] is None
    assert raw.zscore(K.running, tid) == at(1000)["now_ms"] + 180_000
    # ask ran 1000 s, 970 of them waiting: 30 s long, its longest quiet spell 20 s.
    assert stored_history(raw)["deploy\nask"] == [[30_000, 20_000]]


def test_a_failed_step_adds_nothing(store, raw):
    twin = Twin(store)
    tid = twin.create(0, ("build", "test")).task["taskId"]
    twin.update(tid, "next", 50)
    twin.update(tid, "error", 90, "tests failed")
    assert stored_history(raw) == {"deploy\nbuild": [[50_000, 50_000]]}


def test_without_adaptive_stall_the_stall_time_stays_fixed(store, raw):
    twin = Twin(store, adaptive=False)
    end = 0.0
    for _ in range(3):
        end = twin.run(end + 1, (600,))
    task = twin.create(end + 1, ("build",)).task
    assert task["stallAfter"] == 180 and task["eta"]["remainingSeconds"] == 600


def test_heartbeats_keep_the_learned_stall_time_short(store, raw):
    twin = Twin(store)
    end = 0.0
    for _ in range(3):
        end = twin.run(end + 1, (900,), quiet_every=30)
    task = twin.create(end + 1, ("build",)).task
    assert task["stallAfter"] == 180  # 1.5 x 30 s is below the fixed 180 s
    assert stored_history(raw)["deploy\nbuild"][0] == [900_000, 30_000]


def test_histories_are_capped_and_bounded(store, raw):
    twin = Twin(store)
    tid = twin.create(0, [f"s{i}" for i in range(60)]).task["taskId"]
    for i in range(60):
        twin.update(tid, "next", i + 1)
    assert raw.hlen(K.history) == 60 and raw.zcard(K.history_used) == 60
    assert 0 < raw.ttl(K.history) <= 30 * 86400
    # The runs kept per step are capped too.
    for n in range(55):
        t = twin.create(100 + 2 * n, ("build",)).task["taskId"]
        twin.update(t, "next", 101 + 2 * n)
    assert len(stored_history(raw)["deploy\nbuild"]) == 50


def test_unused_histories_expire_and_the_least_recently_used_go_past_the_cap(conn, raw):
    from pulse.scripts import Script

    update = Script("update")
    store = Store(conn, NS)
    twin = Twin(store)

    def finish_step(task_id: str, seconds: float, cap: int, ttl: int) -> None:
        args = ["next", *at(seconds).values(), "0", "", "", "", TTL, 1000, K.channel, "",
                "", "", "PUBLISH", 50, cap, ttl, 3]  # fmt: skip
        keys = [K.task(task_id), K.updated, K.running, K.events, K.history, K.history_used]
        update(conn, keys, args)

    tid = twin.create(0, ("a", "b", "c", "d")).task["taskId"]
    finish_step(tid, 10, 100, 1000)  # a at 10 s
    finish_step(tid, 20, 100, 1000)  # b at 20 s
    finish_step(tid, 2000, 2, 1000)  # c, past a's and b's 1000 s: they go
    assert sorted(stored_history(raw)) == ["deploy\nc"]
    tid = twin.create(2001, ("x", "y")).task["taskId"]
    finish_step(tid, 2010, 2, 1000)
    finish_step(tid, 2020, 2, 1000)  # three histories, cap 2: c, the least recent, goes
    assert sorted(stored_history(raw)) == ["deploy\nx", "deploy\ny"]
    assert sorted(raw.zrange(K.history_used, 0, -1)) == ["deploy\nx", "deploy\ny"]


def test_history_reads_by_name(store, raw):
    twin = Twin(store)
    twin.run(0, (10, 20))
    twin.run(100, (30,), name="dump*")
    assert store.history("deploy") == {
        ("deploy", "build"): [[10_000, 10_000]],
        ("deploy", "test"): [[20_000, 20_000]],
    }
    assert store.history("dump*") == {("dump*", "s0"): [[30_000, 30_000]]}
    assert len(store.history()) == 3


@pytest.mark.parametrize(
    ("values", "median", "p95"),
    [
        ([5], 5, 5),
        ([4, 1], 2, 4),  # (1 + 4) // 2, in whole ms as the scripts round
        ([3, 1, 2], 2, 3),
        (list(range(1, 21)), 10, 19),  # nearest rank: the 19th of 20
        (list(range(1, 101)), 50, 95),
    ],
)
def test_the_estimators_on_fixed_samples(values, median, p95):
    assert model.median_ms(values) == median
    assert model.p95_ms(values) == p95


def test_the_learned_stall_time_rounds_up_to_whole_seconds():
    assert model.learned_stall(180, [400_001, 10, 20]) == 601
    assert model.learned_stall(180, [100_000]) == 180


def test_the_finish_time_crosses_days_and_keeps_the_offset(store):
    twin = Twin(store)
    end = 0.0
    for _ in range(3):
        end = twin.run(end + 1, (3 * 86400 + 7,))
    task = twin.create(end + 1, ("build",)).task  # compared with the model's datetime sum
    assert task["eta"]["remainingSeconds"] == 3 * 86400 + 7


def test_the_stall_scan_waits_for_the_learned_time_and_skips_a_waiting_task(store, raw):
    from pulse.events import mark_stalled

    twin = Twin(store)
    end = 0.0
    for _ in range(3):
        end = twin.run(end + 1, (600,))  # silent for 600 s: stallAfter 900 s
    known = twin.create(10_000, ("build",)).task["taskId"]
    fresh = twin.create(10_000, ("other",)).task["taskId"]
    waiting = twin.create(10_000, ("ask",)).task["taskId"]
    twin.update(waiting, "wait", 10_001, "ok?")

    def stalled(seconds: float) -> list[str]:
        at_ms = T0 + int(seconds * 1000)
        return [e.task["taskId"] for e in mark_stalled(raw, NS, at_ms / 1000, timezone.utc)]

    assert store.due(T0 + 10_180_000) == [fresh]  # an index range: only what is due
    assert stalled(10_181) == [fresh]
    assert stalled(10_899) == []
    assert stalled(10_901) == [known]
    assert stalled(50_000) == []  # once per stall; and never the waiting one
    assert raw.zscore(K.running, waiting) == float("inf")


def test_a_restored_waiting_task_is_still_not_stalled(store, raw):
    from pulse.events import mark_stalled

    twin = Twin(store)
    tid = twin.create(0, ("ask",)).task["taskId"]
    task = twin.update(tid, "wait", 5, "ok?").task
    raw.delete(K.task(tid))
    assert store.restore(task, updated_ms=T0 + 5000, expire_at_ms=T0 + 10**12)
    assert mark_stalled(raw, NS, T0 / 1000 + 10_000, timezone.utc) == []
    assert raw.zscore(K.running, tid) == float("inf")
