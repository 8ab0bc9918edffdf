"""The CLI's Redis client: a plain socket plus hiredis's C reply parser.

``import redis`` costs more than a whole ``pulse`` call, so the hot path speaks RESP2 itself
and imports only ``socket`` and ``hiredis``; ``ssl`` loads for rediss:// URLs only and
``redis`` only for RedisPyConnection. Replies: str (utf-8, errors="replace"), int, None, list.
"""

from __future__ import annotations

import socket

import hiredis

from .errors import BackendUnavailable, BadValue, reply_code

# ``typing`` alone costs ~1.5 ms to import; annotations here are strings, so only type
# checkers (which treat TYPE_CHECKING as true) need it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Protocol
else:
    Protocol = object

SCHEMES = ("redis", "rediss", "unix")


class ReplyError(Exception):
    """An error reply from the server, e.g. ``NOSCRIPT No matching script...``."""

    @property
    def code(self) -> str:
        """The reply's code (``NOSCRIPT``, ``PULSE_NOTFOUND``), whatever a server put before
        it: see ``errors.reply_code``."""
        return reply_code(str(self))[0]


class Connection(Protocol):
    url: str  # without its password

    def call(self, *args: Any) -> Any: ...  # one round trip; raises ReplyError
    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]: ...  # errors in list
    def connect(self) -> None: ...  # eager connect, for a reachability check
    def close(self) -> None: ...


def _unquote(text: str) -> str:
    head, *rest = text.split("%")
    out = bytearray(head.encode())
    for part in rest:
        code = part[:2]
        if len(code) == 2 and all(c in "0123456789abcdefABCDEF" for c in code):
            out += bytes((int(code, 16),)) + part[2:].encode()
        else:
            out += b"%" + part.encode()
    return out.decode("utf-8", "replace")


def _split(url: str) -> tuple[str, str, str | None, str, str]:
    # scheme, '://', userinfo (None if absent), host[:port], path?query. By hand, as
    # ``urllib.parse`` would add ~5 ms of imports (re, ipaddress) to every CLI call.
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    return scheme, sep, (userinfo if at else None), hostport, rest[end:]


