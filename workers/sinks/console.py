"""``console://``: one line per push on stdout."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from .base import Push, SinkError

# Several sinks (and relay threads) may share stdout: one line must not interleave another.
_LOCK = threading.Lock()


class ConsoleSink:
    name = "console://"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, push: Push) -> None:
        line = " | ".join(part for part in push.text.splitlines() if part.strip())
        # sys.stdout looked up per push, so a redirected stdout (or pytest's capture) is used
        stream = self._stream or sys.stdout
        try:
            with _LOCK:
                stream.write(line + "\n")
                stream.flush()
        except (OSError, ValueError) as e:
            raise SinkError(f"console://: cannot write ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        pass
