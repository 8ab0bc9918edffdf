"""With PULSE_REDIS_URL unset the CLI runs on the user's embedded Redis: started by the first
call, shared by the later ones, and keeping its data across `pulse server stop`."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def env(pulse_env, embedded_server) -> dict[str, str]:
    """pulse_env without PULSE_REDIS_URL; embedded_server stops the server at teardown."""
    return {k: v for k, v in pulse_env.items() if k != "PULSE_REDIS_URL"}


@pytest.fixture
def pulse(run_pulse, env):
    def call(*args: str) -> str:
        done = run_pulse(env, *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout

    return call


def server_status(pulse) -> dict:
    return json.loads(pulse("server", "status", "--json"))


def test_the_first_call_starts_the_server_and_later_calls_share_it(
    pulse, embedded_server, redis_client
):
    assert server_status(pulse)["running"] is False
    assert not embedded_server.is_running()

    task_id = pulse("create", "offline", "fetch", "parse").strip()

    first = server_status(pulse)
    assert first["running"] is True
    assert first["url"] == embedded_server.url
    assert pulse("next", task_id, "fetched") == "[1/2] █████░░░░░ → parse\n"
    assert pulse("status").splitlines()[-1] == "1 task: 1 running, 0 done, 0 error, 0 stalled"
    assert server_status(pulse)["pid"] == first["pid"]
    assert embedded_server.status()["pid"] == first["pid"]
    assert f"(pid {first['pid']}," in pulse("server", "status")
    assert redis_client.keys("*") == []  # nothing went to the test suite's own Redis


def test_data_survives_stopping_the_server(pulse, embedded_server):
    task_id = pulse("create", "durable", "a", "b", "c").strip()
    pulse("next", task_id, "one")
    before = pulse("status", task_id, "--json")

    assert pulse("server", "stop") == "embedded Redis stopped\n"
    assert not embedded_server.is_running()
    assert server_status(pulse)["running"] is False
    assert pulse("server", "stop") == "embedded Redis was not running\n"
    assert json.loads(pulse("server", "stop", "--json")) == {"stopped": False}

    assert pulse("status", task_id, "--json") == before  # restarts the server
    assert server_status(pulse)["running"] is True
    assert pulse("next", task_id, "two") == "[2/3] ██████░░░░ → c\n"
    assert json.loads(pulse("status", task_id, "--json"))["version"] == 3


def test_a_folder_valkey_wrote_is_refused_to_redis_6_in_one_line_and_nothing_is_lost(
    run_pulse, env, embedded_server, two_builds
):
    redis6, valkey = two_builds
    on_valkey = {**env, "PULSE_REDIS_SERVER": valkey}
    on_redis6 = {**env, "PULSE_REDIS_SERVER": redis6}
    done = run_pulse(on_valkey, "create", "moved", "a", "b")
    task_id = done.stdout.strip()
    assert run_pulse(on_valkey, "server", "stop").returncode == 0

    refused = run_pulse(on_redis6, "status", task_id)
    assert refused.returncode == 3 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "written by valkey 8." in refused.stderr
    assert "Traceback" not in refused.stderr and "BackendUnavailable" not in refused.stderr
    kept = run_pulse(on_redis6, "next", task_id, "done a")  # journaled, not lost
    assert kept.returncode == 0 and kept.stderr.count("\n") == 1, kept.stderr
    assert not embedded_server.is_running()

    assert run_pulse(on_valkey, "sync").returncode == 0
    status = json.loads(run_pulse(on_valkey, "status", task_id, "--json").stdout)
    assert status["version"] == 2 and status["steps"][0]["message"] == "done a"
