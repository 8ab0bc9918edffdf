"""`pulse watch` as a process: without a terminal it prints one plain line per event."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time


def test_watch_prints_events_as_they_happen(pulse_env):
    def pulse(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "pulse", *args],
            env=pulse_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    task = pulse("create", "before", "a")  # exists before the watch: its id can be watched
    watch = subprocess.Popen(
        [sys.executable, "-m", "pulse", "watch"],
        env=pulse_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout], daemon=True).start()
    try:
        time.sleep(1.0)  # let it subscribe: pub/sub has no history
        pulse("heartbeat", task, "\x1b[31mred\x1b[0m half")
        pulse("done", task, "ok")
        got = [lines.get(timeout=20) for _ in range(2)]  # a missed event fails, never hangs
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    assert f"heartbeat {task} 💓 [0/1] a: red half" in got[0]  # escape codes stripped
    assert f"done {task} 🎉 [before] Finished!" in got[1]
