"""``pulse-relay``: run the relay (or the central mirror), or look at lag and dead letters."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import pulse
from pulse import Feed, Mirror, Settings, check_namespace, group_positions, redis_client
from pulse.errors import BadValue, PulseError

from .metrics import Metrics
from .mirror import MirrorWorker
from .relay import Relay, RelayConfig, markers
from .relay import redrive as redrive_dead_letters
from .sinks import Sink, open_sink
from .state import RelayState

log = logging.getLogger("pulse.relay")


def _env_number(name: str, default: float, low: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= low or value == float("inf"):
        raise BadValue(f"{name}={raw!r} is not a number of at least {low:g}")
    return value


def _sinks(urls: tuple[str, ...], settings: Settings, state: RelayState) -> list[Sink]:
    # the chat sinks keep their message ids in Redis (state.get/set), per namespace
    return [
        open_sink(u, memory=state, settings=settings)
        for u in urls or settings.sinks or ("console://",)
    ]


def _check(
    client: Any, state: RelayState, group: str, only: list[str] | None, max_lag: int | None
) -> tuple[dict[str, Any], bool]:
    """One namespace's report and whether it is healthy: a relay holds the lease (for a
    relay group) and no sink is more than ``max_lag`` entries behind."""
    ns, prefix = state.namespace, f"{group}:"
    names = [n.removeprefix(prefix) for n in group_positions(client, ns) if n.startswith(prefix)]
    sinks = sorted(set(names if only is None else only))
    lags = {n: Feed(client, ns, prefix + n, "check").lag() for n in sinks}
    dead = state.dead_counts()
    for name, lag in lags.items():
        lag["dead_letters"] = dead.get(name, 0)
    mirror = group != "relay" and not lags
    if mirror:  # the central mirror's group itself
        lags = {group: Feed(client, ns, group, "check").lag()}
        lags[group]["dead_letters"] = dead.get(f"mirror:{group}", 0)
    holder = None if mirror else state.holder()
    behind = [
        n
        for n, x in lags.items()
        if max_lag is not None and x["pending"] + x["undelivered"] > max_lag
    ]
    ok = (mirror or holder is not None) and not behind
    report = {
        "namespace": ns,
        "active": holder.rsplit(":", 1)[0] if holder else None,
        "dead_letters": sum(dead.values()),
        "sinks": lags,
        "behind": behind,
        "ok": ok,
    }
    return report, ok


def _check_text(report: dict[str, Any]) -> str:
    def line(figures: dict[str, Any]) -> str:
        return " ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        )

    active = report["active"] or "none (no relay holds the lease)"
    head = f"{report['namespace']}: active={active} dead_letters={report['dead_letters']}"
    if report["behind"]:
        head += f" behind={','.join(report['behind'])}"
    return "\n".join([head, *(f"  {sink}: {line(lag)}" for sink, lag in report["sinks"].items())])


def _on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and Ctrl-C finish the work in hand, then the process exits."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(pulse.__version__, "--version", prog_name="pulse-relay")
@click.option(
    "--sink",
    "sink_urls",
    multiple=True,
    metavar="URL",
    help="Where to push (repeatable) [PULSE_SINKS, else console://].",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace to relay (repeatable) [PULSE_NAMESPACE].",
)
@click.option("--url", help="Redis URL [PULSE_REDIS_URL]; unset: the embedded server.")
@click.option("--group", default="relay", show_default=True, help="Relay group.")
@click.option("--name", help="Consumer name [host-pid].")
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=0.5),
    help="A standby takes over this long after the active relay died "
    "[PULSE_RELAY_LEASE_SECONDS, else 10].",
)
@click.option(
    "--in-flight",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Pushes in flight per sink (of different tasks).",
)
@click.option(
    "--tries",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Tries per push before it goes to the dead letters.",
)
@click.option(
    "--backoff",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="First retry delay in seconds; doubles each try, with jitter.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on this port [PULSE_METRICS_PORT].",
)
@click.option(
    "--mirror",
    "mirror_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Instead of pushing, keep DIR/NAMESPACE/ID.json with every task's latest "
    "snapshot (consumer group 'mirror').",
)
@click.option(
    "--claim-idle",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Mirror: seconds before a dead mirror worker's entries are taken over.",
)
@click.option("--check", is_flag=True, help="Print lag and dead letters; exit 1 if unhealthy.")
@click.option(
    "--max-lag",
    type=click.IntRange(min=0),
    metavar="N",
    help="With --check: unhealthy when a sink is more than N entries behind.",
)
@click.option("--dead-letters", is_flag=True, help="List dead letters, then exit.")
@click.option("--redrive", is_flag=True, help="Send dead letters again, then exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG.")
def main(
    sink_urls: tuple[str, ...],
    namespaces: tuple[str, ...],
    url: str | None,
    group: str,
    name: str | None,
    lease_seconds: float | None,
    in_flight: int,
    tries: int,
    backoff: float,
    metrics_port: int | None,
    mirror_dir: str | None,
    claim_idle: float,
    check: bool,
    max_lag: int | None,
    dead_letters: bool,
    redrive: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Push every event of a namespace to chat sinks, in order, throttled, with stall alerts.
    Run several for a namespace: one is active, the others stand by."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        base = Settings.from_env()
        if url:
            base = base.replace(redis_url=url)
        names = [check_namespace(n) for n in namespaces] or [base.namespace]
        settings = [base.replace(namespace=n) for n in dict.fromkeys(names)]
        client = redis_client(base)
        mirror_group = "mirror" if group == "relay" else group
        states = [
            RelayState(
                client, s.namespace, mirror_group if mirror_dir else group, ttl=s.retention_seconds
            )
            for s in settings
        ]
        if check:
            only = None
            if sink_urls or base.sinks:  # a sink no longer relayed keeps its group: not checked
                probe = _sinks(sink_urls, base, states[0])
                only = markers(probe)
                for sink in probe:
                    sink.close()
            reports, healthy = [], True
            for state in states:
                report, ok = _check(
                    client, state, mirror_group if mirror_dir else group, only, max_lag
                )
                reports.append(report)
                healthy = healthy and ok
            if as_json:
                click.echo(json.dumps({"ok": healthy, "namespaces": reports}, ensure_ascii=False))
            else:
                click.echo("\n".join(_check_text(r) for r in reports))
            sys.exit(0 if healthy else 1)
        if dead_letters:
            letters = [(st.namespace, d) for st in states for d in st.dead_letters()]
            if as_json:
                doc = [{"namespace": ns, **d.to_dict()} for ns, d in letters]
                click.echo(json.dumps({"count": len(doc), "dead_letters": doc}, ensure_ascii=False))
                return
            for ns, d in letters:
                task = d.event.task["taskId"] if d.event else "(does not parse)"
                kind = d.event.kind if d.event else "?"
                click.echo(f"{ns} {d.id} {d.sink} {kind} {task}: {d.error}")
            click.echo(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
            return
        consumer = name or f"{socket.gethostname()}-{os.getpid()}"
        stopping = threading.Event()
        _on_signals(stopping.set)
        if mirror_dir:
            workers = [
                MirrorWorker(
                    Feed(client, st.namespace, mirror_group, consumer),
                    Mirror(Path(mirror_dir), st.namespace),
                    st,
                    claim_idle=claim_idle,
                    stopping=stopping,
                )
                for st in states
            ]
            _run_all([w.run for w in workers], stopping)
            return
        if redrive:
            sent = failing = 0
            for s, st in zip(settings, states, strict=True):
                sinks = _sinks(sink_urls, s, st)
                a, b = redrive_dead_letters(st, sinks, s.lang)
                sent, failing = sent + a, failing + b
                for sink in sinks:
                    sink.close()
            if as_json:
                click.echo(json.dumps({"redriven": sent, "still_failing": failing}))
            else:
                click.echo(f"redriven {sent}, still failing {failing}")
            sys.exit(1 if failing else 0)
        lease = lease_seconds or _env_number("PULSE_RELAY_LEASE_SECONDS", 10.0, 0.5)
        port = metrics_port
        if port is None and os.environ.get("PULSE_METRICS_PORT"):
            port = int(_env_number("PULSE_METRICS_PORT", 0, 0))
        metrics = Metrics(port)
        config = RelayConfig(
            group=group, consumer=consumer, lease_seconds=lease, in_flight=in_flight,
            tries=tries, backoff=backoff,
        )  # fmt: skip
        relays = [
            Relay(client, s, _sinks(sink_urls, s, st), config, metrics)
            for s, st in zip(settings, states, strict=True)
        ]
        log.info(
            "relaying namespace %s as %s/%s to %s", ", ".join(names), group, consumer,
            ", ".join(relays[0].markers),
        )  # fmt: skip
        _run_all([functools.partial(r.run, stopping) for r in relays], stopping)
        metrics.close()
        if any(r.failed for r in relays):
            sys.exit(1)
    except PulseError as e:
        click.echo(f"pulse-relay: error: {e}", err=True)
        sys.exit(e.exit_code)


def _run_all(jobs: list[Callable[[], Any]], stopping: threading.Event) -> None:
    """Each job in a thread of its own (one per namespace) until ``stopping``; the main
    thread waits, so that signals reach their handler."""
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.2)
    stopping.set()
