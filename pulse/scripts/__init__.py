"""The Lua scripts, one per file; each file's header names its KEYS and ARGV."""

from __future__ import annotations

from hashlib import sha1
from pathlib import Path
from typing import Any

from ..transport import Connection, ReplyError

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

    def __call__(self, conn: Connection, keys: list[str], args: list[Any]) -> Any:
        try:
            return conn.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except ReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return conn.call("EVAL", self.source, len(keys), *keys, *args)
