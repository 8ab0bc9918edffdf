"""The Lua scripts, one per file; each file's header names its KEYS and ARGV.

Snippets shared by several scripts live in ``include/NAME.lua`` and are pulled in by a line
``--@include NAME`` (as BullMQ's commands include theirs), so no logic is pasted twice. The
script Redis runs (and hashes) is the file with its includes spliced in.
"""

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


def _expand(source: str, seen: tuple[str, ...]) -> str:
    out = []
    for line in source.splitlines(keepends=True):
        if line.startswith("--@include "):
            name = line.split()[1]
            if name in seen:
                raise ValueError(f"include cycle: {' -> '.join((*seen, name))}")
            text = (_HERE / "include" / f"{name}.lua").read_text(encoding="utf-8")
            line = _expand(text, (*seen, name)).rstrip("\n") + "\n"
        out.append(line)
    return "".join(out)


class Script:
    """A script run by EVALSHA, re-sent with EVAL (which caches it again) on NOSCRIPT.

    So a Redis restart or SCRIPT FLUSH between calls costs one extra round trip, never a
    failed call, and the normal path is one round trip with no SCRIPT LOAD beforehand.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _expand((_HERE / f"{name}.lua").read_text(encoding="utf-8"), (name,))
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
            if e.code != "NOSCRIPT":
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
            if reply.code != "NOSCRIPT":
                raise reply
            return conn.call("EVAL", self.source, len(keys), *keys, *args)
        return reply
