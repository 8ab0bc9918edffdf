"""Every error the library raises on purpose; the CLI turns each into one stderr line.

Each class has a ``code`` (stable, for programs: the HTTP API's JSON and ``--json`` errors)
and an ``exit_code`` (what the CLI exits with). The Lua scripts fail with replies of the form
``PULSE_<CODE> <text>``; ``reply_code`` reads the code whatever a server puts before it
(Redis 7 and Valkey prefix a one-word error reply from Lua with ``ERR ``).
"""

from __future__ import annotations


class PulseError(Exception):
    """Root of pulse's errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1
    code = "error"


class BadValue(PulseError):
    """A name, id, message or option value that is refused before anything changes."""

    code = "bad_value"


class TaskNotFound(PulseError):
    """No task has this id, and no task id starts with it."""

    code = "not_found"


class AmbiguousId(PulseError):
    """A prefix that matches several task ids; the message names them."""

    code = "ambiguous"


class TaskExists(BadValue):
    """A task with this id exists already (a journaled create replayed twice)."""

    code = "exists"


class TaskFinished(PulseError):
    """The task is done or failed already, so it cannot be updated."""

    code = "finished"


class VersionMismatch(PulseError):
    """A replayed update does not follow the version Redis holds (``current``)."""

    code = "version"

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


class StepConflict(PulseError):
    """An update made for one step (offline) while another step runs, or none: applying it
    would put its message on a step it was not meant for. ``running``: the running step's
    1-based index, 0 if none."""

    code = "conflict"

    def __init__(self, message: str, running: int = 0) -> None:
        super().__init__(message)
        self.running = running


class AlreadyApplied(PulseError):
    """A replayed update whose operation id the task has applied before (at ``version``);
    for a create, ``task_id`` names the task it made."""

    code = "applied"

    def __init__(self, message: str, version: int, task_id: str = "") -> None:
        super().__init__(message)
        self.version = version
        self.task_id = task_id


class BackendUnavailable(PulseError):
    """Redis cannot be reached right now (no connection, a timeout, a server or cluster in
    transition). Transient: an update meeting it is kept in the offline journal."""

    exit_code = 3
    code = "unavailable"


class BackendRefused(PulseError):
    """Redis answers but refuses us: a URL that does not parse, a wrong or missing password,
    a database out of range, no permission. Permanent: nothing is journaled."""

    exit_code = 3
    code = "refused"


class BackendError(PulseError):
    """Redis answered with an error we did not expect."""

    exit_code = 3
    code = "backend"


class BackendReply(BackendError):
    """An error reply from Redis, read by ``pulse.connection.redis_errors`` for the workers:
    ``reply`` is its code (``NOGROUP``, or a script's ``PULSE_<CODE>``), whatever a server
    put before it."""

    def __init__(self, message: str, reply: str) -> None:
        super().__init__(message)
        self.reply = reply


def reply_code(text: str) -> tuple[str, str]:
    """``(code, rest)`` of a server's error reply: ``"ERR PULSE_VERSION 3"`` and
    ``"PULSE_VERSION 3"`` both give ``("PULSE_VERSION", "3")``; ``"NOSCRIPT No matching"``
    gives ``("NOSCRIPT", "No matching")``."""
    code, _, rest = text.partition(" ")
    if code == "ERR" and rest.startswith("PULSE_"):
        code, _, rest = rest.partition(" ")
    return code, rest
