"""The click app: every verb with its help text. ``fast`` parses the update verbs the same way
without importing click; this app takes help, usage errors and the other verbs."""

from __future__ import annotations

import click

from . import commands
from .commands import Globals

_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
_push = click.option(
    "--push", is_flag=True, help="Print the push text of this update, for agents without a relay."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--namespace", envvar="PULSE_NAMESPACE", help="Tenant/workspace [PULSE_NAMESPACE].")
@click.option("--lang", type=click.Choice(["en", "zh"]), help="Language of output [PULSE_LANG].")
@click.option("--url", help="Redis URL [PULSE_REDIS_URL]; unset: the embedded server.")
@click.version_option(package_name="live-task-pulse")
@click.pass_context
def cli(ctx: click.Context, namespace: str | None, lang: str | None, url: str | None) -> None:
    """Track multi-step tasks on Redis and push their progress to chat."""
    ctx.obj = Globals(namespace, lang, url)


@cli.command()
@click.argument("name")
@click.argument("steps", nargs=-1, required=True)
@click.option(
    "--stall",
    type=float,
    help="Seconds without update before the task counts as stalled [PULSE_STALL_SECONDS].",
)
@_json
@_push
@click.pass_obj
def create(
    g: Globals, name: str, steps: tuple[str, ...], stall: float | None, as_json: bool, push: bool
) -> None:
    """Create a task; prints its id. The first step starts running."""
    commands.create(g, name, list(steps), stall, as_json, push)


@cli.command("next")
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1)
@_json
@_push
@click.pass_obj
def next_(g: Globals, task_id: str, message: tuple[str, ...], as_json: bool, push: bool) -> None:
    """Finish the running step (with MESSAGE) and start the next one."""
    commands.update(g, "next", task_id, list(message), None, as_json, push)


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1)
@click.option("--progress", type=float, help="Progress of the running step, 0-100.")
@_json
@_push
@click.pass_obj
def heartbeat(
    g: Globals,
    task_id: str,
    message: tuple[str, ...],
    progress: float | None,
    as_json: bool,
    push: bool,
) -> None:
    """Say the running step is alive, with a message and progress."""
    commands.update(g, "heartbeat", task_id, list(message), progress, as_json, push)


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("result", nargs=-1)
@_json
@_push
@click.pass_obj
def done(g: Globals, task_id: str, result: tuple[str, ...], as_json: bool, push: bool) -> None:
    """Finish the running step and the task, with its RESULT."""
    commands.update(g, "done", task_id, list(result), None, as_json, push)


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1, required=True)
@_json
@_push
@click.pass_obj
def error(g: Globals, task_id: str, message: tuple[str, ...], as_json: bool, push: bool) -> None:
    """Fail the running step and the task with MESSAGE."""
    commands.update(g, "error", task_id, list(message), None, as_json, push)


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("question", nargs=-1, required=True)
@_json
@_push
@click.pass_obj
def wait(g: Globals, task_id: str, question: tuple[str, ...], as_json: bool, push: bool) -> None:
    """The task waits for a person's answer to QUESTION: never stalled meanwhile.

    Heartbeats keep the wait; the next `next`, `done` or `error` ends it."""
    commands.update(g, "wait", task_id, list(question), None, as_json, push)


@cli.command()
@click.argument("name", required=False)
@_json
@click.pass_obj
def history(g: Globals, name: str | None, as_json: bool) -> None:
    """Per step of tasks named NAME (every name without it): runs, median and 95th
    percentile duration and longest quiet spell, what ETAs and learned stall times use."""
    commands.history(g, name, as_json)


@cli.command()
@click.argument("task_id", metavar="[ID]", required=False)
@click.option("--running", "view", flag_value="running", help="Only running tasks.")
@click.option("--stalled", "view", flag_value="stalled", help="Only stalled tasks.")
@click.option("--all", "view", flag_value="all", help="Every task kept.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many tasks, newest first (0: no limit).",
)
@_json
@click.pass_obj
def status(g: Globals, task_id: str | None, view: str | None, limit: int, as_json: bool) -> None:
    """Show one task, or running and recently finished ones (stalled ones marked ⚠️)."""
    commands.status(g, task_id, view or "default", limit, as_json)


@cli.command()
@click.argument("task_id", metavar="[ID]", required=False)
@click.pass_obj
def watch(g: Globals, task_id: str | None) -> None:
    """Live view of the namespace's tasks (or one task); Ctrl-C ends it."""
    from .watch import watch as run_watch

    run_watch(g, task_id)


@cli.command()
@click.option(
    "--days",
    type=float,
    help="Remove tasks finished over this many days ago [PULSE_RETENTION_DAYS].",
)
@_json
@click.pass_obj
def cleanup(g: Globals, days: float | None, as_json: bool) -> None:
    """Remove finished tasks from Redis and the mirror."""
    commands.cleanup(g, days, as_json)


@cli.command()
@click.option(
    "--from",
    "folder",
    type=click.Path(exists=True, file_okay=False),
    help="A mirror folder or the seed skill's task folder [PULSE_DIR/NAMESPACE].",
)
@_json
@click.pass_obj
def recover(g: Globals, folder: str | None, as_json: bool) -> None:
    """Load mirrored snapshots into Redis where it lacks them or holds older versions."""
    commands.recover(g, folder, as_json)


@cli.command()
@click.option(
    "--conflicts",
    is_flag=True,
    help="List the journaled updates that no longer fit their task (another host moved it on).",
)
@_json
@click.pass_obj
def sync(g: Globals, conflicts: bool, as_json: bool) -> None:
    """Replay updates kept in the local journal while Redis was unreachable."""
    commands.sync(g, as_json, conflicts)


@cli.command()
@click.argument("action", type=click.Choice(["status", "start", "stop"]), default="status")
@_json
@click.pass_obj
def server(g: Globals, action: str, as_json: bool) -> None:
    """Show, start or stop the embedded Redis server (used when PULSE_REDIS_URL is unset)."""
    commands.server(g, action, as_json)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="TCP port."
)
@click.pass_obj
def web(g: Globals, host: str, port: int) -> None:
    """Serve the dashboard and the HTTP API of the namespace [PULSE_WEB_TOKEN].

    Without PULSE_WEB_TOKEN it listens on loopback only and refuses writes.
    """
    from ..web.server import serve

    serve(g.settings(), host, port, lang=g.lang)
