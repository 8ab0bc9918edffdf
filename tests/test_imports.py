"""The per-step CLI path stays light: an agent pays its import time on every call."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "redis",
    "click",
    "rich",
    "dataclasses",
    "typing",
    "logging",
    "hashlib",
    "asyncio",
    "ssl",
    "inspect",
    "subprocess",
    "workers",
    # the web stack: only `pulse web` loads it
    "pulse.web",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "anyio",
)


def test_the_update_path_imports_nothing_heavy():
    code = (
        "import sys, json\n"
        "import pulse.cli.fast, pulse.client, pulse.store, pulse.render, pulse.embedded\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_pulse_never_imports_workers():
    code = (
        "import sys, pulse.cli.app, pulse.events, pulse.cli.watch; print('workers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_web_verb_loads_the_web_stack():
    code = (
        "import sys, pulse.cli.app, pulse.client, pulse.events\n"
        "print(sorted(m for m in ('pulse.web', 'starlette', 'uvicorn', 'prometheus_client')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