def redacted_url(url: str) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` parameter) as ``***``."""
    scheme, sep, userinfo, hostport, rest = _split(url)
    if not sep:
        return url
    if userinfo is not None:
        # redis-cli reads a userinfo without ':' as a password, so all of it is hidden then.
        user, colon, _ = userinfo.partition(":")
        hostport = (f"{user}:***" if colon else "***") + "@" + hostport
    path, q, query = rest.partition("?")
    params = [p.partition("=") for p in query.split("&")]
    query = "&".join(k + e + ("***" if k == "password" else v) for k, e, v in params)
    return scheme + sep + hostport + path + q + query


class _Calls:
    def _exchange(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        raise NotImplementedError

    def call(self, *args: Any) -> Any:
        reply = self._exchange([args])[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        return self._exchange(commands) if commands else []


class SocketConnection(_Calls):
    """redis://, rediss:// and unix:// URLs over one socket, connected on first use.

    Not thread-safe. A command once sent is never retried (updates are not idempotent); a
    broken connection is closed and the next call reconnects. ``timeout`` bounds the connect
    and each read, and may be changed between calls (e.g. before a blocking XREAD).
    """

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = redacted_url(url)
        self.timeout = timeout
        scheme, _, userinfo, hostport, rest = _split(url.partition("#")[0])
        scheme, (path, _, query) = scheme.lower(), rest.partition("?")
        if scheme not in SCHEMES:
            raise BadValue(f"{self.url}: a Redis URL starts with redis://, rediss:// or unix://")
        params = {k: _unquote(v) for k, _, v in (p.partition("=") for p in query.split("&"))}
        user, password = None, params.get("password")
        if userinfo is not None:
            name, colon, secret = userinfo.partition(":")
            user, password = (_unquote(name), _unquote(secret)) if colon else (None, _unquote(name))
        self._path: str | None = None
        self._host, self._port = "localhost", 6379
        db = params.get("db") or path.strip("/") or "0"
        if scheme == "unix":
            self._path, db = _unquote(hostport + path), params.get("db") or "0"
        else:
            host, colon, port = hostport.rpartition(":")
            if not colon or "]" in port:  # no port, or a bare [IPv6] address
                host, port = hostport, ""
            self._host = _unquote(host.strip("[]")) or "localhost"
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise BadValue(f"{self.url}: {port!r} is not a port")
            self._port = int(port or 6379)
        if not db.isdigit():
            raise BadValue(f"{self.url}: the database must be a number, not {db!r}")
        # (cert_reqs, ca_certs); ssl itself is imported only when connecting.
        self._tls: tuple[str, str | None] | None = None
        if scheme == "rediss":
            self._tls = (params.get("ssl_cert_reqs", "required"), params.get("ssl_ca_certs"))
            if self._tls[0] not in ("none", "optional", "required"):
                raise BadValue(f"{self.url}: ssl_cert_reqs must be none, optional or required")
        # AUTH and SELECT go in the same write as the first command: still one round trip.
        hello: list[tuple[str, tuple[Any, ...]]] = []
        if user or password:
            hello.append(
                ("the login", ("AUTH", user, password or "") if user else ("AUTH", password))
            )
        if int(db):
            hello.append((f"SELECT {int(db)}", ("SELECT", int(db))))
        self._hello = [(what, hiredis.pack_command(command)) for what, command in hello]
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = None
        try:
            if self._path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self._path)
            else:
                sock = socket.create_connection((self._host, self._port), self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._tls is not None:
                    sock = self._wrap(sock, *self._tls)
        except OSError as e:
            if sock is not None:
                sock.close()
            raise BackendUnavailable(f"cannot reach Redis at {self.url}: {self._why(e)}") from e
        self._sock = sock
        self._reader = hiredis.Reader(replyError=ReplyError, encoding="utf-8", errors="replace")

    def _wrap(self, sock: socket.socket, reqs: str, cafile: str | None) -> socket.socket:
        import ssl

        ctx = ssl.create_default_context(cafile=cafile)
        if reqs == "none":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif reqs == "optional":
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx.wrap_socket(sock, server_hostname=self._host)

    def _why(self, e: BaseException) -> str:
        if isinstance(e, TimeoutError):
            return f"no answer within {self.timeout:g} s"
        return getattr(e, "strerror", None) or str(e) or type(e).__name__

    def _hung_up(self, sock: socket.socket) -> bool:
        # Whether the server closed this idle socket (restart, idle timeout). Nothing is sent
        # yet, so reconnecting is safe and spares long-lived callers a failed call.
        try:
            sock.setblocking(False)
            # The raw socket even under TLS, where unread bytes may be a session ticket.
            return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b"" or self._tls is None
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self.timeout)

    def _read(self, sock: socket.socket) -> Any:
        while True:
            reply = self._reader.gets()
            if reply is not False:  # False means "more data needed": RESP2 has no booleans
                return reply
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            self._reader.feed(data)

    def _exchange(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        return self._collect(self._write(commands), len(commands))

    def _write(self, commands: Sequence[Sequence[Any]]) -> list[tuple[str, bytes]]:
        """Send ``commands`` (after the login, on a new connection); the login sent."""
        if not all(commands):
            raise ValueError("an empty Redis command")
        payload = b"".join([hiredis.pack_command(tuple(c)) for c in commands])  # before sending
        if self._sock is not None and self._hung_up(self._sock):
            self.close()
        hello: list[tuple[str, bytes]] = []
        if self._sock is None:
            self.connect()
            hello = self._hello
            payload = b"".join(p for _, p in hello) + payload
        assert self._sock is not None
        try:
            self._sock.sendall(payload)
        except OSError as e:
            self.close()
            raise BackendUnavailable(
                f"lost the connection to Redis at {self.url} (the command may have run): "
                f"{self._why(e)}"
            ) from e
        return hello

    def _collect(self, hello: list[tuple[str, bytes]], count: int) -> list[Any]:
        sock = self._sock
        if sock is None:
            raise BackendUnavailable(f"lost the connection to Redis at {self.url}")
        try:
            replies = [self._read(sock) for _ in range(len(hello) + count)]
        except (OSError, hiredis.ProtocolError) as e:
            self.close()
            raise BackendUnavailable(
                f"lost the connection to Redis at {self.url} (the command may have run): "
                f"{self._why(e)}"
            ) from e
        except BaseException:
            self.close()  # a half-read reply would shift every later one
            raise
        for (what, _), reply in zip(hello, replies[: len(hello)], strict=True):
            if isinstance(reply, ReplyError):
                self.close()
                raise BackendUnavailable(f"Redis refused {what} for {self.url}: {reply}")
        replies = replies[len(hello) :]
        if any(isinstance(r, ReplyError) and str(r).startswith("NOAUTH") for r in replies):
            self.close()
            raise BackendUnavailable(f"Redis at {self.url} wants a password (NOAUTH)")
        return replies

    def close(self) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            sock.close()


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
        replies: list[Any] = self._guarded(self._send, packed, len(commands))
        return replies

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
        from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError

        try:
            return fn(*args)
        except AuthenticationError as e:
            self.close()
            raise BackendUnavailable(f"Redis refused the login for {self.url}: {e}") from e
        except (ConnectionError, TimeoutError, OSError) as e:
            self.close()
            raise BackendUnavailable(f"cannot talk to Redis at {self.url}: {e}") from e
        except BaseException:
            self.close()  # a half-read reply would shift every later one
            raise

    def connect(self) -> None:
        self._guarded(self._conn.connect)

    def close(self) -> None:
        self._conn.disconnect()


def connect(url: str, *, timeout: float = 2.0) -> Connection:
    """SocketConnection for redis://, rediss:// and unix://; redis-py for anything else."""
    if url.partition("://")[0].lower() in SCHEMES:
        return SocketConnection(url, timeout=timeout)
    import redis

    try:  # RedisPyConnection sets RESP2 and decoding on its own connection
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as e:
        raise BadValue(f"unsupported Redis URL {redacted_url(url)}: {e}") from e
    return RedisPyConnection(client, url=url)
