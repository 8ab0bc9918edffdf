"""The relay as a real process, against a real redis-server and loopback chat fakes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.workers.conftest import FakeServer, Recorded

SECRET = "s3cret"


def pulse(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pulse", *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def start_relay(pulse_env: dict, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts ``pulse-relay`` processes (logs in tmp_path); any left running are killed."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, name: str = "r1", **env: str) -> subprocess.Popen:
        log = open(tmp_path / f"relay-{name}-{len(procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers",
                "--name",
                name,
                "--claim-idle",
                "1",
                "--backoff",
                "0.05",
                *args,
            ],
            env={**pulse_env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def webhook(server: FakeServer) -> str:
    return f"webhook+{server.url}/hook?secret={SECRET}"


def kinds(requests: list[Recorded]) -> list[str]:
    return [r.json["event"]["kind"] for r in requests]


def wait_until(check: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_a_whole_task_arrives_in_order_signed(pulse_env, start_relay, webhook_receiver):
    start_relay("--sink", webhook(webhook_receiver))
    task = pulse(pulse_env, "create", "deploy", "build", "test")
    pulse(pulse_env, "next", task, "built in 40s")
    pulse(pulse_env, "done", task, "https://example.com/r/1")
    got = webhook_receiver.wait_for(3)
    assert kinds(got) == ["create", "next", "done"]
    assert all(webhook_receiver.signature_ok(r, SECRET) for r in got)
    assert [r.json["task"]["version"] for r in got] == [1, 2, 3]
    assert got[1].json["text"] == "✅ [1/2] build done (built in 40s)\n🔄 → test"
    assert got[2].header("X-Pulse-Event-Id") == got[2].json["event"]["id"]


def test_heartbeats_are_throttled_and_the_latest_wins(pulse_env, start_relay, webhook_receiver):
    start_relay("--sink", webhook(webhook_receiver), PULSE_HEARTBEAT_PUSH_SECONDS="2")
    task = pulse(pulse_env, "create", "crawl", "fetch")
    for i in range(1, 6):
        pulse(pulse_env, "heartbeat", task, f"page {i}")
    got = webhook_receiver.wait_for(3)
    time.sleep(3)  # another window: nothing more may come
    got = webhook_receiver.requests
    beats = [r.json["text"] for r in got if r.json["event"]["kind"] == "heartbeat"]
    assert beats[0] == "💓 [0/1] fetch: page 1" and beats[-1] == "💓 [0/1] fetch: page 5"
    assert len(beats) == 2  # the first at once, the held-back latest when its window ended


def test_one_stall_alert_with_two_relays_then_resume(pulse_env, start_relay, webhook_receiver):
    start_relay("--sink", webhook(webhook_receiver), name="a")
    start_relay("--sink", webhook(webhook_receiver), name="b")
    task = pulse(pulse_env, "create", "slow", "wait", "--stall", "1")
    webhook_receiver.wait_for(2)  # create, then the stall
    time.sleep(2.5)  # both relays look again several times: still one alert
    assert kinds(webhook_receiver.requests) == ["create", "stall"]
    assert webhook_receiver.requests[1].json["text"].startswith("⚠️ [slow] may be stuck")
    pulse(pulse_env, "heartbeat", task, "alive")
    got = webhook_receiver.wait_for(3)
    assert kinds(got) == ["create", "stall", "resume"]


def test_no_stall_for_a_step_known_to_be_quiet_but_one_for_a_fresh_one(
    pulse_env, start_relay, webhook_receiver
):
    # Three runs of "nap" silent for 3 s each (side by side, before any relay looks).
    naps = [pulse(pulse_env, "create", "nap", "doze", "--stall", "1") for _ in range(3)]
    time.sleep(3)
    for task in naps:
        pulse(pulse_env, "done", task)
    start_relay("--sink", webhook(webhook_receiver))
    known = pulse(pulse_env, "create", "nap", "doze", "--stall", "1")  # learned: 5 s
    fresh = pulse(pulse_env, "create", "fresh", "doze", "--stall", "1")
    wait_until(lambda: any(r.json["task"]["taskId"] == fresh for r in stalls(webhook_receiver)))
    time.sleep(1.0)  # the known one is 2-3 s quiet now, past its own 1 s: still no alert
    assert [r.json["task"]["taskId"] for r in stalls(webhook_receiver)] == [fresh]
    for task in (known, fresh):
        pulse(pulse_env, "done", task)


def stalls(receiver: FakeServer) -> list[Recorded]:
    return [r for r in receiver.requests if r.json["event"]["kind"] == "stall"]


class SlowReceiver(FakeServer):
    def answer(self, req: Recorded):
        time.sleep(0.02)
        return super().answer(req)


def test_sigkill_loses_nothing(pulse_env, start_relay, redis_client):
    receiver = SlowReceiver()
    try:
        relay = start_relay("--sink", webhook(receiver), name="first")
        ids = [pulse(pulse_env, "create", f"t{i}", "a", "b") for i in range(10)]
        for task in ids:
            pulse(pulse_env, "next", task)
        receiver.wait_for(3)
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        for task in ids:  # made while no relay runs
            pulse(pulse_env, "done", task)
        start_relay("--sink", webhook(receiver), name="second")
        events = [e for e, _ in redis_client.xrange("pulse:{test}:events")]
        wait_until(lambda: {r.header("X-Pulse-Event-Id") for r in receiver.requests} >= set(events))
        counts = Counter(r.header("X-Pulse-Event-Id") for r in receiver.requests)
        duplicates = sum(n - 1 for n in counts.values())
        print(f"events {len(events)}, pushes {len(receiver.requests)}, duplicates {duplicates}")
        assert set(counts) == set(events)  # every event pushed, none made up
        # at most the push in hand: each push acks the one before it in the same write
        assert duplicates <= 1
    finally:
        receiver.stop()


def test_a_failing_sink_is_retried(pulse_env, start_relay, webhook_receiver):
    webhook_receiver.fail_next(500, times=2)
    start_relay("--sink", webhook(webhook_receiver))
    pulse(pulse_env, "create", "flaky", "a")
    got = webhook_receiver.wait_for(3)
    assert [r.header("X-Pulse-Event-Id") for r in got].count(got[0].header("X-Pulse-Event-Id")) == 3


class TimedReceiver(FakeServer):
    def _handle(self, req: Recorded):
        req.headers["X-Arrived"] = str(time.monotonic())
        return super()._handle(req)


def test_429_retry_after_is_honoured(pulse_env, start_relay):
    receiver = TimedReceiver()
    try:
        receiver.fail_next(429, {"retry_after": 1.5}, headers={"Retry-After": "1.5"})
        start_relay("--sink", webhook(receiver))
        pulse(pulse_env, "create", "limited", "a")
        first, second = receiver.wait_for(2)
        waited = float(second.header("X-Arrived")) - float(first.header("X-Arrived"))
        assert waited >= 1.4  # a lower bound only: a slow machine only waits longer
    finally:
        receiver.stop()


def test_permanent_404_goes_to_dead_letters_and_redrives(pulse_env, start_relay, webhook_receiver):
    webhook_receiver.fail_next(404, times=1)
    relay = start_relay("--sink", webhook(webhook_receiver))
    task = pulse(pulse_env, "create", "lost", "a")
    webhook_receiver.wait_for(1)
    relay_cmd = [sys.executable, "-m", "workers", "--sink", webhook(webhook_receiver)]

    def dead() -> list[dict]:
        out = subprocess.run(
            [*relay_cmd, "--dead-letters", "--json"],
            env=pulse_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return [json.loads(line) for line in out.stdout.splitlines()]

    wait_until(dead)
    [letter] = dead()
    assert letter["event"]["task"]["taskId"] == task and "404" in letter["error"]
    assert SECRET not in letter["sink"]
    relay.terminate()
    assert relay.wait(timeout=10) == 0
    check = subprocess.run(
        [*relay_cmd, "--check"], env=pulse_env, capture_output=True, text=True, timeout=30
    )
    assert "dead_letters=1" in check.stdout
    redrive = subprocess.run(
        [*relay_cmd, "--redrive"], env=pulse_env, capture_output=True, text=True, timeout=30
    )
    assert redrive.returncode == 0 and "redriven 1" in redrive.stdout
    assert kinds(webhook_receiver.requests) == ["create", "create"] and dead() == []


def test_hostile_text_reaches_discord_safely(pulse_env, start_relay, fake_discord):
    start_relay("--sink", fake_discord.sink_url(), PULSE_DISCORD_API=fake_discord.url)
    task = pulse(pulse_env, "create", "x", "a", "b")
    pulse(pulse_env, "next", task, "@everyone <b>hi</b> " + "z" * 5000)
    got = fake_discord.wait_for(2)
    for req in got:
        assert req.json["allowed_mentions"] == {"parse": []}
        assert len(req.json["content"]) <= 2000


def test_relay_rides_out_a_redis_restart(pulse_env, start_relay, webhook_receiver):
    from tests.redis_proc import redis_proc

    with redis_proc(persist=True) as server:
        env = {**pulse_env, "PULSE_REDIS_URL": server.url}
        start_relay("--sink", webhook(webhook_receiver), PULSE_REDIS_URL=server.url)
        task = pulse(env, "create", "through", "a", "b", "c")
        webhook_receiver.wait_for(1)
        server.restart()  # the relay's connection breaks; it reconnects with backoff
        pulse(env, "next", task, "after restart")
        server.kill()  # and once more, harder, with the AOF fsynced on every write
        server.start()
        pulse(env, "next", task, "after kill")
        wait_until(
            lambda: len({r.header("X-Pulse-Event-Id") for r in webhook_receiver.requests}) >= 3,
            timeout=30,
        )
        # at least once: a push whose ack the restart cut off may come twice, never out of order
        versions = [r.json["task"]["version"] for r in webhook_receiver.requests]
        assert sorted(set(versions)) == [1, 2, 3] and versions == sorted(versions)


class SlowTimedReceiver(TimedReceiver):
    def answer(self, req: Recorded):
        time.sleep(1.5)
        return super().answer(req)


def arrived(req: Recorded) -> float:
    return float(req.header("X-Arrived"))


def test_a_slow_sink_does_not_hold_up_a_fast_one(pulse_env, start_relay):
    slow, fast = SlowTimedReceiver(), TimedReceiver()
    try:
        start_relay("--sink", webhook(slow), "--sink", webhook(fast))
        task = pulse(pulse_env, "create", "paced", "a", "b", "c", "d")
        for step in ("a", "b", "c"):
            pulse(pulse_env, "next", task, f"{step} done")
        got = fast.wait_for(4)
        assert kinds(got) == ["create", "next", "next", "next"]
        assert [r.json["task"]["version"] for r in got] == [1, 2, 3, 4]
        slowly = slow.wait_for(4, timeout=20)
        # the fast sink had the whole task before the slow one answered its first push
        assert arrived(got[3]) < arrived(slowly[1])
        assert [r.json["task"]["version"] for r in slowly] == [1, 2, 3, 4]
    finally:
        slow.stop()
        fast.stop()


def test_a_broken_sink_does_not_hold_up_the_others(pulse_env, start_relay, redis_client):
    broken, healthy = TimedReceiver(), TimedReceiver()
    broken.fail_next(500, times=1000)
    try:
        task = pulse(pulse_env, "create", "half", "a", "b", "c", "d")
        for step in ("a", "b", "c"):
            pulse(pulse_env, "next", task, f"{step} done")
        start_relay(
            "--sink",
            webhook(broken),
            "--sink",
            webhook(healthy),
            "--tries",
            "3",
            "--backoff",
            "0.2",
        )
        got = healthy.wait_for(4)
        assert [r.json["task"]["version"] for r in got] == [1, 2, 3, 4]
        # all four arrived before the broken sink was done retrying the third push
        tried = broken.wait_for(9, timeout=20)
        assert arrived(got[3]) < arrived(tried[8])
        dead = "pulse:{test}:dead"
        wait_until(lambda: redis_client.xlen(dead) == 4, timeout=20)
        letters = [fields for _, fields in redis_client.xrange(dead)]
        assert [json.loads(f["task"])["version"] for f in letters] == [1, 2, 3, 4]
        assert {f["sink"] for f in letters} == {f"webhook+{broken.url}/hook?secret=***"}
        assert len(broken.requests) == 12 and len(healthy.requests) == 4  # 3 tries each
    finally:
        broken.stop()
        healthy.stop()


def test_relay_carries_on_after_redis_lost_everything(
    pulse_env, start_relay, webhook_receiver, redis_client
):
    start_relay("--sink", webhook(webhook_receiver))
    pulse(pulse_env, "create", "before", "a")
    webhook_receiver.wait_for(1)
    redis_client.flushall()  # the stream and its consumer group are gone: NOGROUP
    pulse(pulse_env, "create", "after", "a")
    got = webhook_receiver.wait_for(2, timeout=30)
    assert [r.json["task"]["taskName"] for r in got][-1] == "after"


def test_a_sink_added_later_starts_where_the_others_are(pulse_env, start_relay, tmp_path):
    first, added = tmp_path / "first.jsonl", tmp_path / "added.jsonl"

    def pushed(path: Path) -> list[str]:
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line)["kind"] for line in lines]

    relay = start_relay("--sink", f"jsonl://{first}")
    task = pulse(pulse_env, "create", "grows", "a", "b")
    wait_until(lambda: pushed(first) == ["create"])
    relay.terminate()
    assert relay.wait(timeout=10) == 0
    pulse(pulse_env, "next", task)  # while no relay runs: the first sink has not read it yet
    start_relay("--sink", f"jsonl://{first}", "--sink", f"jsonl://{added}")
    pulse(pulse_env, "done", task)
    wait_until(lambda: pushed(first) == ["create", "next", "done"])
    wait_until(lambda: pushed(added) == ["next", "done"])  # not the whole history

    def check(*sinks: Path) -> dict:
        args = [a for path in sinks for a in ("--sink", f"jsonl://{path}")]
        out = subprocess.run(
            [sys.executable, "-m", "workers", "--check", "--json", *args],
            env=pulse_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return json.loads(out.stdout)

    # one line per sink; with sinks given, only theirs (a sink taken out keeps its group)
    everyone = sorted(check()["sinks"])
    assert [name.rpartition("/")[2] for name in everyone] == ["added.jsonl", "first.jsonl"]
    assert list(check(first)["sinks"]) == everyone[1:]
