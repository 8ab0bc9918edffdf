"""SKILL.md, the text an agent loads, can never drift from the code: every ```bash block in it
runs here, in order, in one bash session against the test Redis, each command's output is
checked for what that verb prints, and the tasks it leaves are all finished (the skill's own
rule). The front matter keeps the seed skill's triggers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKILL = ROOT / "SKILL.md"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
MARK = "@@pulse-doc-line {}@@"
PUSH_ICONS = ("🚀", "✅", "💓", "🎉", "❌", "⚠️", "▶️", "⏸")
# what the first line of each verb's plain output looks like
FIRST_LINE = {
    "next": r"^(\[\d+/\d+\] |🎉)",
    "heartbeat": r"^💓 \[\d+/\d+\]",
    "wait": r"^⏸ \[\d+/\d+\]",
    "history": r"^(Deploy site|no history yet)",
    "done": r"^🎉 ",
    "error": r"^❌ ",
    "status": r"^(🔄|✅|❌|⚠️|no tasks)",
    "cleanup": r"^removed \d+ finished task",
    "recover": r"^restored \d+ task",
    "sync": r"\d+",
}


def _text() -> str:
    return SKILL.read_text(encoding="utf-8")


def _blocks() -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in FENCE.finditer(_text())]


def _commands() -> list[str]:
    """The shell lines of the bash blocks, in order (no blank lines or comments)."""
    lines = []
    for lang, body in _blocks():
        if lang == "bash":
            for line in body.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    assert not line.rstrip().endswith("\\"), "one command per line, please"
                    lines.append(line)
    return lines


def _verbs() -> set[str]:
    from pulse.cli.app import cli

    return set(cli.commands)


def _pulse_verb(command: str) -> str | None:
    """The verb of the ``pulse`` call in a shell line (global options skipped)."""
    m = re.search(r"(?:^|\$\(|\s)pulse((?:\s+--\w+(?:\s+\w+)?)*?)\s+([a-z]+)\b", command)
    return m.group(2) if m else None


def _bin_dir(tmp_path: Path) -> str:
    """Where ``pulse`` is: the venv of this interpreter, else a shim running this checkout."""
    venv_bin = Path(sys.executable).parent
    if (venv_bin / "pulse").exists():
        return str(venv_bin)
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "pulse"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pulse "$@"\n')
    shim.chmod(0o755)
    return str(shims)


def test_front_matter_keeps_the_seed_triggers() -> None:
    text = _text()
    assert text.startswith("---\n")
    front, _, body = text[4:].partition("\n---\n")
    fields = dict(line.split(": ", 1) for line in front.splitlines())
    assert fields["name"] == "live-task-pulse"
    description = json.loads(fields["description"])
    for trigger in (">30s", ">2 tool calls", "what's running", "task status", "任务进度"):
        assert trigger in description, trigger
    assert "MANDATORY" in description
    # the seed's spirit and length: one screenful of rules and examples, not a manual
    assert 90 <= len(text.splitlines()) <= 140
    for section in ("## Mandatory Rules", "## Status Icons", "## Environment"):
        assert section in body


def test_every_pulse_command_in_the_doc_is_a_real_verb() -> None:
    verbs = _verbs()
    commands = _commands()
    used = {_pulse_verb(c) for c in commands} - {None}
    assert used <= verbs, used - verbs
    assert {"create", "next", "heartbeat", "done", "error", "status"} <= used
    assert any("--push" in c for c in commands)
    # no pulse command hides in another kind of block, where nothing would run it
    for lang, body in _blocks():
        if lang != "bash":
            assert not re.search(r"^\s*(\w+=\$\()?pulse\s", body, re.M), body
    # and the inline ones name real verbs and options too
    for span in re.findall(r"`(pulse [^`]*)`", _text()):
        for call in span.split("/"):
            verb = _pulse_verb(call) or call.split()[-1]
            assert verb in verbs, span


def test_every_command_in_the_doc_runs(pulse_env: dict[str, str], tmp_path: Path) -> None:
    commands = _commands()
    # the task ids the doc keeps (TASK_ID=$(pulse create ...)); OUT-like helpers are not ids
    assignments = sorted({m[1] for c in commands if (m := re.match(r"^(\w+_ID)=\$\(", c))})
    assert assignments, "the doc should keep its task ids in variables"
    script = ["set -euo pipefail"]
    for i, command in enumerate(commands):
        script += [f"echo '{MARK.format(i)}'", command]
    script.append(f"echo '{MARK.format('vars')}'")
    script += [f'echo "{name}=${{{name}}}"' for name in assignments]

    env = {**pulse_env, "PATH": os.pathsep.join([_bin_dir(tmp_path), pulse_env["PATH"]])}
    with tempfile.TemporaryDirectory() as cwd:
        run = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, f"stderr:\n{run.stderr}\nstdout:\n{run.stdout}"
    assert "Traceback" not in run.stderr and "error" not in run.stderr.lower(), run.stderr

    parts = re.split(r"^@@pulse-doc-line (\w+)@@\n", run.stdout, flags=re.M)
    outputs = dict(zip(parts[1::2], parts[2::2], strict=True))
    variables = dict(line.split("=", 1) for line in outputs.pop("vars").splitlines())
    assert set(variables) == set(assignments)
    for name, value in variables.items():
        assert re.fullmatch(r"[\w.-]+-\d{8}-\d{6}-[0-9a-f]{4}", value), (name, value)

    for i, command in enumerate(commands):
        out = outputs[str(i)]
        where = f"{command!r} printed {out!r}"
        verb = _pulse_verb(command)
        if re.match(r"^\w+=\$\(", command):
            assert out == "", where  # the id (and push text) went into the variable
        elif "--json" in command:
            doc = json.loads(out)
            if "taskId" in doc:  # status ID --json: that task's snapshot
                assert doc["taskId"] in variables.values(), where
        elif "--push" in command or command.startswith("tail -n +2"):
            lines = out.rstrip("\n").splitlines()
            assert lines and lines[0].startswith(PUSH_ICONS) and len(lines) <= 3, where
        elif verb in FIRST_LINE:
            assert re.search(FIRST_LINE[verb], out), where
        else:
            assert out.strip(), where

    # the doc's own rule: every task it started is finished, with done or error
    from pulse.client import Client
    from pulse.settings import Settings

    with Client(Settings.from_env(pulse_env)) as client:
        statuses = {name: client.get(tid)["status"] for name, tid in variables.items()}
    assert "running" not in statuses.values(), statuses
    assert {"done", "error"} == set(statuses.values()), statuses


def test_doc_examples_show_real_push_texts(pulse_env: dict[str, str], run_pulse) -> None:
    """The ``message(...)`` example is what ``create --push`` prints for the same task."""
    example = next(body for lang, body in _blocks() if lang == "" and "message(" in body)
    message = re.search(r'message="([^"]*)"', example)
    assert message, example
    shown = message[1].replace("\\n", "\n")
    name = re.search(r"\[(.*?)\]", shown)
    steps = re.search(r"📋 \d+ steps: (.*)", shown)
    assert name and steps, shown
    env = {**pulse_env, "PULSE_LANG": "en"}
    made = run_pulse(env, "create", "--push", name[1], *steps[1].split(" → "))
    assert made.returncode == 0, made.stderr
    assert made.stdout.split("\n", 1)[1].rstrip("\n") == shown
