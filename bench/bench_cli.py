"""Wall time of one ``pulse next`` / ``pulse heartbeat`` call against the seed skill's script.

Each call is a new process, as when an agent runs it: the installed ``pulse`` console script
(PULSE_REDIS_URL at this run's redis-server, PULSE_DIR in a temp dir), against
``seed_task_pulse.py`` beside this file (stdlib only: read the task JSON, change it, write it
back) run by the same interpreter. Calls are interleaved (pulse, seed, pulse, ...) with
``python -c pass`` as a third, for the interpreter's own start-up. Tasks have MAX_STEPS steps
and a fresh one is taken before the steps run out.

Python's bytecode cache is switched on for the calls (in a temp dir, PYTHONPYCACHEPREFIX):
a pip-installed pulse has its .pyc files, while the seed script, run as __main__, is compiled
on every call either way. ``--as-is`` keeps this environment's settings instead.

    python bench/bench_cli.py [--quick] [--importtime] [--calls N] [--as-is] [--pin MODE]
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


def importtime(argv: Callable[[], list[str]], env: dict[str, str], times: int) -> None:
    """Median self and cumulative import time per module over ``times`` runs of ``argv()``."""
    own: dict[str, list[int]] = defaultdict(list)  # in first-import order
    cumulative: dict[str, list[int]] = defaultdict(list)
    depth: dict[str, int] = {}
    for _ in range(times):
        out = subprocess.run(argv(), env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, **_QUIET)
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cumul_us, name = line[len("import time:") :].split("|")
            module = name.strip()
            depth[module] = (len(name) - len(name.lstrip()) - 1) // 2
            own[module].append(int(self_us))
            cumulative[module].append(int(cumul_us))
    total = sum(median(v) for v in own.values()) / 1000
    print(f"\n-X importtime of `pulse next`, median of {times} runs: {len(own)} modules,")
    print(f"{total:.1f} ms importing (the profiler inflates this). Modules of 0.5 ms or more,")
    print("in import order (each line: cumulative ms, own ms, module indented under its importer):")
    for m in own:
        if median(cumulative[m]) >= 500:
            print(f"  {median(cumulative[m]) / 1000:6.2f} {median(own[m]) / 1000:6.2f}  ", end="")
            print("  " * depth[m] + m)
    print("top 12 by own time (ms):")
    for m in sorted(own, key=lambda m: -median(own[m]))[:12]:
        print(f"  {median(own[m]) / 1000:6.2f}  {m}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 calls each instead of 40")
    ap.add_argument("--calls", type=int, help="calls of each kind (at least 30 for a figure)")
    ap.add_argument("--importtime", action="store_true", help="top imports of `pulse next`")
    ap.add_argument(
        "--as-is",
        action="store_true",
        help="keep this environment's bytecode settings (default: cache bytecode in a temp dir)",
    )
    add_pin_option(ap)
    args = ap.parse_args()
    calls = args.calls or (10 if args.quick else 40)

    with redis_server(args.pin) as server:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "TASK_PULSE_"))}
        if not args.as_is:  # compiled once, in the warm-up, as an installed package would be
            base.pop("PYTHONDONTWRITEBYTECODE", None)
            base["PYTHONPYCACHEPREFIX"] = str(server.work / "pycache")
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
        kinds = {  # name: (argv before the task id, words after it, env, tasks)
            "python -c pass": ([PY, "-c", "pass"], [], base, None),
            "seed next": ([*seed, "next"], ["did it"], seed_env, seed_tasks),
            "pulse next": ([*cmd, "next"], ["did it"], pulse_env, pulse_tasks),
            "seed heartbeat": ([*seed, "heartbeat"], ["50%"], seed_env, seed_tasks),
            "pulse heartbeat": ([*cmd, "heartbeat"], ["50%"], pulse_env, pulse_tasks),
        }

        def call(name: str) -> float:
            head, tail, env, tasks = kinds[name]
            if tasks is None:
                return run(head, env)
            return run([*head, tasks.take(advances=head[-1] == "next"), *tail], env)

        print(f"# pulse: {cmd[0]}; seed: {seed[1]}; interpreter: {PY}")
        print(f"# {calls} calls of each kind, interleaved, after 3 warm-up calls each")
        if any(name.startswith("__editable__") for name in sys.modules):
            print("# note: editable install: `site` imports its finder (pathlib, re, ...) at")
            print("#   every start, for the seed too; a regular install may show a higher ratio")
        where = base.get("PYTHONPYCACHEPREFIX", "")
        print(f"# bytecode: {'cached in ' + where if where else 'as this environment has it'}")
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
        ratios = {  # title: (pulse/seed from their lists of times, target)
            "ratios pulse/seed (lower is better), medians": (
                lambda p, s: median(p) / median(s),
                "<= 2.0",
            ),
            "median of each round's own ratio (the two run one after the other)": (
                lambda p, s: median([a / b for a, b in zip(p, s, strict=True)]),
                "<= 2.0",
            ),
            "fastest calls (noise only adds time; context)": (lambda p, s: min(p) / min(s), ""),
            "medians less interpreter start-up (context)": (
                lambda p, s: (median(p) - start) / (median(s) - start),
                "",
            ),
        }
        print()
        for title, (ratio, target) in ratios.items():
            print(f"{title}:")
            for verb in ("next", "heartbeat"):
                r = ratio(ms[f"pulse {verb}"], ms[f"seed {verb}"])
                print(ratio_line(f"  pulse {verb} / seed {verb}", r, 1, target))

        if args.importtime:
            runs = 5 if args.quick else 15
            importtime(lambda: [*cmd, "next", pulse_tasks.take(True), "did it"], pulse_env, runs)
        client.close()


if __name__ == "__main__":
    main()
