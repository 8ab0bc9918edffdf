"""The Lua scripts, one per file; each file's header names its KEYS and ARGV."""

from __future__ import annotations

from pathlib import Path

from ..transport import ReplyError

try:  # CPython's own SHA-1: hashlib would load OpenSSL, milliseconds on every CLI call
    from _sha1 import sha1
except ImportError:  # pragma: no cover
    from hashlib import sha1

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from ..transport import Connection

_HERE = Path(__file__).parent


class Script:
    """A script run by EVALSHA, re-sent with EVAL (which caches it again) on NOSCRIPT.

    So a Redis restart or SCRIPT FLUSH between calls costs one extra round trip, never a
    failed call, and the normal path is one round trip with no SCRIPT LOAD beforehand.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (_HERE / f"{name}.lua").read_text(encoding="utf-8")
        self.sha = sha1(self.source.encode()).hexdigest()

    def __call__(
        self,
        conn: Connection,
        keys: list[str],
        args: list[Any],
        before: Sequence[Sequence[Any]] = (),
    ) -> Any:
        """Run the script; ``before``: commands sent first in the same round trip."""
        if before:
            self.send(conn, keys, args, before)
            return self.receive(conn, keys, args)
        try:
            return conn.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except ReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return conn.call("EVAL", self.source, len(keys), *keys, *args)

    def send(
        self,
        conn: Connection,
        keys: list[str],
        args: list[Any],
        before: Sequence[Sequence[Any]] = (),
    ) -> None:
        """Start the script (after ``before``); ``receive``, with the same keys and args,
        reads its reply. Nothing else may use the connection in between."""
        conn.send([*before, ("EVALSHA", self.sha, len(keys), *keys, *args)])

    def receive(self, conn: Connection, keys: list[str], args: list[Any]) -> Any:
        *first, reply = conn.receive()
        for r in first:
            if isinstance(r, ReplyError):
                raise r
        if isinstance(reply, ReplyError):
            if not str(reply).startswith("NOSCRIPT"):
                raise reply
            return conn.call("EVAL", self.source, len(keys), *keys, *args)
        return reply
