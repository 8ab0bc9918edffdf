"""`pulse watch` as a process: without a terminal it prints one plain line per event."""

from __future__ import annotations

import subprocess
import sys
import time


def test_watch_prints_events_as_they_happen(pulse_env):
    def pulse(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "pulse", *args], env=pulse_env,
                              capture_output=True, text=True, check=True).stdout.strip()

    task = pulse("create", "before", "a")  # exists before the watch: its id can be watched
    watch = subprocess.Popen([sys.executable, "-m", "pulse", "watch"], env=pulse_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # let it subscribe: pub/sub has no history
        pulse("heartbeat", task, "\x1b[31mred\x1b[0m half")
        pulse("done", task, "ok")
        lines = [watch.stdout.readline() for _ in range(2)]
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    assert f"heartbeat {task} 💓 [0/1] a: red half" in lines[0]  # escape codes stripped
    assert f"done {task} 🎉 [before] Finished!" in lines[1]
