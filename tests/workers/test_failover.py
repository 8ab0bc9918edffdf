"""Several relays as separate processes, one webhook receiver on loopback: whatever happens to
the active relay (killed, frozen past its lease), every step change arrives, in version order
per task, and nothing arrives twice beyond the pushes in hand."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from pulse.client import Client
from pulse.settings import Settings
from tests.workers.conftest import Receiver, Relays, audit, wait_until

TASKS = 8


class Writer(threading.Thread):
    """``TASKS`` tasks of 6 steps, each step with two heartbeats, at about ``rate`` events/s."""

    def __init__(self, env: dict[str, str], rate: float = 100.0) -> None:
        super().__init__(daemon=True)
        self.client = Client(Settings.from_env(env))
        self.rate = rate
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            c, pause = self.client, 1 / self.rate
            ids = [c.create(f"job{i}", [f"s{k}" for k in range(6)]).id for i in range(TASKS)]
            for k in range(6):
                for beat in range(2):
                    for task in ids:
                        c.heartbeat(task, f"s{k} beat {beat}")
                        time.sleep(pause)
                for task in ids:
                    (c.next if k < 5 else c.done)(task, f"s{k} ok")
                    time.sleep(pause)
        except BaseException as e:  # reported by finish()
            self.error = e

    def finish(self) -> None:
        self.join(60)
        self.client.close()
        assert self.error is None, self.error


@pytest.fixture
def stream(redis_client):
    return lambda: redis_client.xrange("pulse:{test}:events")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def start_three(relays: Relays, sink: str) -> str:
    for name in ("a", "b", "c"):
        relays.start("--sink", sink, name=name)
    return relays.wait_active()


def settle(receiver: Receiver, stream) -> dict[str, int]:
    wait_until(lambda: audit(stream(), receiver.delivered)["lost"] == 0, timeout=30)
    time.sleep(0.5)  # anything still coming would show as a duplicate
    return audit(stream(), receiver.delivered)


def test_sigkill_of_the_active_relay(pulse_env, relays, receiver, stream):
    first = start_three(relays, f"webhook+{receiver.url}/hook")
    writer = Writer(pulse_env)
    writer.start()
    time.sleep(1.0)
    relays.procs[first].kill()
    killed_at = time.monotonic()
    wait_until(lambda: relays.active() not in (None, first), timeout=5)
    took = time.monotonic() - killed_at
    writer.finish()
    got = settle(receiver, stream)
    print(f"takeover {took:.2f}s, {got}")
    assert took < 1.0 + 0.5  # the lease (1 s) plus a standby's poll, with room for a slow box
    assert got["lost"] == 0 and got["backwards"] == 0 and got["made_up"] == 0
    assert got["duplicates"] <= TASKS  # at most the push in hand of each task


def test_sigstop_past_the_lease_then_sigcont(pulse_env, relays, receiver, stream):
    first = start_three(relays, f"webhook+{receiver.url}/hook")
    writer = Writer(pulse_env)
    writer.start()
    time.sleep(1.0)
    relays.procs[first].send_signal(signal.SIGSTOP)
    wait_until(lambda: relays.active() not in (None, first), timeout=5)
    time.sleep(0.5)
    relays.procs[first].send_signal(signal.SIGCONT)  # wakes up believing it pushes
    writer.finish()
    got = settle(receiver, stream)
    print(got)
    assert got["lost"] == 0 and got["made_up"] == 0
    assert relays.procs[first].poll() is None  # it stands by again, it did not crash
    assert relays.active() != first
    # The one window: a push the frozen relay had in hand arrives late. It is always one the
    # new relay had sent already (its ack was refused), so a receiver keeping the highest
    # version per task drops it.
    seen: set[str] = set()
    highest: dict[str, int] = {}
    late = 0
    for d in receiver.delivered:
        if d["version"] < highest.get(d["task"], 0):
            late += 1
            assert d["id"] in seen
        seen.add(d["id"])
        highest[d["task"]] = max(highest.get(d["task"], 0), d["version"])
    assert late <= TASKS and got["duplicates"] <= 2 * TASKS


def test_flaky_sink_under_two_relays(pulse_env, relays, stream):
    flaky = Receiver(fail_every=3)
    try:
        relays.start("--sink", f"webhook+{flaky.url}/hook", name="a")
        relays.start("--sink", f"webhook+{flaky.url}/hook", name="b")
        relays.wait_active()
        writer = Writer(pulse_env)
        writer.start()
        writer.finish()
        got = settle(flaky, stream)
        print(f"{flaky.count} POSTs, {got}")
        assert got == {"lost": 0, "backwards": 0, "duplicates": 0, "made_up": 0}
        assert flaky.count > len(flaky.delivered)  # failures did happen, and were retried
    finally:
        flaky.stop()


def test_a_new_group_starts_at_the_end_of_the_stream(pulse_env, relays, receiver, stream):
    client = Client(Settings.from_env(pulse_env))
    try:
        old = client.create("old", ["a", "b", "c"]).id
        client.next(old, "before the relay")
        client.create("stalled-long-ago", ["x"], stall=1)
        relays.start("--sink", f"webhook+{receiver.url}/hook", "--group", "fresh", name="a")
        wait_until(lambda: relays.active(group="fresh") == "a")
        wait_until(lambda: len(relays.client.xinfo_groups("pulse:{test}:events")) == 1)
        check = [sys.executable, "-m", "pulse_workers", "--group", "fresh", "--check", "--json"]
        check += ["--sink", f"webhook+{receiver.url}/hook"]
        done = subprocess.run(check, env=pulse_env, capture_output=True, text=True, timeout=30)
        report = json.loads(done.stdout)
        assert done.returncode == 0, done.stderr
        [ns] = report["namespaces"]
        [lag] = ns["sinks"].values()
        assert lag["undelivered"] == 0 and lag["pending"] == 0 and ns["active"] == "a"
        client.next(old, "after")
        wait_until(lambda: any(d["task"] == old for d in receiver.delivered))
        time.sleep(1.5)  # the old stalled task gets its alert now, once: that is news
        kinds = [(d["task"], d["kind"]) for d in receiver.delivered]
        assert (old, "next") in kinds and (old, "create") not in kinds
        assert [k for _, k in kinds].count("create") == 0
        assert len([d for d in receiver.delivered if d["task"] == old]) == 1
    finally:
        client.close()
