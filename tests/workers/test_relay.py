"""The relay as a real process, against a real redis-server and loopback chat fakes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.workers.conftest import SECRET, FakeServer, Recorded, Relays, wait_until, webhook


def pulse(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pulse", *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def start_relay(relays: Relays) -> Callable[..., subprocess.Popen]:
    """Starts a relay and waits until it is active with its sinks' groups made (a new group
    starts at the end of the stream: events before that are not its to push)."""

    def start(*args: str, name: str = "r1", wait: bool = True, **env: str) -> subprocess.Popen:
        proc = relays.start(*args, name=name, **env)
        if wait and not relays.active():
            relays.wait_active(sinks=args.count("--sink") or 1)
        return proc

    return start


def kinds(requests: list[Recorded]) -> list[str]:
    return [r.json["event"]["kind"] for r in requests]


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
        start_relay("--sink", webhook(receiver), name="second", wait=False)
        events = [e for e, _ in redis_client.xrange("pulse:{test}:events")]
        wait_until(lambda: {r.header("X-Pulse-Event-Id") for r in receiver.requests} >= set(events))
        counts = Counter(r.header("X-Pulse-Event-Id") for r in receiver.requests)
        duplicates = sum(n - 1 for n in counts.values())
        print(f"events {len(events)}, pushes {len(receiver.requests)}, duplicates {duplicates}")
        assert set(counts) == set(events)  # every event pushed, none made up
        # at most the pushes in hand (one per task)
        assert duplicates <= len(ids)
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
    relay_cmd = [sys.executable, "-m", "pulse_workers", "--sink", webhook(webhook_receiver)]

    def dead() -> list[dict]:
        out = subprocess.run(
            [*relay_cmd, "--dead-letters", "--json"],
            env=pulse_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        doc = json.loads(out.stdout)  # one JSON document
        assert doc["count"] == len(doc["dead_letters"])
        return doc["dead_letters"]

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
    assert check.returncode == 1  # no relay holds the lease now
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
        import redis

        start_relay("--sink", webhook(webhook_receiver), PULSE_REDIS_URL=server.url, wait=False)
        with redis.Redis.from_url(server.url) as there:
            wait_until(lambda: there.exists("pulse:{test}:events"))  # active, its group made
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


class GatedReceiver(TimedReceiver):
    """Holds every answer until the test opens ``gate``: a sink as slow as the test needs, with
    no sleep to outlast on a loaded machine."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def answer(self, req: Recorded):
        self.gate.wait(timeout=60)
        return super().answer(req)

    def stop(self) -> None:
        self.gate.set()
        super().stop()


def test_a_slow_sink_does_not_hold_up_a_fast_one(pulse_env, start_relay):
    slow, fast = GatedReceiver(), TimedReceiver()
    try:
        start_relay("--sink", webhook(slow), "--sink", webhook(fast))
        task = pulse(pulse_env, "create", "paced", "a", "b", "c", "d")
        for step in ("a", "b", "c"):
            pulse(pulse_env, "next", task, f"{step} done")
        # the fast sink gets the whole task while the slow one has not answered its first push
        got = fast.wait_for(4)
        assert kinds(got) == ["create", "next", "next", "next"]
        assert [r.json["task"]["version"] for r in got] == [1, 2, 3, 4]
        slow.gate.set()
        slowly = slow.wait_for(4, timeout=20)
        assert [r.json["task"]["version"] for r in slowly] == [1, 2, 3, 4]
    finally:
        slow.stop()
        fast.stop()


