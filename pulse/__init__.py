"""live-task-pulse: track long multi-step work on Redis and push its progress to chat.

    import pulse
    client = pulse.connect()          # PULSE_REDIS_URL, or the embedded server
    with client.track("deploy", ["build", "test", "ship"]) as task:
        task.next("built in 40s")
        task.heartbeat("60%", progress=60)
        task.next()

Kept import-light: the CLI imports this package on every call.
"""

from __future__ import annotations

from .errors import PulseError

TYPE_CHECKING = False  # the typing module costs milliseconds: the CLI imports this package
if TYPE_CHECKING:
    from typing import Any

    from .client import Client

__version__ = "0.1.0"
__all__ = ["PulseError", "connect", "__version__"]


def connect(url: str | None = None, **settings: Any) -> Client:
    """A client for ``url`` (else PULSE_REDIS_URL, else the embedded server).

    Keyword arguments override fields of ``pulse.settings.Settings`` read from the environment,
    e.g. ``connect(namespace="ci", agent="builder")``. Its mirror files are written on a
    background thread (the newest snapshot of each task), so updates run at Redis's pace;
    ``client.flush_mirror()``, ``client.close()`` and the end of the process wait for them.
    """
    from .client import Client
    from .settings import Settings

    base = Settings.from_env()
    if url is not None:
        settings["redis_url"] = url
    return Client(base.replace(**settings), mirror_in_background=True)
