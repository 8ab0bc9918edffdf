"""PULSE_TZ unset: the system's zone, resolved per timestamp, so a relay or a client started
in winter prints summer times with the summer offset (not the offset it started with)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
from datetime import datetime
from pulse.settings import Settings
tz = Settings.from_env({}).tz  # made in "winter" (whatever today is): no fixed offset kept
for ts in (1772000000, 1784000000):  # February and July 2026
    print(datetime.fromtimestamp(ts, tz).isoformat())
print(datetime(2026, 7, 1, 12, tzinfo=tz).utcoffset())
"""


def test_the_system_zone_follows_daylight_saving():
    env = {"TZ": "America/New_York", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "2026-02-25T01:13:20-05:00"
    assert out[1] == "2026-07-13T23:33:20-04:00"
    assert out[2] == "-1 day, 20:00:00"
