"""``pulse-relay``: run the relay, or look at its lag and dead letters."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pulse.connection import open_connection
from pulse.errors import BackendError, PulseError
from pulse.events import Feed, Pushes, group_positions
from pulse.mirror import Mirror
from pulse.settings import Settings, check_namespace
from pulse.transport import Connection, ReplyError

from .mirror import MirrorWorker
from .relay import Relay, RelayConfig, markers
from .relay import redrive as redrive_dead_letters
from .sinks import Sink, open_sink


def _sinks(urls: tuple[str, ...], settings: Settings) -> list[Sink]:
    urls = urls or settings.sinks or ("console://",)
    sinks = []
    for url in urls:
        # each sink runs in its own thread, so it gets its own connection for its memory
        memory = Pushes(
            open_connection(settings), settings.namespace, ttl=settings.retention_seconds
        )
        sinks.append(open_sink(url, memory=memory, settings=settings))
    return sinks


def _check(
    conn: Connection, namespace: str, group: str, only: list[str] | None, dead: int, as_json: bool
) -> str:
    """Lag of the relay's sink groups (``<group>:<sink>``; ``only`` those sinks if given), or
    of ``group`` itself (the mirror's): totals (the most behind sink for the oldest and
    undelivered), then each."""
    prefix = f"{group}:"
    names = sorted(
        n
        for n in group_positions(conn, namespace)
        if n.startswith(prefix) and (only is None or n.removeprefix(prefix) in only)
    )
    lags = {n.removeprefix(prefix): Feed(conn, namespace, n, "check").lag() for n in names}
    total = (
        Feed(conn, namespace, group, "check").lag()
        if not lags
        else {
            "pending": sum(x["pending"] for x in lags.values()),
            "oldest_pending_seconds": max(x["oldest_pending_seconds"] for x in lags.values()),
            "undelivered": max(x["undelivered"] for x in lags.values()),
            "stream_length": next(iter(lags.values()))["stream_length"],
        }
    )
    report: dict[str, Any] = {**total, "dead_letters": dead}

    def line(figures: dict[str, Any]) -> str:
        return " ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        )

    if as_json:
        return json.dumps({**report, "sinks": lags})
    return "\n".join([line(report), *(f"  {sink}: {line(lag)}" for sink, lag in lags.items())])


def _on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and Ctrl-C finish the work in hand, then the process exits."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--sink",
    "sink_urls",
    multiple=True,
    metavar="URL",
    help="Where to push (repeatable) [PULSE_SINKS, else console://].",
)
@click.option("--namespace", help="Namespace to relay [PULSE_NAMESPACE].")
@click.option("--url", help="Redis URL [PULSE_REDIS_URL]; unset: the embedded server.")
@click.option("--group", default="relay", show_default=True, help="Consumer group.")
@click.option("--name", help="Consumer name [host-pid].")
@click.option(
    "--claim-idle",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds before a dead relay's pending events are taken over.",
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
    "--mirror",
    "mirror_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Instead of pushing, keep DIR/NAMESPACE/ID.json with every task's latest "
    "snapshot (consumer group 'mirror').",
)
@click.option("--check", is_flag=True, help="Print lag and dead letters, then exit.")
@click.option("--dead-letters", is_flag=True, help="List dead letters, then exit.")
@click.option("--redrive", is_flag=True, help="Send dead letters again, then exit.")
@click.option("--json", "as_json", is_flag=True, help="Machine output for the checks.")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG.")
def main(
    sink_urls: tuple[str, ...],
    namespace: str | None,
    url: str | None,
    group: str,
    name: str | None,
    claim_idle: float,
    tries: int,
    backoff: float,
    mirror_dir: str | None,
    check: bool,
    dead_letters: bool,
    redrive: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Push every event of a namespace to chat sinks, throttled, with stall alerts."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        settings = Settings.from_env()
        if namespace:
            settings = settings.replace(namespace=check_namespace(namespace))
        if url:
            settings = settings.replace(redis_url=url)
        conn = open_connection(settings)
        pushes = Pushes(conn, settings.namespace, ttl=settings.retention_seconds)
        if check:
            # the sinks given (--sink, PULSE_SINKS): a sink no longer relayed keeps its group
            only = None
            if sink_urls or settings.sinks:
                sinks = _sinks(sink_urls, settings)
                only = markers(sinks)
                for sink in sinks:
                    sink.close()
            dead = pushes.dead_count()
            click.echo(_check(conn, settings.namespace, group, only, dead, as_json))
            return
        if dead_letters:
            letters = pushes.dead_letters()
            for d in letters:
                click.echo(
                    json.dumps(
                        {"id": d.id, "sink": d.sink, "error": d.error, "event": d.event.to_dict()},
                        ensure_ascii=False,
                    )
                    if as_json
                    else f"{d.id} {d.sink} {d.event.kind} {d.event.task['taskId']}: {d.error}"
                )
            if not as_json:
                click.echo(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
            return
        consumer = name or f"{socket.gethostname()}-{os.getpid()}"
        if mirror_dir:
            mirror_group = "mirror" if group == "relay" else group
            worker = MirrorWorker(
                Feed(conn, settings.namespace, mirror_group, consumer),
                Mirror(Path(mirror_dir), settings.namespace),
                claim_idle=claim_idle,
            )
            _on_signals(worker.stop)
            worker.run()
            return
        sinks = _sinks(sink_urls, settings)
        if redrive:
            sent, failing = redrive_dead_letters(pushes, sinks, settings.lang)
            click.echo(f"redriven {sent}, still failing {failing}")
            sys.exit(1 if failing else 0)
        config = RelayConfig(
            group=group, consumer=consumer, claim_idle=claim_idle, tries=tries, backoff=backoff
        )
        relay = Relay(conn, settings, sinks, config)
        _on_signals(relay.stop)
        logging.getLogger("pulse.relay").info(
            "relaying namespace %s as %s/%s to %s",
            settings.namespace,
            group,
            consumer,
            ", ".join(s.name for s in sinks),
        )
        relay.run()
        if relay.failed:
            sys.exit(1)
    except PulseError as e:
        click.echo(f"pulse-relay: error: {e}", err=True)
        sys.exit(e.exit_code)
    except ReplyError as e:  # e.g. NOPERM: a user without the worker's ACL rules
        click.echo(f"pulse-relay: error: Redis refused: {e}", err=True)
        sys.exit(BackendError.exit_code)
