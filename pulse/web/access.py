"""Who may read and write: a bearer token (PULSE_WEB_TOKEN), or none and loopback only.

Without a token the server listens on loopback only and is read-only. With one, every /api
call needs it: the ``Authorization: Bearer`` header, ``?token=`` (a browser's first visit,
EventSource), or the cookie the first visit leaves, which is good for reads only: writes need
the header, so a page (or a forged form) can never write with a browser's ambient credential.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

COOKIE = "pulse_web"
COOKIE_MAX_AGE = 30 * 86400


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


class Access:
    """The token rules of one server; ``token`` None means no token is configured."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        # The cookie holds a value derived from the token, not the token: a leaked cookie
        # reads the dashboard but can never be replayed as the write token.
        self.cookie_value = (
            hmac.new(self.token.encode(), b"pulse-web-cookie", hashlib.sha256).hexdigest()
            if self.token
            else None
        )

    def token_matches(self, given: str | None) -> bool:
        if self.token is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def cookie_matches(self, given: str | None) -> bool:
        if self.cookie_value is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self.cookie_value.encode())

    def refusal(
        self,
        *,
        write: bool,
        authorization: str | None,
        query_token: str | None,
        cookie: str | None,
    ) -> tuple[int, str] | None:
        """None when the request may go on, else (HTTP status, reason)."""
        if self.token is None:
            if write:
                return 403, "writes are refused: the server has no PULSE_WEB_TOKEN set"
            return None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(given.strip()):
            return None
        if write:
            return 401, "writes need the header 'Authorization: Bearer TOKEN'"
        if self.token_matches(query_token) or self.cookie_matches(cookie):
            return None
        return 401, "no or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"
