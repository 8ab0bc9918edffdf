"""Every error the library raises on purpose; the CLI turns each into one stderr line."""

from __future__ import annotations


class PulseError(Exception):
    """Root of pulse's errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class BadValue(PulseError):
    """A name, id, message or option value that is refused before anything changes."""


class TaskNotFound(PulseError):
    """No task has this id, and no task id starts with it."""


class AmbiguousId(PulseError):
    """A prefix that matches several task ids; the message names them."""


class TaskExists(BadValue):
    """A task with this id exists already (a journaled create replayed twice)."""


class TaskFinished(PulseError):
    """The task is done or failed already, so it cannot be updated."""


class VersionMismatch(PulseError):
    """A replayed update does not follow the version Redis holds (``current``)."""

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


class BackendUnavailable(PulseError):
    """Redis cannot be reached (or refused us) and the update could not be kept."""

    exit_code = 3


class BackendError(PulseError):
    """Redis answered with an error we did not expect."""

    exit_code = 3
