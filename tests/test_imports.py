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
    "pulse_workers",
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
        "import sys, pulse.cli.app, pulse.events, pulse.cli.watch, pulse.connection; "
        "print(any(m in sys.modules for m in ('workers', 'pulse_workers')))"
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
def test_the_workers_api_loads_lazily():
    """``import pulse`` (every CLI call) loads none of what the workers take from it."""
    code = (
        "import sys, pulse; before = set(sys.modules); pulse.Feed, pulse.redis_client; "
        "print(sorted(m for m in ('pulse.events', 'pulse.connection') if m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['pulse.connection', 'pulse.events']"


def test_the_workers_install_under_a_name_that_cannot_clash():
    """``workers/`` installs as ``pulse_workers`` (a top-level ``workers`` is taken on the
    package index); ``pulse-relay`` runs from it, with its Lua files."""
    code = "import pulse_workers.state as s, sys; print(s._LEASE.sha, 'workers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    sha, plain = out.stdout.split()
    assert len(sha) == 40 and plain == "False"
    version = subprocess.run(
        [sys.executable, "-m", "pulse_workers", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("pulse-relay, version ")
