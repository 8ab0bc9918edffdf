"""The CLI's Redis client: a plain socket plus hiredis's C reply parser.

``import redis`` costs more than a whole ``pulse`` call, so the hot path speaks RESP2 itself
and imports only ``socket`` and ``hiredis``; ``ssl`` loads for rediss:// URLs only and
``redis`` only for RedisPyConnection. Replies: str (utf-8, errors="replace"), int, None, list.
"""

from __future__ import annotations

import socket

import hiredis

from .errors import BackendRefused, BackendUnavailable, reply_code

# ``typing`` alone costs ~1.5 ms to import; annotations here are strings, so only type
# checkers (which treat TYPE_CHECKING as true) need it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Protocol

    from .cluster import Cluster
else:
    Protocol = object

SCHEMES = ("redis", "rediss", "unix")
# Replies of a Redis Cluster sending a command to the node that serves its slot: see cluster.py.
REDIRECTS = ("MOVED", "ASK")


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
            raise BackendRefused(
                f"{self.url}: a Redis URL starts with redis://, rediss:// or unix://"
            )
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
            if not self._path:
                raise BackendRefused(f"{self.url}: a unix:// URL needs the socket's path")
        else:
            if hostport.startswith("[") != ("]" in hostport):
                raise BackendRefused(f"{self.url}: an IPv6 address goes in [brackets]")
            host, colon, port = hostport.rpartition(":")
            if not colon or "]" in port:  # no port, or a bare [IPv6] address
                host, port = hostport, ""
            self._host = _unquote(host.strip("[]")) or "localhost"
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise BackendRefused(f"{self.url}: {port!r} is not a port")
            self._port = int(port or 6379)
        if not db.isdigit():
            raise BackendRefused(f"{self.url}: the database must be a number, not {db!r}")
        # (cert_reqs, ca_certs); ssl itself is imported only when connecting.
        self._tls: tuple[str, str | None] | None = None
        if scheme == "rediss":
            self._tls = (params.get("ssl_cert_reqs", "required"), params.get("ssl_ca_certs"))
            if self._tls[0] not in ("none", "optional", "required"):
                raise BackendRefused(
                    f"{self.url}: ssl_cert_reqs must be none, optional or required"
                )
        # AUTH goes in the same write as the first command: still one round trip (a refused
        # login leaves the commands after it refused too, NOAUTH). SELECT does not: a database
        # out of range would leave them running on database 0, so a URL naming a database
        # other than 0 costs one round trip more per connection.
        hello: list[tuple[str, tuple[Any, ...]]] = []
        if user or password:
            hello.append(
                ("the login", ("AUTH", user, password or "") if user else ("AUTH", password))
            )
        select: tuple[Any, ...] = ("SELECT", int(db))
        self._select = (f"database {int(db)}", hiredis.pack_command(select))
        self._hello = [(what, hiredis.pack_command(command)) for what, command in hello]
        if int(db):
            self._hello.append(self._select)
        self._sock: socket.socket | None = None
        self._login_owed = False  # AUTH and SELECT go before the next command
        self._reader: Any = None
        # Redis Cluster: where slots live and a connection per node, from the first redirect on.
        self._cluster: Cluster | None = None
        self._server: dict[str, Any] | None = None  # HELLO's answer, once asked

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
            if type(e).__name__ == "SSLCertVerificationError":  # configuration, not an outage
                raise BackendRefused(
                    f"Redis at {self.url} has a certificate that does not verify: {self._why(e)}"
                ) from None
            raise BackendUnavailable(f"cannot reach Redis at {self.url}: {self._why(e)}") from e
        self._sock = sock
        self._login_owed = True
        self._reader = hiredis.Reader(replyError=ReplyError, encoding="utf-8", errors="replace")

    def _peer(self, host: str, port: int) -> SocketConnection:
        """A connection to another node of the same cluster, with the same login and TLS."""
        peer = object.__new__(SocketConnection)
        peer.__dict__.update(self.__dict__)
        peer._path, peer._host, peer._port = None, host, port
        peer._sock, peer._reader, peer._cluster = None, None, None
        peer.url = f"{'rediss' if self._tls else 'redis'}://{host}:{port}"
        return peer

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
        if self._cluster is not None:
            return self._cluster.exchange(commands)
        # A server in transition: retry_transitions; a redirect: a cluster (_settle).
        return retry_transitions(
            lambda: self._settle(commands, self._roundtrip(commands)), self.url
        )

    def _roundtrip(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` to this very server, and their replies: no redirect followed."""
        return self._collect(self._write(commands), len(commands))

    def _settle(self, commands: Sequence[Sequence[Any]], replies: list[Any]) -> list[Any]:
        # A redirect: this is a Redis Cluster, whose redirects and transitions cluster.Cluster
        # follows from now on.
        if self._cluster is None and not any(
            isinstance(r, ReplyError) and r.code in REDIRECTS for r in replies
        ):
            return replies
        if self._cluster is None:
            from .cluster import Cluster

            self._cluster = Cluster(self)
        self._cluster.down.clear()
        return self._cluster.settle(commands, replies)

    def hello(self) -> dict[str, Any]:
        """What the server says of itself (``HELLO``: server, version, mode...), asked once
        per connection; {} from a server that does not say."""
        if self._server is None:
            self._server = _hello(self)
        return self._server

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
        if self._login_owed:  # a new socket (here, or by an eager connect()): log in first
            hello, self._login_owed = self._hello, False
            if hello and hello[-1] is self._select:  # SELECT first, alone: see __init__
                self._collect(self._write_raw(b"".join(p for _, p in hello)), 0, hello)
                hello = []
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

    def _write_raw(self, payload: bytes) -> list[tuple[str, bytes]]:
        assert self._sock is not None
        try:
            self._sock.sendall(payload)
        except OSError as e:
            self.close()
            raise BackendUnavailable(f"lost the connection to Redis at {self.url}: {e}") from e
        return []

    def _collect(
        self,
        hello: list[tuple[str, bytes]],
        count: int,
        only_hello: list[tuple[str, bytes]] | None = None,
    ) -> list[Any]:
        sock = self._sock
        if sock is None:
            raise BackendUnavailable(f"lost the connection to Redis at {self.url}")
        if only_hello is not None:  # the replies to a hello sent alone
            hello, count = only_hello, 0
        replies: list[Any] = []
        try:
            for _ in range(len(hello) + count):
                replies.append(self._read(sock))
        except (OSError, hiredis.ProtocolError) as e:
            self.close()
            # A server that closes on an unauthenticated client says why first
            cut = min(len(hello), len(replies))
            refused = refusal(replies[:cut], replies[cut:], self.url, hello)
            if refused is not None:
                raise refused from None
            raise BackendUnavailable(
                f"lost the connection to Redis at {self.url} (the command may have run): "
                f"{self._why(e)}"
            ) from e
        except BaseException:
            self.close()  # a half-read reply would shift every later one
            raise
        refused = refusal(replies[: len(hello)], replies[len(hello) :], self.url, hello)
        if refused is not None:
            self.close()
            raise refused
        return replies[len(hello) :]

    def close(self) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            sock.close()
        if self._cluster is not None:
            self._cluster.close()


# -- refusals and transitions: which error replies are permanent, which pass ------------------

# A server or cluster in transition: the command did not run (or stopped at its first write),
# so it is sent again after a short wait, then the update is journaled (BackendUnavailable).
TRANSITION_CODES = ("LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY")
TRANSITION_WAITS = (0.1, 0.3, 0.6)


def in_transition(replies: list[Any]) -> str | None:
    """The first reply saying the server or cluster is in transition, as text, or None."""
    for r in replies:
        if isinstance(r, ReplyError) and r.code in TRANSITION_CODES:
            return str(r)
    return None


def retry_transitions(exchange: Any, url: str) -> list[Any]:
    """``exchange()`` again while a reply says the server is in transition; then
    BackendUnavailable. Every pulse command is safe to send again: reads, and scripts that
    apply an operation id once (update), refuse a taken id (create) or a version they hold
    (restore)."""
    import time

    for wait in (*TRANSITION_WAITS, None):
        replies: list[Any] = exchange()
        busy = in_transition(replies)
        if busy is None:
            return replies
        if wait is not None:
            time.sleep(wait)
    raise BackendUnavailable(f"Redis at {url} is in transition: {busy}")


def refusal(
    hello: list[Any], replies: list[Any], url: str, sent: Sequence[tuple[str, bytes]]
) -> BackendRefused | None:
    """BackendRefused naming the cause if the server refuses us for good (a login, a
    password it wants, a database, a permission), else None.

    ``hello``: replies to the login and SELECT (``sent`` says what each was); any error
    there is a refusal. ``replies``: the commands' replies. A server wanting a password
    answers small commands NOAUTH; Redis 7 and Valkey answer one of more than 10 arguments
    (an EVALSHA) with a protocol error about an unauthenticated client, and hang up."""
    for (what, _), r in zip(sent, hello, strict=False):  # hello: those read before a hang-up
        if isinstance(r, ReplyError):
            text = str(r)
            if "out of range" in text or "invalid DB" in text:
                return BackendRefused(f"Redis at {url} has no {what} ({text})")
            if "without any password configured" in text:
                return BackendRefused(
                    f"Redis at {url} refused the login: it has no password set, the URL gives one"
                )
            if what == "the login":
                return BackendRefused(f"Redis at {url} refused the login: {text}")
            return BackendRefused(f"Redis at {url} refused {what}: {text}")
    for r in replies:
        if not isinstance(r, ReplyError):
            continue
        text = str(r)
        if r.code == "NOAUTH" or "unauthenticated" in text:
            return BackendRefused(
                f"Redis at {url} wants a password, and the URL gives none (NOAUTH)"
            )
        if r.code == "NOPERM":
            return BackendRefused(f"Redis at {url} does not allow this user: {text}")
        if r.code == "WRONGPASS":
            return BackendRefused(f"Redis at {url} refused the login: {text}")
    return None


# -- what the server says of itself ----------------------------------------------------------

def _hello(conn: Connection) -> dict[str, Any]:
    try:
        reply = conn.call("HELLO")  # in the connection's protocol: RESP2, a flat list
    except ReplyError:
        return {}
    return dict(zip(reply[::2], reply[1::2], strict=False)) if isinstance(reply, list) else {}


def sharded_channels(server: dict[str, Any]) -> bool:
    """Whether the live channel is a sharded one (SPUBLISH/SSUBSCRIBE) on this server: on a
    Redis Cluster whose servers have them (Redis 7+, Valkey). The scripts publish and
    ``watch`` subscribes by the same rule."""
    if server.get("mode") != "cluster":
        return False
    major = str(server.get("version", "")).split(".")[0]
    return major.isdigit() and int(major) >= 7


def publish_command(conn: Connection) -> str:
    """SPUBLISH or PUBLISH: what the scripts publish the live channel with on ``conn``."""
    hello = getattr(conn, "hello", None)
    return "SPUBLISH" if hello is not None and sharded_channels(hello()) else "PUBLISH"


def connect(url: str, *, timeout: float = 2.0) -> Connection:
    """SocketConnection for redis://, rediss:// and unix://; redis-py for anything else."""
    if url.partition("://")[0].lower() in SCHEMES:
        return SocketConnection(url, timeout=timeout)
    import redis

    from .redispy import RedisPyConnection

    try:  # RedisPyConnection sets RESP2 and decoding on its own connection
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as e:
        raise BackendRefused(f"unsupported Redis URL {redacted_url(url)}: {e}") from e
    return RedisPyConnection(client, url=url)
