"""The routes of ``pulse web``: the page, the JSON API, the event stream, metrics, health.

Every call goes through the library's Client (calls.py) or the one stream reader (hub.py);
errors leave as ``{"error": "..."}`` with the status SPEC gives each kind of PulseError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import errors, model
from ..events import entry_order, valid_event_id
from ..settings import Settings
from . import bodies, calls
from .access import COOKIE, COOKIE_MAX_AGE, Access
from .hub import Entry, Hub, frame
from .metrics import Metrics

log = logging.getLogger("pulse.web")

STATUS = {
    errors.BadValue: 400,
    errors.TaskExists: 409,
    errors.TaskNotFound: 404,
    errors.AmbiguousId: 409,
    errors.TaskFinished: 409,
    errors.VersionMismatch: 409,
    errors.BackendUnavailable: 503,
    errors.BackendRefused: 503,
    errors.BackendError: 502,
}
VIEWS = ("default", "running", "stalled", "all")
MAX_LIMIT = 1000
# The page loads its own script and style only; task text could never run as code even if
# some path rendered it as HTML (none does: the page sets textContent only).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def pulse_error(e: errors.PulseError) -> JSONResponse:
    for kind in type(e).__mro__:
        if kind in STATUS:
            return error(STATUS[kind], str(e))  # type: ignore[index]
    return error(500, str(e))


def browser_lang(accept_language: str) -> str:
    """zh or en from a browser's Accept-Language: its first language that is one of them."""
    for part in accept_language.split(","):
        tag = part.split(";", 1)[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return ""


def create_app(settings: Settings, token: str | None, *, lang: str = "") -> Starlette:
    """The ASGI app serving ``settings.namespace``; ``lang`` "zh" or "en" fixes the page's
    language, "" lets each browser choose."""
    access = Access(token)
    hub = Hub(settings)
    clients = calls.Clients(settings)
    metrics = Metrics(hub)
    static = resources.files("pulse.web") / "static"
    page_html = (static / "index.html").read_text(encoding="utf-8")
    fixed_lang = lang if lang in ("zh", "en") else ""

    def refused(request: Request, *, write: bool) -> JSONResponse | None:
        why = access.refusal(
            write=write,
            authorization=request.headers.get("authorization"),
            query_token=request.query_params.get("token"),
            cookie=request.cookies.get(COOKIE),
        )
        if why is None:
            return None
        status, message = why
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return error(status, message, **extra)

    async def call(fn: Any, *args: Any) -> Any:
        """``fn(client, *args)`` on a pooled Client in a worker thread."""

        def run() -> Any:
            with clients.client() as c:
                return fn(c, *args)

        return await run_in_threadpool(run)

    # -- the page ------------------------------------------------------------------------

    async def page(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None and access.token is not None:
            if not access.token_matches(given):
                return Response("wrong token\n", 401, media_type="text/plain")
            # Keep the token out of the address bar and history: a cookie, then the same
            # address without it.
            query = urlencode(
                [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            )
            response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
            response.set_cookie(
                COOKIE,
                access.cookie_value or "",
                max_age=COOKIE_MAX_AGE,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response
        chosen = fixed_lang or browser_lang(request.headers.get("accept-language", ""))
        html = page_html.replace("{{LANG}}", chosen)
        return Response(html, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    # -- reads -----------------------------------------------------------------------------

    async def list_tasks(request: Request) -> Response:
        if (no := refused(request, write=False)) is not None:
            return no
        view = request.query_params.get("view", "default")
        if view not in VIEWS:
            return error(400, f"unknown view {view!r}; one of running, stalled, all")
        raw_limit = request.query_params.get("limit", "50")
        if not raw_limit.isdigit() or int(raw_limit) > MAX_LIMIT:
            return error(400, f"limit must be a whole number from 0 to {MAX_LIMIT}")

        def read(c: Any) -> dict[str, Any]:
            # the stream position first: events after it may repeat what the list shows,
            # never fall between the list and the page's event stream
            position = hub.position()
            tasks = c.status(view, limit=int(raw_limit))
            now = datetime.now(settings.tz)
            return {
                "tasks": tasks,
                "lastEventId": position,
                "now": model.iso(now),
                "namespace": settings.namespace,
            }

        try:
            return JSONResponse(await call(read))
        except errors.PulseError as e:
            return pulse_error(e)

    async def get_task(request: Request) -> Response:
        if (no := refused(request, write=False)) is not None:
            return no
        try:
            return JSONResponse(await call(lambda c: c.get(request.path_params["task_id"])))
        except errors.PulseError as e:
            return pulse_error(e)

    # -- writes ----------------------------------------------------------------------------

    async def read_body(request: Request, what: str) -> dict[str, Any]:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > bodies.MAX_BODY:
            raise bodies.TooLarge
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > bodies.MAX_BODY:
                raise bodies.TooLarge
        return bodies.parse(raw, what)

    def op_id(request: Request) -> str | None:
        # checked by the library, as every operation id is
        return request.headers.get("idempotency-key")

    async def write(request: Request, what: str, fn: Any, *args: Any) -> Response:
        if (no := refused(request, write=True)) is not None:
            return no
        try:
            key = op_id(request)
            body = await read_body(request, what)
            task = await call(fn, *args, body, key)
        except bodies.TooLarge:
            return error(413, f"the body is over {bodies.MAX_BODY // 1024} KB")
        except errors.PulseError as e:
            return pulse_error(e)
        return JSONResponse(task, status_code=201 if what == "create" else 200)

    async def create_task(request: Request) -> Response:
        return await write(request, "create", calls.create)

    async def update_task(request: Request) -> Response:
        op = request.path_params["op"]
        if op not in calls.UPDATES:
            return error(404, f"no such update {op!r}; one of {', '.join(calls.UPDATES)}")
        task_id = request.path_params["task_id"]
        return await write(request, op, calls.update, op, task_id)

    # -- the event stream ------------------------------------------------------------------

    async def events(request: Request) -> Response:
        if (no := refused(request, write=False)) is not None:
            return no
        after = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
        if after and not valid_event_id(after):
            return error(400, "Last-Event-ID is not a stream id")
        page_ = hub.subscribe()
        try:
            backlog: list[Entry] = await run_in_threadpool(hub.backlog, after) if after else []
        except Exception as e:  # noqa: BLE001 - Redis down: the page retries
            hub.unsubscribe(page_)
            return error(503, f"cannot read the event stream: {e}")

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 1000\n\n"
                last = entry_order(after) if after else (0, 0)
                for entry in backlog:
                    last = entry_order(entry[0])
                    yield frame(entry)
                while True:
                    item = await page_.queue.get()
                    if item is None:
                        return  # dropped as too slow: the browser resumes from its last id
                    if isinstance(item, bytes):
                        yield item  # a ping
                        continue
                    order, data = item
                    if order > last:
                        last = order
                        yield data
            finally:
                hub.unsubscribe(page_)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- operations ------------------------------------------------------------------------

    async def healthz(request: Request) -> Response:
        try:
            await call(lambda c: c.ping())
        except errors.PulseError as e:
            return JSONResponse({"ok": False, "error": str(e)}, status_code=503)
        return JSONResponse({"ok": True})

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def api_not_found(request: Request) -> Response:
        return error(404, f"no such API path {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(hub.prime)
        hub.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            await run_in_threadpool(hub.stop)
            await run_in_threadpool(clients.close)

    routes = [
        Route("/", page),
        Route("/api/tasks", list_tasks, methods=["GET"]),
        Route("/api/tasks", create_task, methods=["POST"]),
        Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
        Route("/api/tasks/{task_id}/{op}", update_task, methods=["POST"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/{rest:path}", api_not_found, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/metrics", metrics_text),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]

    async def crashed(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "internal error; the server's log says more")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: crashed})
    app.state.hub = hub
    app.add_middleware(_Wrap, wrapper=metrics.middleware)
    return app


class _Wrap:
    """Adapts a plain ASGI wrapper function to Starlette's add_middleware."""

    def __init__(self, app: Any, wrapper: Any) -> None:
        self.inner = wrapper(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)
