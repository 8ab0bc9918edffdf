"""A redis-py compatible client (redis.Redis, fakeredis.FakeRedis) as a pulse Connection: for
URLs the socket client does not speak, and for the tests' fakeredis."""

from __future__ import annotations

from .errors import BackendRefused, BackendUnavailable
from .transport import ReplyError, _Calls, _hello, redacted_url, refusal, retry_transitions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def _reply_error(e: Exception) -> ReplyError:
    # redis-py strips known codes ("NOSCRIPT ", "ERR ") off the text; put them back so callers
    # match on the same text as with SocketConnection.
    code = getattr(e, "status_code", None)
    if code is None and type(e).__name__ == "NoScriptError":  # older redis-py keeps no code
        code = "NOSCRIPT"
    return ReplyError(f"{code} {e}" if code else str(e))


def _adopt(reply: Any, error_type: type[Exception]) -> Any:
    # Errors nested in arrays (a Lua table holding error_reply) as ReplyError, as hiredis does.
    if isinstance(reply, list):
        return [_adopt(r, error_type) for r in reply]
    return _reply_error(reply) if isinstance(reply, error_type) else reply


class RedisPyConnection(_Calls):
    """A redis-py compatible client (redis.Redis, fakeredis.FakeRedis) as a Connection.

    Commands go over a connection of its own, built from the client's pool settings but
    forced to RESP2 with str replies, and bypass the response callbacks: redis-py 8 speaks
    RESP3 by default and reshapes replies per command (HGETALL to dict, XRANGE to tuples),
    so only raw RESP2 replies are identical to SocketConnection's. The client itself and
    its pool are left alone.
    """

    def __init__(self, client: Any, *, url: str | None = None) -> None:
        self.client = client
        pool = client.connection_pool
        kw = pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
        self.url = redacted_url(url) if url else f"{type(client).__name__}({where}/{kw.get('db')})"
        # No connect retries either: a down server fails within the timeout, as with sockets.
        fixed = {"protocol": 2, "decode_responses": True, "encoding_errors": "replace"}
        self._conn = pool.connection_class(**{**kw, **fixed, "retry": None, "retry_on_error": []})

    def _exchange(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        packed = self._conn.pack_commands([tuple(c) for c in commands])  # before sending

        def once() -> list[Any]:
            replies: list[Any] = self._guarded(self._send, packed, len(commands))
            refused = refusal([], replies, self.url, [])
            if refused is not None:
                self.close()
                raise refused
            return replies

        return retry_transitions(once, self.url)

    def _send(self, packed: Any, count: int) -> list[Any]:
        from redis.exceptions import ResponseError

        self._conn.send_packed_command(packed)
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(_adopt(self._conn.read_response(), ResponseError))
            except ResponseError as e:  # raised only once the whole reply is read
                replies.append(_reply_error(e))
        return replies

    def _guarded(self, fn: Any, *args: Any) -> Any:
        from redis.exceptions import (
            AuthenticationError,
            ConnectionError,
            ResponseError,
            TimeoutError,
        )

        try:
            return fn(*args)
        except AuthenticationError as e:
            self.close()
            raise BackendRefused(f"Redis at {self.url} refused the login: {e}") from None
        except ResponseError as e:  # raised by connect(): a SELECT or login refused
            self.close()
            reply = _reply_error(e)
            raise refusal([reply], [], self.url, [("the connection", b"")]) or BackendRefused(
                f"Redis at {self.url} refused the connection: {e}"
            ) from None
        except (ConnectionError, TimeoutError, OSError) as e:
            self.close()
            raise BackendUnavailable(f"cannot talk to Redis at {self.url}: {e}") from e
        except BaseException:
            self.close()  # a half-read reply would shift every later one
            raise

    def connect(self) -> None:
        self._guarded(self._conn.connect)

    def hello(self) -> dict[str, Any]:
        return _hello(self)

    def close(self) -> None:
        self._conn.disconnect()
