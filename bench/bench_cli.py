"""Wall time of one ``pulse next`` / ``pulse heartbeat`` call against the seed skill's script.

Each call is a new process, as when an agent runs it: the installed ``pulse`` console script
(PULSE_REDIS_URL at this run's redis-server, PULSE_DIR in a temp dir), against
``seed_task_pulse.py`` beside this file (stdlib only: read the task JSON, change it, write it
back) run by the same interpreter. Calls are interleaved (pulse, seed, pulse, ...) with
``python -c pass`` as a third, for the interpreter's own start-up. Tasks have MAX_STEPS steps
and a fresh one is taken before the steps run out.

    python bench/bench_cli.py [--quick] [--importtime] [--calls N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from _common import add_pin_option, median, ratio_line, redis_server

import pulse
from pulse.model import MAX_STEPS

HERE = Path(__file__).resolve().parent
PY = sys.executable
_QUIET = {"capture_output": True, "text": True}


def pulse_script() -> str:
    beside = Path(PY).parent / "pulse"  # the venv's console script, else whatever PATH has
    found = str(beside) if beside.is_file() else shutil.which("pulse")
    if not found:
        sys.exit("no `pulse` console script: pip install -e . first")
    return found


class Tasks:
    """Hands out a running task id per call, taking a new task before its steps run out."""

    def __init__(self, make: Callable[[], str]) -> None:
        self.make, self.id, self.left = make, "", 0

    def take(self, advances: bool) -> str:
        if self.left < 2:
            self.id, self.left = self.make(), MAX_STEPS
        self.left -= advances
        return self.id


def run(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return took * 1000


def importtime(argv: Callable[[], list[str]], env: dict[str, str], times: int, top=15) -> None:
    """Median self and cumulative import time per module over ``times`` runs of ``argv()``."""
    self_us: dict[str, list[int]] = defaultdict(list)
    cumul_us: dict[str, list[int]] = defaultdict(list)
    depth: dict[str, int] = {}
    for _ in range(times):
        out = subprocess.run(argv(), env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, **_QUIET)
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            own, cumulative, name = line[len("import time:") :].split("|")
            module = name.strip()
            depth[module] = (len(name) - len(name.lstrip()) - 1) // 2
            self_us[module].append(int(own))
            cumul_us[module].append(int(cumulative))
    total = sum(median(v) for v in self_us.values()) / 1000
    print(f"\n-X importtime of `pulse next`, median of {times} runs: {total:.1f} ms importing")
    print(f"{len(self_us)} modules; top-level imports by cumulative time (ms):")
    tops = sorted((m for m in depth if depth[m] == 0), key=lambda m: -median(cumul_us[m]))
    for m in tops[:top]:
        print(f"  {median(cumul_us[m]) / 1000:7.2f}  {m}")
    print("modules by their own (self) time (ms):")
    for m in sorted(self_us, key=lambda m: -median(self_us[m]))[:top]:
        print(f"  {median(self_us[m]) / 1000:7.2f}  {'  ' * depth[m]}{m}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 calls each instead of 40")
    ap.add_argument("--calls", type=int, help="calls of each kind (at least 30 for a figure)")
    ap.add_argument("--importtime", action="store_true", help="top imports of `pulse next`")
    add_pin_option(ap)
    args = ap.parse_args()
    calls = args.calls or (10 if args.quick else 40)

    with redis_server(args.pin) as server:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "TASK_PULSE_"))}
        mirror, seed_dir = server.work / "mirror", server.work / "seed"
        pulse_env = {**base, "PULSE_REDIS_URL": server.url, "PULSE_DIR": str(mirror)}
        seed_env = {**base, "TASK_PULSE_DIR": str(seed_dir)}
        client = pulse.connect(server.url, dir=mirror)
        steps = [f"step {i}" for i in range(1, MAX_STEPS + 1)]
        seed = [PY, str(HERE / "seed_task_pulse.py")]
        make_seed = [*seed, "create", "bench cli", *steps]
        pulse_tasks = Tasks(lambda: client.create("bench cli", steps).id)
        seed_tasks = Tasks(lambda: subprocess.run(make_seed, env=seed_env, **_QUIET).stdout.strip())
        cmd = [pulse_script()]
        kinds = {  # name: (argv for a task id, env, tasks, advances a step)
            "python -c pass": (lambda _: [PY, "-c", "pass"], base, None, False),
            "seed next": (lambda t: [*seed, "next", t, "did it"], seed_env, seed_tasks, True),
            "pulse next": (lambda t: [*cmd, "next", t, "did it"], pulse_env, pulse_tasks, True),
            "seed heartbeat": (lambda t: [*seed, "heartbeat", t, "50%"], seed_env, seed_tasks, 0),
            "pulse heartbeat": (lambda t: [*cmd, "heartbeat", t, "50%"], pulse_env, pulse_tasks, 0),
        }

        def call(name: str) -> float:
            argv, env, tasks, advances = kinds[name]
            return run(argv(tasks.take(advances) if tasks else ""), env)

        print(f"# pulse: {cmd[0]}; seed: {seed[1]}; interpreter: {PY}")
        print(f"# {calls} calls of each kind, interleaved, after 3 warm-up calls each")
        for name in kinds:
            for _ in range(3):
                call(name)
        ms: dict[str, list[float]] = {name: [] for name in kinds}
        for i in range(calls):
            names = list(kinds)
            for name in names[i % len(names) :] + names[: i % len(names)]:
                ms[name].append(call(name))

        print(f"\n{'call':<18} {'median ms':>9} {'min ms':>7} {'max ms':>7}  minus python -c pass")
        start = median(ms["python -c pass"])
        for name, got in ms.items():
            print(f"{name:<18} {median(got):9.2f} {min(got):7.2f} {max(got):7.2f}", end="")
            print(f"  {median(got) - start:8.2f}")
        print("\nratios pulse/seed (medians; lower is better):")
        for verb in ("next", "heartbeat"):
            p, s = median(ms[f"pulse {verb}"]), median(ms[f"seed {verb}"])
            print(ratio_line(f"pulse {verb} / seed {verb}", p, s, "<= 2.0"))
        print("the same, interpreter start-up taken off both (for context):")
        for verb in ("next", "heartbeat"):
            p, s = median(ms[f"pulse {verb}"]) - start, median(ms[f"seed {verb}"]) - start
            print(ratio_line(f"pulse {verb} / seed {verb}, net", p, s, "<= 2.0"))

        if args.importtime:
            runs = 5 if args.quick else 15
            importtime(lambda: [*cmd, "next", pulse_tasks.take(True), "did it"], pulse_env, runs)
        client.close()


if __name__ == "__main__":
    main()
