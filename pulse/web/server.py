"""``pulse web``: the checks before listening, then uvicorn."""

from __future__ import annotations

import os
import sys

from ..errors import BadValue, PulseError
from ..settings import Settings
from .access import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def check_listen(host: str, token: str | None) -> None:
    if not token and not is_loopback(host):
        raise BadValue(
            f"refusing to listen on {host} without PULSE_WEB_TOKEN: set a token, "
            "or keep the default 127.0.0.1"
        )


def page_lang(settings_lang: str | None) -> str:
    """The page's language when the operator fixed one (--lang or PULSE_LANG), else "" (each
    browser's own)."""
    chosen = settings_lang or os.environ.get("PULSE_LANG") or ""
    return "zh" if chosen.lower().startswith("zh") else ("en" if chosen else "")


def serve(settings: Settings, host: str, port: int, *, lang: str | None = None) -> None:
    token = os.environ.get("PULSE_WEB_TOKEN") or None
    check_listen(host, token)
    import socket

    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise PulseError(
            f"pulse web needs its extra: pip install 'live-task-pulse[web]' ({e.name} is missing)"
        ) from None

    app = create_app(settings, token, lang=page_lang(lang))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and without it
    # a keep-alive client waits out a 40 ms delayed ACK on every request
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise BadValue(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{bound}/ (namespace {settings.namespace})", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        # open event streams end this long after Ctrl-C instead of holding the exit
        timeout_graceful_shutdown=2,
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        sys.exit(1)
