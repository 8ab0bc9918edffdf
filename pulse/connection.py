"""Where pulse's Redis is: PULSE_REDIS_URL, or the embedded server, started on first use."""

from __future__ import annotations

from .errors import BackendUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .settings import Settings
    from .transport import Connection

__all__ = ["open_connection", "redis_client", "redis_errors", "redis_url"]


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


def redis_client(settings: Settings, *, decode_responses: bool = True, timeout: float = 5.0) -> Any:
    """A redis-py client for long-lived processes (the workers, ``watch``, ``web``):
    ``redis.RedisCluster`` when the server says ``cluster_enabled:1``, else ``redis.Redis``.

    The per-step CLI never calls this (``import redis`` costs more than a whole update).
    Raises BackendRefused for a URL redis-py cannot read or a refused login, and
    BackendUnavailable when the server cannot be reached.
    """
    import redis
    from redis.exceptions import AuthenticationError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from .errors import BackendRefused
    from .transport import redacted_url

    url = redis_url(settings)
    options = {
        "decode_responses": decode_responses,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    try:
        client = redis.Redis.from_url(url, **options)
        cluster = bool(client.info("cluster").get("cluster_enabled"))
    except ValueError as e:
        raise BackendRefused(f"cannot use the Redis URL {redacted_url(url)}: {e}") from None
    except AuthenticationError as e:
        raise BackendRefused(f"Redis at {redacted_url(url)} refused the login: {e}") from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as e:
        raise BackendUnavailable(f"cannot reach Redis at {redacted_url(url)}: {e}") from None
    except ResponseError as e:
        # redis-py drops the code from NOPERM's text: put it back, it is what users search for
        code = "NOPERM " if type(e).__name__ == "NoPermissionError" else ""
        raise BackendRefused(f"Redis at {redacted_url(url)} refused us: {code}{e}") from None
    if not cluster:
        return client
    client.close()
    return redis.RedisCluster.from_url(url, **options)


_TRANSIENT = ("LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "BUSY")


class redis_errors:  # noqa: N801 - used as a ``with`` block, like contextlib's helpers
    """``with redis_errors(): ...``: every redis-py error raised inside leaves as a PulseError:
    BackendUnavailable (transient: connection, timeout, a server or cluster in transition),
    BackendRefused (login, NOPERM), else BackendReply with the reply's code (``NOGROUP``,
    a script's ``PULSE_<CODE>``). So the workers never read redis-py's classes or texts."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:  # never swallows: raises anew
        if error is None:
            return
        from redis.exceptions import (
            AuthenticationError,
            NoPermissionError,
            RedisError,
            ResponseError,
        )
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        from .errors import BackendError, BackendRefused, BackendReply, reply_code

        if not isinstance(error, RedisError):
            return
        text = str(error)
        if isinstance(error, NoPermissionError):
            raise BackendRefused(f"Redis refused us: NOPERM {text}") from None
        if isinstance(error, AuthenticationError):
            raise BackendRefused(f"Redis refused us: {text}") from None
        if isinstance(error, (RedisConnectionError, RedisTimeoutError)):
            raise BackendUnavailable(f"Redis unavailable: {text}") from None
        if isinstance(error, ResponseError):
            code, rest = reply_code(text)
            if code in _TRANSIENT:
                raise BackendUnavailable(f"Redis unavailable: {text}") from None
            if code == "NOPERM":
                raise BackendRefused(f"Redis refused us: {text}") from None
            raise BackendReply(rest if code.startswith("PULSE_") else text, code) from None
        # cluster errors (slot moved for good, no node reachable) and the rest
        name = type(error).__name__
        if "Cluster" in name or "Slot" in name:
            raise BackendUnavailable(f"Redis cluster unavailable: {text or name}") from None
        raise BackendError(f"Redis failed: {text or name}") from None
