"""Settings read from the environment, in one record (a CLI flag of the same meaning wins).

The records on the per-update path (this one, ``keys.Keys``, ``store.Change``) are plain
classes, not dataclasses: ``import dataclasses`` pulls in inspect, ast and dis, several
milliseconds of a call that should take about thirty.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from . import keys
from .errors import BadValue

_NAMESPACE_RE = re.compile(r"^[\w.-]{1,64}\Z")  # \Z: "$" would let a trailing newline in


def user_data_dir() -> Path:
    """Where pulse keeps the embedded Redis and the default mirror, per user."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "live-task-pulse"


class SystemZone(tzinfo):
    """The system's zone, resolved per timestamp (as ``time.localtime`` does, from the same
    tz database zoneinfo reads): a long-running process keeps the right offset across a
    daylight-saving change, which a fixed offset taken at start-up would not. Not zoneinfo
    itself: importing it costs the per-step CLI ~3 ms, more than the rest of an update."""

    def fromutc(self, dt: datetime) -> datetime:
        ts = (dt.replace(tzinfo=timezone.utc) - _EPOCH).total_seconds()
        return dt + timedelta(seconds=time.localtime(ts).tm_gmtoff)

    def _local(self, dt: datetime | None) -> time.struct_time:
        if dt is None:
            return time.localtime()
        return time.localtime(time.mktime((*dt.timetuple()[:8], -1)))

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(seconds=self._local(dt).tm_gmtoff)

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return self._local(dt).tm_zone

    def __repr__(self) -> str:
        return "SystemZone()"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_tz(value: str | None) -> tzinfo:
    """``8``, ``-5``, ``5.5`` (hours) or an IANA name; unset means the system's local zone,
    resolved per timestamp."""
    if not value:
        return SystemZone()
    try:
        return timezone(timedelta(hours=float(value)))
    except (ValueError, OverflowError):
        pass
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise BadValue(f"PULSE_TZ={value!r} is neither an hours offset nor a time zone name") from e


def check_namespace(value: str) -> str:
    if not _NAMESPACE_RE.match(value) or value in (".", ".."):
        raise BadValue(f"namespace {value!r} must be 1-64 letters, digits, '_', '-' or '.'")
    return value


MAX_AGENT = 64


def check_agent(value: str | None) -> str | None:
    """PULSE_AGENT, checked like a task name (no control characters) and at most 64 chars;
    bidi controls and invisible characters are removed where it is used (client.py)."""
    if value is None or not value.strip():
        return None
    from .model import check_name

    try:
        agent = check_name(value, "agent name")
    except BadValue as e:
        raise BadValue(f"PULSE_AGENT: {e}") from None
    if len(agent) > MAX_AGENT:
        raise BadValue(f"PULSE_AGENT is {len(agent)} characters long; at most {MAX_AGENT}")
    return agent


# Past these a setting means nothing (and inf would not fit the integers Redis takes).
_MAXIMUM = 10 * 365 * 86400


def _number(
    env: Mapping[str, str], names: tuple[str, ...], default: float, minimum: float
) -> float:
    for name in names:
        raw = env.get(name)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                raise BadValue(f"{name}={raw!r} is not a number") from None
            if not minimum <= value <= _MAXIMUM:  # also refuses NaN and infinities
                raise BadValue(f"{name}={raw!r} must be a number from {minimum:g} to {_MAXIMUM}")
            return value
    return default


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise BadValue(f"{name}={raw!r} must be 1 or 0")


def _lang(env: Mapping[str, str]) -> str:
    lang = env.get("PULSE_LANG") or env.get("LC_ALL") or env.get("LANG") or ""
    return "zh" if lang.lower().startswith("zh") else "en"


def _web_url(value: str | None) -> str | None:
    if not value:
        return None
    if not re.match(r"^https?://[^\s/?#]+[^\s?#]*\Z", value):
        raise BadValue(f"PULSE_WEB_URL={value!r} is not an http:// or https:// address")
    return value.rstrip("/")


class Settings:
    """Everything configurable, with SPEC's defaults; ``from_env`` reads the environment."""

    __slots__ = (
        "redis_url", "namespace", "dir", "tz", "stall_seconds", "retention_days", "lang",
        "agent", "sinks", "heartbeat_push_seconds", "telegram_api", "discord_api",
        "web_url",
        "adaptive_stall",
    )  # fmt: skip

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        namespace: str = keys.DEFAULT_NAMESPACE,
        dir: Path | str | None = None,
        tz: tzinfo | None = None,
        stall_seconds: int = keys.DEFAULT_STALL_SECONDS,
        retention_days: float = keys.DEFAULT_RETENTION_DAYS,
        lang: str = "en",
        agent: str | None = None,
        sinks: tuple[str, ...] = (),
        heartbeat_push_seconds: float = keys.DEFAULT_HEARTBEAT_PUSH_SECONDS,
        telegram_api: str = "https://api.telegram.org",
        discord_api: str = "https://discord.com/api",
        web_url: str | None = None,
        adaptive_stall: bool = True,
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.dir = Path(dir) if dir else user_data_dir() / "tasks"
        self.tz = tz or parse_tz(None)
        self.stall_seconds = stall_seconds
        self.retention_days = retention_days
        self.lang = lang
        self.agent = agent
        self.sinks = tuple(sinks)
        self.heartbeat_push_seconds = heartbeat_push_seconds
        self.telegram_api = telegram_api
        self.discord_api = discord_api
        self.web_url = web_url  # where `pulse web` is reached: pushes link to each task
        self.adaptive_stall = adaptive_stall

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed."""
        return Settings(**{**{k: getattr(self, k) for k in self.__slots__}, **changes})

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if k != "redis_url")
        return f"Settings({shown})"  # the URL may hold a password

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    @property
    def retention_seconds(self) -> int:
        return max(1, int(self.retention_days * 86400))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        pulse_dir = env.get("PULSE_DIR") or env.get("TASK_PULSE_DIR")
        return cls(
            redis_url=env.get("PULSE_REDIS_URL") or None,
            namespace=check_namespace(env.get("PULSE_NAMESPACE") or keys.DEFAULT_NAMESPACE),
            dir=Path(pulse_dir).expanduser() if pulse_dir else user_data_dir() / "tasks",
            tz=parse_tz(env.get("PULSE_TZ") or env.get("TASK_PULSE_TZ")),
            stall_seconds=int(
                _number(
                    env, ("PULSE_STALL_SECONDS", "TASK_PULSE_STALL"), keys.DEFAULT_STALL_SECONDS, 1
                )
            ),
            retention_days=_number(
                env, ("PULSE_RETENTION_DAYS",), keys.DEFAULT_RETENTION_DAYS, 0.001
            ),
            lang=_lang(env),
            agent=check_agent(env.get("PULSE_AGENT")),
            sinks=tuple((env.get("PULSE_SINKS") or "").split()),
            heartbeat_push_seconds=_number(
                env, ("PULSE_HEARTBEAT_PUSH_SECONDS",), keys.DEFAULT_HEARTBEAT_PUSH_SECONDS, 0
            ),
            telegram_api=(env.get("PULSE_TELEGRAM_API") or "https://api.telegram.org").rstrip("/"),
            discord_api=(env.get("PULSE_DISCORD_API") or "https://discord.com/api").rstrip("/"),
            web_url=_web_url(env.get("PULSE_WEB_URL")),
            adaptive_stall=_flag(env, "PULSE_ADAPTIVE_STALL", True),
        )
