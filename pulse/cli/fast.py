"""A small parser for the update verbs, the calls an agent makes once per step.

``import click`` alone costs more than a whole seed-skill call, so the hot verbs skip it.
Anything this parser is unsure of (help, an unknown option, a missing argument) goes to
the click app in ``app.py``, which defines the same verbs and options and gives the usage
errors; tests run both parsers on the same arguments.
"""

from __future__ import annotations

from .commands import Globals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# verb: (least positional arguments, options taking a value)
_VERBS: dict[str, tuple[int, tuple[str, ...]]] = {
    "create": (2, ("--stall",)),
    "next": (1, ()),
    "heartbeat": (1, ("--progress",)),
    "done": (1, ()),
    "error": (2, ()),
    "wait": (2, ()),
}
_GLOBAL = ("--namespace", "--lang", "--url")
_FLAGS = ("--json", "--push")


def parse(argv: list[str]) -> tuple[str, Globals, dict[str, Any]] | None:
    """(verb, globals, options) for an update verb call, or None to leave it to click."""
    glob: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].split("=", 1)[0] in _GLOBAL:
        got = _value(argv, i)
        if got is None:
            return None
        glob[argv[i].split("=", 1)[0][2:]], i = got
    if glob.get("lang") not in (None, "en", "zh"):
        return None  # click's choice check refuses it with a usage error
    if i >= len(argv) or argv[i] not in _VERBS:
        return None
    verb = argv[i]
    least, valued = _VERBS[verb]
    opts: dict[str, Any] = {"json": False, "push": False}
    words: list[str] = []
    j = i + 1
    while j < len(argv):
        arg = argv[j]
        name = arg.split("=", 1)[0]
        if arg == "--":
            words += argv[j + 1 :]
            break
        if name in _FLAGS and "=" not in arg:
            opts[arg[2:]] = True
        elif name in valued:
            got = _value(argv, j)
            if got is None:
                return None
            try:
                opts[name[2:]] = float(got[0])
            except ValueError:
                return None
            j = got[1]
            continue
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            words.append(arg)
        j += 1
    if len(words) < least:
        return None
    return verb, Globals(**glob), {**opts, "words": words}


def _value(argv: list[str], i: int) -> tuple[str, int] | None:
    """The value of the option at ``i`` (``--x=v`` or ``--x v``) and the index after it."""
    if "=" in argv[i]:
        return argv[i].split("=", 1)[1], i + 1
    if i + 1 < len(argv):
        return argv[i + 1], i + 2
    return None


def run(verb: str, g: Globals, opts: dict[str, Any]) -> None:
    from . import commands

    words = opts["words"]
    if verb == "create":
        commands.create(g, words[0], words[1:], opts.get("stall"), opts["json"], opts["push"])
    else:
        commands.update(
            g, verb, words[0], words[1:], opts.get("progress"), opts["json"], opts["push"]
        )
