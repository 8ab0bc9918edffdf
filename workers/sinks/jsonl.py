"""``jsonl:///path/file.jsonl``: one JSON object per push appended, durable before success."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pulse.errors import BadValue

from .base import Push, SinkError, redact


class JsonlSink:
    """Appends ``{event_id, kind, at, task, text}`` lines.

    Each line is one ``os.write`` on an O_APPEND descriptor, so lines of several relays
    writing the same file never tear; the file is opened per push, so a rotated file is
    followed instead of writing on into the renamed one.
    """

    def __init__(self, path: Path, *, name: str | None = None) -> None:
        self.path = path
        self.name = name or f"jsonl://{path}"

    def send(self, push: Push) -> None:
        line = json.dumps(push.record(), ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                written = os.write(fd, data)
                os.fsync(fd)  # the relay acknowledges the event after this returns
            finally:
                os.close(fd)
        except OSError as e:
            raise SinkError(f"{self.name}: {e.strerror or e}") from None
        if written != len(data):  # only a full disk does this to a regular file
            raise SinkError(f"{self.name}: short write ({written} of {len(data)} bytes)")

    def close(self) -> None:
        pass


def from_url(url: str) -> JsonlSink:
    name = redact(url)
    parts = urlsplit(url.strip())
    # jsonl:///abs/path, and for convenience jsonl://./rel or jsonl://~/file
    raw = unquote(parts.netloc + parts.path)
    if not raw or parts.query or parts.fragment:
        raise BadValue(f"sink {name}: expected jsonl:///path/to/file.jsonl")
    path = Path(raw).expanduser()
    if path.is_dir() or not path.parent.is_dir():
        raise BadValue(f"sink {name}: {path} is not a file in an existing folder")
    return JsonlSink(path, name=name)
