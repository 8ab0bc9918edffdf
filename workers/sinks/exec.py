"""``exec://?cmd=...``: run a command per push, e.g. an agent's own ``message send``."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from urllib.parse import parse_qsl, urlsplit

from pulse.errors import BadValue

from .base import Push, SinkError, redact

TIMEOUT = 30.0


class ExecSink:
    """Runs ``argv + [text]`` without a shell; the push JSON on stdin; env ``PULSE_EVENT_KIND``,
    ``PULSE_TASK_ID``, ``PULSE_EVENT_ID``. Exit 0 is success; any other exit is retryable.
    """

    def __init__(self, argv: list[str], *, name: str, timeout: float = TIMEOUT) -> None:
        self.argv = argv
        self.name = name
        self.timeout = timeout

    def send(self, push: Push) -> None:
        env = dict(os.environ)
        env.update(
            PULSE_EVENT_KIND=push.kind, PULSE_TASK_ID=push.task_id, PULSE_EVENT_ID=push.event_id
        )
        stdin = json.dumps(push.record(), ensure_ascii=False).encode()
        try:
            proc = subprocess.Popen(
                [*self.argv, push.text],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,  # the relay's own stdout is for its log
                stderr=subprocess.PIPE,
                env=env,
                # its own process group, so a timeout ends whatever the command started too
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
            reason = "command not found" if isinstance(e, FileNotFoundError) else e.strerror
            raise SinkError(f"{self.name}: {reason}: {self.argv[0]}", permanent=True) from None
        except OSError as e:
            raise SinkError(f"{self.name}: cannot start: {e.strerror}") from None
        try:
            _, err = proc.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise SinkError(f"{self.name}: no exit after {self.timeout:g}s; killed") from None
        if proc.returncode != 0:
            lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines()]
            last = next((line for line in reversed(lines) if line), "")[:300]
            raise SinkError(f"{self.name}: exit {proc.returncode}" + (f": {last}" if last else ""))

    def close(self) -> None:
        pass


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild left its own group and holds the pipe
        pass


def from_url(url: str) -> ExecSink:
    name = redact(url)
    parts = urlsplit(url.strip())
    options = dict(parse_qsl(parts.query))
    if parts.netloc or parts.path not in ("", "/") or "cmd" not in options:
        raise BadValue(f"sink {name}: expected exec://?cmd=COMMAND (URL-encoded)")
    try:
        argv = shlex.split(options.pop("cmd"))
        timeout = float(options.pop("timeout", TIMEOUT))
    except ValueError as e:
        raise BadValue(f"sink {name}: {e}") from None
    if not argv or options or timeout <= 0:
        raise BadValue(f"sink {name}: expected exec://?cmd=COMMAND[&timeout=SECONDS]")
    return ExecSink(argv, name=name, timeout=timeout)
