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
    from typing import Any

    from ..transport import Connection

_HERE = Path(__file__).parent


def _expand(source: str, seen: tuple[str, ...], folder: Path = _HERE) -> str:
    out = []
    for line in source.splitlines(keepends=True):
        if line.startswith("--@include "):
            name = line.split()[1]
            if name in seen:
                raise ValueError(f"include cycle: {' -> '.join((*seen, name))}")
            text = (folder / "include" / f"{name}.lua").read_text(encoding="utf-8")
            line = _expand(text, (*seen, name), folder).rstrip("\n") + "\n"
        out.append(line)
    return "".join(out)


class Script:
    """A script run by EVALSHA, re-sent with EVAL (which caches it again) on NOSCRIPT.

    So a Redis restart or SCRIPT FLUSH between calls costs one extra round trip, never a
    failed call, and the normal path is one round trip with no SCRIPT LOAD beforehand.
    """

    def __init__(self, name: str, folder: Path = _HERE) -> None:
        """``folder/name.lua`` (default: pulse's own scripts; the workers keep theirs)."""
        self.name = name
        text = (folder / f"{name}.lua").read_text(encoding="utf-8")
        self.source = _expand(text, (name,), folder)
        self.sha = sha1(self.source.encode()).hexdigest()

    def __call__(self, conn: Connection, keys: list[str], args: list[Any]) -> Any:
        """Run the script on pulse's own connection."""
        try:
            return conn.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except ReplyError as e:
            if e.code != "NOSCRIPT":
                raise
        return conn.call("EVAL", self.source, len(keys), *keys, *args)

    def on(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """Run the script on a redis-py client (the workers'), routed by its keys on a
        cluster; redis-py's errors pass through (``pulse.connection.redis_errors``)."""
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)
