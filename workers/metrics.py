"""Prometheus metrics of a relay (``PULSE_METRICS_PORT`` / ``--metrics-port``): served by
prometheus_client's own HTTP server on ``/metrics``. Without a port, nothing is served and
the calls cost a dictionary lookup."""

from __future__ import annotations

from typing import Any

from .delivery import Outcome


class Metrics:
    def __init__(self, port: int | None = None, *, host: str = "0.0.0.0") -> None:  # noqa: S104
        self.enabled = port is not None
        if not self.enabled:
            return
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            start_http_server,
        )

        self.registry = CollectorRegistry()
        r = self.registry
        self._pushes = Counter(
            "pulse_pushes",
            "Pushes tried, by sink, event kind and outcome (delivered, failed).",
            ["namespace", "sink", "kind", "outcome"],
            registry=r,
        )
        self._seconds = Histogram(
            "pulse_push_seconds",
            "Time a sink took to take one push.",
            ["namespace", "sink"],
            registry=r,
        )
        self._lag = Gauge(
            "pulse_lag",
            "Entries a sink has not been given or not acknowledged.",
            ["namespace", "sink"],
            registry=r,
        )
        self._dead = Gauge(
            "pulse_dead_letters", "Dead letters of a sink.", ["namespace", "sink"], registry=r
        )
        self._active = Gauge(
            "pulse_relay_active",
            "1 while this relay holds the namespace's lease.",
            ["namespace"],
            registry=r,
        )
        assert port is not None
        self.server: Any = start_http_server(port, addr=host, registry=r)

    def pushed(self, namespace: str, sink: str, kind: str, outcome: Outcome) -> None:
        if self.enabled:
            result = "delivered" if outcome.ok else "failed"
            self._pushes.labels(namespace, sink, kind, result).inc()
            self._seconds.labels(namespace, sink).observe(outcome.seconds)

    def dead(self, namespace: str, sink: str) -> None:
        if self.enabled:
            self._dead.labels(namespace, sink).inc()

    def dead_count(self, namespace: str, sink: str, count: int) -> None:
        if self.enabled:
            self._dead.labels(namespace, sink).set(count)

    def lag(self, namespace: str, sink: str, count: int) -> None:
        if self.enabled:
            self._lag.labels(namespace, sink).set(count)

    def active(self, namespace: str, on: bool) -> None:
        if self.enabled:
            self._active.labels(namespace).set(1 if on else 0)

    def close(self) -> None:
        if self.enabled and isinstance(self.server, tuple):  # (server, thread) since 0.20
            self.server[0].shutdown()
