"""``webhook+https://host/path?secret=S``: POST each push as JSON, signed with HMAC-SHA256."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pulse.errors import BadValue
from pulse.render import task_url

from ._http import HttpClient, failure, json_body, parse_retry_after
from .base import Push, redact, scrub


class WebhookSink:
    """Body ``{"event": {id, kind, at}, "task": snapshot, "text": text}``; headers
    ``X-Pulse-Event-Id`` and, with a secret, ``X-Pulse-Signature: sha256=<hex HMAC of the body>``.
    """

    def __init__(
        self,
        target: str,
        *,
        name: str,
        secret: str | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float = 10.0,
        web_url: str | None = None,
    ) -> None:
        self.name = name
        self._web_url = web_url
        self.target = target  # the URL posted to: no secret, no user info
        self._secret = secret.encode() if secret else None
        self._headers = {"Content-Type": "application/json"}
        secrets = tuple(s for s in (secret, auth[1] if auth else None) if s)
        if auth:  # urllib ignores user:password in a URL; send it the standard way
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
            secrets += (token,)
        self._http = HttpClient(name, secrets=secrets, timeout=timeout)

    def body(self, push: Push) -> bytes:
        event = {"id": push.event_id, "kind": push.kind, "at": push.at}
        doc = {"event": event, "task": push.task, "text": push.text}
        link = task_url(self._web_url, push.task_id)
        if link:
            doc["url"] = link  # the task on the dashboard (PULSE_WEB_URL)
        return json_body(doc)

    def send(self, push: Push) -> None:
        body = self.body(push)
        headers = dict(self._headers, **{"X-Pulse-Event-Id": push.event_id})
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Pulse-Signature"] = f"sha256={digest}"
        reply = self._http.request("POST", self.target, body, headers)
        if 200 <= reply.status < 300:
            return
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        detail = scrub(reply.snippet(), self._http.secrets)
        raise failure(self.name, reply.status, detail, retry_after)

    def close(self) -> None:
        self._http.close()


def from_url(url: str, *, web_url: str | None = None) -> WebhookSink:
    name = redact(url)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise BadValue(f"sink {name}: not a valid URL") from None
    if not parts.hostname:
        raise BadValue(f"sink {name}: expected webhook+https://host/path")
    query = parse_qsl(parts.query, keep_blank_values=True)
    secrets = [v for k, v in query if k == "secret"]
    if len(secrets) > 1 or (secrets and not secrets[0]):
        raise BadValue(f"sink {name}: give one non-empty ?secret=")
    host = parts.netloc.rpartition("@")[2]
    scheme = parts.scheme.removeprefix("webhook+")
    kept = urlencode([(k, v) for k, v in query if k != "secret"])
    target = urlunsplit((scheme, host, parts.path or "/", kept, ""))
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    secret = secrets[0] if secrets else None
    return WebhookSink(target, name=name, secret=secret, auth=auth, web_url=web_url)
