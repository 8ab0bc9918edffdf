"""What every benchmark shares: a private redis-server, and figures as medians and ratios.

Each script starts its own redis-server (the one ``pulse.embedded.find_redis_server()`` finds)
on a unix socket in a temp dir, with no persistence, and stops it when done. Times are only
ever judged as ratios against a floor measured in the same run on the same server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pulse.embedded import find_redis_server

PIN_MODES = ("split", "same", "none")


@dataclass(frozen=True)
class Server:
    url: str  # unix://<socket>
    socket: str
    work: Path  # the temp dir; scripts put their own files (mirror, task files) under it


def _pin(server_pid: int, mode: str) -> str:
    """Pin the server and this process (and so its children) to CPUs.

    On a small VM, where the two land changes round-trip times by 2x from one second to the
    next (a wake-up on another CPU costs more than one on the same CPU); pinning keeps every
    round of a run on the same footing. split: server on the last CPU, the bench on the rest.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if mode == "none" or len(cpus) < 2:
        return "not pinned"
    server_cpus, own = ({cpus[-1]}, set(cpus[:-1])) if mode == "split" else ({cpus[0]}, {cpus[0]})
    os.sched_setaffinity(server_pid, server_cpus)
    os.sched_setaffinity(0, own)
    return f"redis-server on cpu {sorted(server_cpus)}, bench on cpu {sorted(own)}"


def _answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(path)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(pin: str = "split") -> Iterator[Server]:
    """A redis-server of our own: unix socket only, ``--save "" --appendonly no``."""
    binary = find_redis_server()
    # /tmp, not $TMPDIR: a long temp path would not fit a unix socket address
    base = "/tmp" if os.path.isdir("/tmp") else None
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-", dir=base))
    path, log = str(work / "redis.sock"), str(work / "redis.log")
    args = [binary, "--port", "0", "--unixsocket", path, "--unixsocketperm", "700"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(work), "--logfile", log]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _answers(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"redis-server did not start (exit {proc.poll()}); see {log}")
            time.sleep(0.01)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        print(f"# redis-server: {binary} ({version.split()[2]}), unix socket, no persistence")
        print(f"# python {sys.version.split()[0]} on {os.cpu_count()} cpus; {_pin(proc.pid, pin)}")
        yield Server(url=f"unix://{path}", socket=path, work=work)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def add_pin_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--pin", choices=PIN_MODES, default="split", help="CPU placement (default: split)"
    )


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def ratio_line(label: str, value: float, floor: float, target: str = "") -> str:
    """``label  1.23x  (target <= 2.0: met)``; ``target`` is ``>= x``, ``<= x`` or none."""
    r = value / floor
    if not target:
        return f"{label:<40} {r:6.2f}x"
    op, bound = target.split()
    met = r >= float(bound) if op == ">=" else r <= float(bound)
    return f"{label:<40} {r:6.2f}x  (target {op} {bound}: {'met' if met else 'MISSED'})"
