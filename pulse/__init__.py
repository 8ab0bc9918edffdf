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
    from .connection import redis_client, redis_errors  # noqa: F401
    from .events import (  # noqa: F401
        Entries,
        Event,
        Feed,
        entry_order,
        group_positions,
        mark_stalled,
        parse_entries,
    )
    from .keys import Keys  # noqa: F401
    from .mirror import Mirror  # noqa: F401
    from .render import clean as clean_text  # noqa: F401
    from .render import render_card, render_push  # noqa: F401
    from .scripts import Script  # noqa: F401
    from .settings import Settings, check_namespace  # noqa: F401

__version__ = "0.1.0"
__all__ = [
    "PulseError",
    "connect",
    "__version__",
    # for the workers (pulse_workers), loaded on first use: the CLI never pays for them
    "Entries",
    "Event",
    "Feed",
    "Keys",
    "Mirror",
    "Script",
    "Settings",
    "check_namespace",
    "clean_text",
    "entry_order",
    "group_positions",
    "mark_stalled",
    "parse_entries",
    "redis_client",
    "redis_errors",
    "render_card",
    "render_push",
]

# name -> module it lives in (relative): what the workers may use of the library
_LAZY = {
    "Entries": "events",
    "Event": "events",
    "Feed": "events",
    "entry_order": "events",
    "group_positions": "events",
    "mark_stalled": "events",
    "parse_entries": "events",
    "Keys": "keys",
    "Mirror": "mirror",
    "Script": "scripts",
    "Settings": "settings",
    "check_namespace": "settings",
    "redis_client": "connection",
    "redis_errors": "connection",
    "clean_text": "render",
    "render_card": "render",
    "render_push": "render",
}


_RENAMED = {"clean_text": "clean"}  # a clearer name outside its module


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pulse' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), _RENAMED.get(name, name))
    globals()[name] = value
    return value


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
