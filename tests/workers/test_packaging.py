"""The workers install as ``pulse_workers`` (``workers/`` mapped by setuptools' package-dir):
the wheel holds them with their Lua files and no top-level ``workers``, and ``pulse-relay``
points at them. (An editable install is what the suite itself runs on.)"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_the_workers_as_pulse_workers(tmp_path):
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        str(tmp_path),
        str(ROOT),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("live_task_pulse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("workers/") for n in names)
    for lua in ("lease", "read", "finish", "dead", "include/holds"):
        assert f"pulse_workers/scripts/{lua}.lua" in names
    assert "pulse_workers/sinks/telegram.py" in names and "pulse/scripts/stall.lua" in names
    [entry] = [n for n in names if n.endswith("entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    assert "pulse-relay = pulse_workers.cli:main" in scripts
