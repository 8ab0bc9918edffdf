"""docs/reference.md stays true: every verb, relay option and PULSE_ variable it names exists
in the code (or is marked "(being built)"), and every one the code has is named there. The
README links it, and its test command is the one CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "reference.md").read_text()
PLANNED = "(being built)"
NAME = re.compile(r"\b((?:TASK_)?PULSE_[A-Z][A-Z0-9_]*)\b")


def section(title: str) -> str:
    """The text of the doc's ``## title`` section."""
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match, f"docs/reference.md has no section {title!r}"
    return match.group(1)


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| `")]


def help_text(*command: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def cli_verbs() -> set[str]:
    """The verbs ``pulse --help`` lists."""
    commands = help_text("-m", "pulse").split("Commands:", 1)[1]
    return {line.split()[0] for line in commands.splitlines() if line.startswith("  ")}


def code_names() -> set[str]:
    """PULSE_ names in the Python code, less the error codes the Lua scripts reply with."""
    python = "".join(p.read_text() for d in ("pulse", "workers") for p in (ROOT / d).rglob("*.py"))
    scripts = (ROOT / "pulse" / "scripts", ROOT / "workers" / "scripts")
    lua = "".join(p.read_text() for d in scripts for p in d.rglob("*.lua"))
    return set(NAME.findall(python)) - set(NAME.findall(lua))


def test_every_verb_is_documented_and_every_documented_verb_exists() -> None:
    rows = table_rows(section("The `pulse` command"))
    built = {row.split("`")[1].split()[0] for row in rows if PLANNED not in row}
    planned = {row.split("`")[1].split()[0] for row in rows if PLANNED in row}
    verbs = cli_verbs()
    assert verbs - built == set(), "verbs of `pulse --help` that docs/reference.md lacks"
    assert built - verbs == set(), "verbs docs/reference.md calls built that do not exist"
    assert planned & verbs == set(), "built now: drop '(being built)' in docs/reference.md"


def test_every_variable_is_documented_and_every_documented_variable_exists() -> None:
    rows = table_rows(section("Environment"))
    built = {n for row in rows if PLANNED not in row for n in NAME.findall(row.split("|")[1])}
    planned = {n for row in rows if PLANNED in row for n in NAME.findall(row.split("|")[1])}
    in_code = code_names()
    assert in_code - set(NAME.findall(DOC)) == set(), "PULSE_ names docs/reference.md lacks"
    assert built - in_code == set(), "variables docs/reference.md calls built that no code reads"
    assert planned & in_code == set(), "built now: drop '(being built)' in docs/reference.md"
    assert {"PULSE_REDIS_URL", "PULSE_REDIS_SERVER", "TASK_PULSE_DIR"} <= built


def test_every_relay_option_is_documented() -> None:
    text = section("The relay: `pulse-relay`")
    built_part, _, planned_part = text.partition("Being built:")
    documented = set(re.findall(r"`(--[a-z][a-z-]*)", built_part))
    relay_help = help_text("-m", "pulse_workers")
    options = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", relay_help, re.M))
    options.discard("--help")
    assert options - documented == set(), "pulse-relay options docs/reference.md lacks"
    assert documented - options == set(), "options docs/reference.md calls built that are not"
    planned = set(re.findall(r"`(--[a-z][a-z-]*)", planned_part)) - documented  # new options
    assert planned & options == set(), "built now: move them out of 'Being built' in the doc"


def test_the_readme_links_the_reference_not_a_file_outside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/reference.md)" in readme
    assert "../" not in "".join(re.findall(r"\]\(([^)]*)\)", readme))


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"Run the tests.*?```sh\n(.*?)\n```", readme, re.S)
    assert block, "README has no 'Run the tests' command"
    ci = (ROOT / ".ci" / "run").read_text()
    for part in block.group(1).split(" && "):
        assert part.strip() in ci, part
    assert re.search(r"^PULSE_TEST_INDEX=required leg \S+ \.venv/bin/python -m pytest$", ci, re.M)


@pytest.mark.parametrize("kind", ["create", "next", "heartbeat", "done", "error", "stall"])
def test_every_push_kind_built_is_shown(kind: str) -> None:
    assert re.search(rf"^{kind}:\s", section("Push texts"), re.M)


def test_the_options_named_for_each_built_verb_exist() -> None:
    rows = table_rows(section("The `pulse` command"))
    for row in rows:
        if PLANNED in row:
            continue
        usage = row.split("`")[1]
        verb, options = usage.split()[0], set(re.findall(r"--[a-z][a-z-]*", usage))
        shown = help_text("-m", "pulse", verb)
        missing = {o for o in options if o not in shown}
        assert missing == set(), f"`pulse {verb}` has no {missing}"
    intro = section("The `pulse` command").split("|", 1)[0]
    top = help_text("-m", "pulse")
    assert all(o in top for o in re.findall(r"--[a-z][a-z-]*", intro.split("VERB")[0]))
