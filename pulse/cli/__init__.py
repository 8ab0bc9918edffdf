"""The ``pulse`` command: ``main`` runs the hot update verbs through a small parser and
everything else (help, status, cleanup, ...) through the click app."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    from .fast import parse

    parsed = parse(argv)
    if parsed is None:
        from .app import cli

        cli.main(args=argv, prog_name="pulse", standalone_mode=False)
        return
    from .fast import run

    run(*parsed)


def entry() -> None:
    """Console script: every failure is one line on stderr and an exit code, no traceback."""
    from ..errors import PulseError

    code = 0
    try:
        main()
    except PulseError as e:
        sys.stderr.write(f"pulse: error: {e}\n")
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 1
    except OSError as e:  # a folder pulse must write and cannot: say which, and what to set
        sys.stderr.write(f"pulse: error: {_folder_error(e)}\n")
        code = 1
    except Exception as e:  # noqa: BLE001
        if type(e).__module__.startswith("click"):
            code = _click_error(e)
        elif os.environ.get("PULSE_DEBUG"):
            raise
        else:
            sys.stderr.write(f"pulse: error: {type(e).__name__}: {e}\n")
            code = 1
    sys.stdout.flush()
    sys.exit(code)


def _folder_error(e: OSError) -> str:
    where = str(e.filename or "")
    what = f"cannot write {where}: {e.strerror or e}" if where else str(e.strerror or e)
    pulse_dir = os.environ.get("PULSE_DIR") or os.environ.get("TASK_PULSE_DIR")
    if pulse_dir and where.startswith(os.path.expanduser(pulse_dir)):
        return f"{what} (set PULSE_DIR to a folder you can write)"
    return (
        f"{what} (set PULSE_DIR for the mirror, and XDG_DATA_HOME or HOME for the embedded "
        "server's data, to folders you can write; or PULSE_REDIS_URL to use a Redis of yours)"
    )


def _click_error(e: Exception) -> int:
    import click

    # bare `pulse` (click 8.2+): the help, as is
    if isinstance(e, click.ClickException) and type(e).__name__ == "NoArgsIsHelpError":
        sys.stderr.write(f"{e.format_message()}\n")
        return e.exit_code
    if isinstance(e, click.exceptions.UsageError):
        where = f"pulse {e.ctx.command.name} --help" if e.ctx and e.ctx.parent else "pulse --help"
        sys.stderr.write(f"pulse: usage: {e.format_message()} (see '{where}')\n")
        return e.exit_code
    if isinstance(e, click.exceptions.ClickException):
        sys.stderr.write(f"pulse: error: {e.format_message()}\n")
        return e.exit_code
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code
    if isinstance(e, click.exceptions.Abort):
        return 130
    sys.stderr.write(f"pulse: error: {e}\n")
    return 1
