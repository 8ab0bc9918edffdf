"""``pulse-relay`` as operators run it: --check's verdict, --version, metrics, several
namespaces from one process, a bad setting."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from pulse.client import Client
from pulse.settings import Settings
from tests.workers.conftest import Receiver, wait_until

RELAY = [sys.executable, "-m", "pulse_workers"]


def relay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RELAY, *args], env=env, capture_output=True, text=True, timeout=30)


def test_check_fails_without_an_active_relay_or_over_max_lag(pulse_env, relays, tmp_path):
    sink = f"jsonl://{tmp_path / 'p.jsonl'}"
    idle = relay(pulse_env, "--check", "--sink", sink)
    assert idle.returncode == 1 and "active=none" in idle.stdout
    proc = relays.start("--sink", sink, name="a")
    relays.wait_active()
    assert relay(pulse_env, "--check", "--sink", sink).returncode == 0
    proc.kill()
    proc.wait()
    with Client(Settings.from_env(pulse_env)) as c:  # made while nobody relays
        c.create("late", ["x"])
        c.create("later", ["x"])
    relays.client.delete("pulse:{test}:relay:relay")  # as if its lease had lapsed already
    relays.start("--sink", sink, name="b", lease="30")
    wait_until(lambda: relays.active() == "b")
    wait_until(
        lambda: relay(pulse_env, "--check", "--sink", sink, "--max-lag", "0").returncode == 0
    )
    proc_b = relays.procs["b"]
    proc_b.kill()
    proc_b.wait()
    with Client(Settings.from_env(pulse_env)) as c:
        c.create("behind", ["x"])
    # b's lease (30 s) still stands: active, but one entry behind
    done = relay(pulse_env, "--check", "--json", "--sink", sink, "--max-lag", "0")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["ok"] is False
    [ns] = report["namespaces"]
    assert ns["active"] == "b" and [b.rpartition("/")[2] for b in ns["behind"]] == ["p.jsonl"]
    assert relay(pulse_env, "--check", "--sink", sink, "--max-lag", "1").returncode == 0


def test_version_and_a_bad_setting(pulse_env):
    done = relay(pulse_env, "--version")
    assert done.returncode == 0 and done.stdout.startswith("pulse-relay, version ")
    bad = relay({**pulse_env, "PULSE_RELAY_LEASE_SECONDS": "soon"}, "--sink", "console://")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "PULSE_RELAY_LEASE_SECONDS" in bad.stderr and "Traceback" not in bad.stderr


def test_metrics_and_several_namespaces_from_one_process(pulse_env, relays, free_port):
    receiver = Receiver()
    port = free_port
    try:
        relays.start(
            "--sink", f"webhook+{receiver.url}/hook", "--namespace", "test", "--namespace", "two",
            name="a", PULSE_METRICS_PORT=str(port),
        )  # fmt: skip
        relays.wait_active(namespace="test")
        relays.wait_active(namespace="two")
        for ns in ("test", "two"):
            with Client(Settings.from_env({**pulse_env, "PULSE_NAMESPACE": ns})) as c:
                c.create(f"job in {ns}", ["x"])
        wait_until(lambda: len(receiver.delivered) == 2)
        assert sorted(d["task"].split("-")[0] for d in receiver.delivered) == [
            "job_in_test",
            "job_in_two",
        ]

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()

        sink = f"webhook+{receiver.url}/hook"
        labels = f'kind="create",namespace="two",outcome="delivered",sink="{sink}"'
        wait_until(lambda: f"pulse_pushes_total{{{labels}}} 1.0" in scrape())
        text = scrape()
        for line in (
            'pulse_relay_active{namespace="test"} 1.0',
            'pulse_relay_active{namespace="two"} 1.0',
            f'pulse_push_seconds_count{{namespace="test",sink="{sink}"}} 1.0',
            f'pulse_lag{{namespace="test",sink="{sink}"}}',
            f'pulse_dead_letters{{namespace="test",sink="{sink}"}} 0.0',
        ):
            assert line in text, line
    finally:
        receiver.stop()
