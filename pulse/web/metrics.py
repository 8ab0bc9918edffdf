"""Prometheus text on /metrics: requests by route and code, their latency, open event
streams, events read, and whether the stream reader reaches Redis."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

ROUTES = ("/", "/api/tasks", "/api/tasks/{id}", "/api/tasks/{id}/{op}", "/api/events")


def route_of(path: str) -> str:
    """A path as a bounded label: ids never become label values."""
    if path in ("/", "/api/tasks", "/api/events", "/metrics", "/healthz"):
        return path
    if path.startswith("/api/tasks/"):
        return "/api/tasks/{id}/{op}" if "/" in path[len("/api/tasks/") :] else "/api/tasks/{id}"
    if path.startswith("/static/"):
        return "/static"
    return "other"


class Metrics:
    def __init__(self, hub: Any) -> None:
        disable_created_metrics()  # *_created series: noise for these counters
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pulse_web_requests", "HTTP requests answered", ["route", "code"], registry=r
        )
        self.seconds = Histogram(
            "pulse_web_request_seconds", "Time to the response's start", ["route"], registry=r
        )
        streams = Gauge("pulse_web_event_streams", "Open event streams (pages)", registry=r)
        streams.set_function(lambda: len(hub.pages))
        r.register(_EventsRead(hub))
        up = Gauge("pulse_web_redis_up", "1 when the stream reader reaches Redis", registry=r)
        up.set_function(lambda: 1 if hub.healthy else 0)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: Any) -> Any:
        """An ASGI wrapper counting each HTTP response by route and status code."""

        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            route = route_of(scope["path"])
            start = time.perf_counter()

            async def counting_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    self.requests.labels(route, str(message["status"])).inc()
                    self.seconds.labels(route).observe(time.perf_counter() - start)
                await send(message)

            await app(scope, receive, counting_send)

        return wrapped


class _EventsRead:
    """The hub's count of events read, taken at scrape time (the reader thread counts)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def collect(self) -> Any:
        yield CounterMetricFamily(
            "pulse_web_events_read", "Events read from the stream", value=self.hub.events_read
        )