def test_a_broken_sink_does_not_hold_up_the_others(pulse_env, start_relay, redis_client):
    broken, healthy = GatedReceiver(), TimedReceiver()
    broken.fail_next(500, times=1000)
    try:
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
        task = pulse(pulse_env, "create", "half", "a", "b", "c", "d")
        for step in ("a", "b", "c"):
            pulse(pulse_env, "next", task, f"{step} done")
        # all four arrive while the broken sink has not even failed its first try
        got = healthy.wait_for(4)
        assert [r.json["task"]["version"] for r in got] == [1, 2, 3, 4]
        broken.gate.set()
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
    redis_client.flushall()  # the stream, its consumer group and the lease are gone
    wait_until(lambda: redis_client.exists("pulse:{test}:relay:relay"))  # it holds it again
    wait_until(lambda: redis_client.exists("pulse:{test}:events"))  # and made its group
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
    start_relay("--sink", f"jsonl://{first}", "--sink", f"jsonl://{added}", name="r2", wait=False)
    wait_until(lambda: pushed(first) == ["create", "next"])  # its group goes on where it was
    pulse(pulse_env, "done", task)
    wait_until(lambda: pushed(first) == ["create", "next", "done"])
    wait_until(lambda: pushed(added) == ["done"])  # from its first start on, no history

    def check(*sinks: Path) -> dict:
        args = [a for path in sinks for a in ("--sink", f"jsonl://{path}")]
        out = subprocess.run(
            [sys.executable, "-m", "pulse_workers", "--check", "--json", *args],
            env=pulse_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return json.loads(out.stdout)

    # one entry per sink; with sinks given, only theirs (a sink taken out keeps its group)
    everyone = sorted(check()["namespaces"][0]["sinks"])
    assert [name.rpartition("/")[2] for name in everyone] == ["added.jsonl", "first.jsonl"]
    assert list(check(first)["namespaces"][0]["sinks"]) == everyone[1:]


def test_telegram_keeps_a_card_per_task_and_coalesces_edits(
    pulse_env, pulse_api, start_relay, fake_telegram
):
    start_relay(
        "--sink", fake_telegram.sink_url(), PULSE_TELEGRAM_API=fake_telegram.url, PULSE_LANG="en"
    )
    steps = [f"s{i}" for i in range(12)]
    # through the library, not 12 CLI processes: far faster than the chat's pace of one
    # message a second, even on a loaded machine
    task = pulse_api.create("big deploy", steps).id
    for i in range(11):
        pulse_api.next(task, f"s{i} ok")
    pulse_api.done(task, "shipped")

    def finished() -> bool:
        return any("Finished" in t for t in fake_telegram.messages.values()) and any(
            "Result: shipped" in t and "12/12" in t for t in fake_telegram.messages.values()
        )

    wait_until(finished, timeout=30)
    calls = fake_telegram.calls
    sends = [p["text"] for m, p in calls if m == "sendMessage"]
    assert sends[0].startswith("🚀 Started [big deploy]") and sends[-1].startswith("🎉")
    assert len(sends) == 3  # start, the card, done: the chat is notified of each
    card = fake_telegram.messages[("-100777", 2)]
    assert card.splitlines()[0] == "✅ big deploy" and "██████████ 12/12" in card
    edits = [m for m, _ in calls if m == "editMessageText"]
    assert len(edits) < 11  # the edits the pace held back gave way to the newest state


def test_a_bad_entry_is_parked_and_the_relay_goes_on(
    pulse_env, start_relay, webhook_receiver, redis_client
):
    relay = start_relay("--sink", webhook(webhook_receiver))
    events = "pulse:{test}:events"
    redis_client.xadd(events, {"kind": "next", "task": "{not json"})
    odd = {"taskId": "odd-1", "version": 1, "status": "running", "steps": []}
    redis_client.xadd(events, {"kind": "teleport", "task": json.dumps(odd)})  # no such kind
    task = pulse(pulse_env, "create", "after", "a")
    got = webhook_receiver.wait_for(1)
    assert got[0].json["task"]["taskId"] == task and relay.poll() is None
    cmd = [sys.executable, "-m", "pulse_workers", "--sink", webhook(webhook_receiver)]
    listed = subprocess.run([*cmd, "--dead-letters", "--json"], env=pulse_env, capture_output=True)
    letters = json.loads(listed.stdout)["dead_letters"]
    assert len(letters) == 2 and "does not parse" in letters[0]["error"]
    assert letters[1]["event"]["kind"] == "teleport"
    check = subprocess.run([*cmd, "--check"], env=pulse_env, capture_output=True, text=True)
    assert "dead_letters=2" in check.stdout and check.returncode == 0
