"""A redis-server a test owns: it can stop it, kill -9 it and start it again on the same socket.

The fault tests (test_faults, test_acl, test_mirror_worker) use it instead of the session server,
which every other test shares and which must never go away.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def answers(path: str) -> bool:
    """Whether a redis-server answers PING on this unix socket (NOAUTH counts: it is up)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(path)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisProc:
    """redis-server on a unix socket in ``workdir``. ``persist``: an AOF fsynced on every write,
    so a stop and start keeps the data; without it a restart comes back empty."""

    def __init__(self, binary: str, workdir: Path, *, persist: bool = False) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return str(self.workdir / "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        args = [self.binary, "--port", "0", "--unixsocket", self.socket, "--save", ""]
        args += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persist
            else [
                "--appendonly",
                "no",
            ]
        )
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not answers(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly (and fsyncs its AOF when it has one)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: gone at once, its socket file left behind."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    @contextmanager
    def unreachable(self) -> Iterator[None]:
        """The server keeps running and its data, but its URL reaches nothing: the socket file
        is moved aside (as a network outage between a host and its Redis looks)."""
        aside = self.socket + ".away"
        os.rename(self.socket, aside)
        try:
            yield
        finally:
            os.rename(aside, self.socket)

    def client(self, **kwargs: object):
        import redis

        return redis.Redis(unix_socket_path=self.socket, decode_responses=True, **kwargs)


@contextmanager
def redis_proc(*, persist: bool = False) -> Iterator[RedisProc]:
    from pulse.embedded import find_redis_server

    # under /tmp, not the pytest tmp dir: its paths can be too long for a unix socket address
    workdir = Path(tempfile.mkdtemp(prefix="pulse-fault-", dir="/tmp"))
    server = RedisProc(find_redis_server(), workdir, persist=persist)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
