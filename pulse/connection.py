"""Where pulse's Redis is: PULSE_REDIS_URL, or the embedded server, started on first use."""

from __future__ import annotations

from .errors import BackendUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .settings import Settings
    from .transport import Connection

__all__ = [
    "client_for_url",
    "open_connection",
    "redis_client",
    "redis_errors",
    "redis_url",
    "server_hello",
]


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
    return client_for_url(redis_url(settings), decode_responses=decode_responses, timeout=timeout)


def client_for_url(url: str, *, decode_responses: bool = True, timeout: float = 5.0) -> Any:
    """``redis_client`` for a URL: redis.RedisCluster if the server is a cluster node."""
    import redis
    from redis.exceptions import AuthenticationError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from .errors import BackendRefused
    from .transport import redacted_url

    options = {
        "decode_responses": decode_responses,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    try:
        client = redis.Redis.from_url(url, **options)
        # HELLO, not INFO: every user may send it, whatever its ACL rules
        cluster = server_hello(client).get("mode") == "cluster"
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
    from redis.exceptions import RedisError

    try:  # learns the slots (CLUSTER SLOTS) and the commands' keys (COMMAND) at once
        return redis.RedisCluster.from_url(url, **options)
    except (RedisConnectionError, RedisTimeoutError) as e:
        raise BackendUnavailable(
            f"cannot reach the Redis Cluster at {redacted_url(url)}: {e}"
        ) from None
    except RedisError as e:  # RedisClusterException too
        if "connect" in str(e) and "ermission" not in str(e):  # no node answers: a failover
            raise BackendUnavailable(
                f"cannot reach the Redis Cluster at {redacted_url(url)}: {e}"
            ) from None
        raise BackendRefused(
            f"cannot use the Redis Cluster at {redacted_url(url)}: {e} (an ACL user needs "
            "+cluster|slots and +command: see docs/acl.md)"
        ) from None


def server_hello(client: Any) -> dict[str, Any]:
    """What a redis-py client's server says of itself (``HELLO``: server, version, mode...;
    of one of its nodes for a RedisCluster), str keys and values; {} if it does not say."""
    from redis.exceptions import ResponseError

    if hasattr(client, "get_default_node"):  # RedisCluster: every node runs the same build
        client = client.get_redis_connection(client.get_default_node())
    try:  # no protocol version: HELLO 2 would switch a RESP3 connection (redis-py 8's) back
        reply = client.execute_command("HELLO")
    except ResponseError:
        return {}

    def text(v: Any) -> Any:
        return v.decode() if isinstance(v, bytes) else v

    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=False)
    return {text(k): text(v) for k, v in pairs}


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
