"""Where pulse's Redis is: PULSE_REDIS_URL, or the embedded server, started on first use."""

from __future__ import annotations

from .errors import BackendUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .settings import Settings
    from .transport import Connection

__all__ = ["open_connection", "redis_url"]


def open_connection(settings: Settings) -> Connection:
    """A connection to PULSE_REDIS_URL, or to the embedded server, started on first use."""
    from .transport import connect

    if settings.redis_url:
        return connect(settings.redis_url)
    from .embedded import EmbeddedServer

    server = EmbeddedServer()
    conn = connect(server.url)
    try:
        conn.connect()
    except BackendUnavailable:
        server.start()
        conn = connect(server.url)
    return conn


def redis_url(settings: Settings) -> str:
    """PULSE_REDIS_URL, or the embedded server's URL once it runs (for redis-py users)."""
    if settings.redis_url:
        return settings.redis_url
    from .embedded import EmbeddedServer

    server = EmbeddedServer()
    if not server.is_running():
        server.start()
    return server.url
