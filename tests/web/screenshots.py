"""Takes docs/web-dashboard.png, docs/web-task.png and docs/web-phone.png: a real server,
real tasks made by the CLI, a real headless Chromium. Not a test; run it by hand after
changing the page (it starts a Redis of its own):

    .venv/bin/python -m tests.web.screenshots
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.redis_proc import redis_proc
from tests.web.conftest import chrome, start_web

DOCS = Path(__file__).resolve().parents[2] / "docs"


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with redis_proc() as redis:
        shoot(port, redis.url)


def shoot(port: int, redis_url: str) -> None:
    work = tempfile.mkdtemp(prefix="pulse-shots-")
    env = {**os.environ, "PULSE_NAMESPACE": "team", "PULSE_DIR": work, "PULSE_TZ": "8"}
    env.update(PULSE_REDIS_URL=redis_url)
    env.pop("PULSE_LANG", None)

    def pulse(*args: str, agent: str = "claude-deploy") -> str:
        run = subprocess.run(
            [sys.executable, "-m", "pulse", *args],
            env={**env, "PULSE_AGENT": agent},
            capture_output=True,
            text=True,
            check=True,
        )
        return run.stdout.strip().splitlines()[0] if run.stdout.strip() else ""

    web = start_web(env, port)
    try:
        a = pulse("create", "nightly backup", "dump", "compress", "upload", "verify", agent="cron")
        pulse("next", a, "dumped 12.4 GB in 3m 10s", agent="cron")
        pulse("heartbeat", a, "63% compressed", "--progress", "63", agent="cron")
        b = pulse("create", "release v2.4.0", "build", "test", "package", "publish")
        for message in ("wheel and sdist", "412 passed, 3 skipped", ""):
            pulse("next", b, message) if message else pulse("next", b)
        pulse("done", b, "https://pypi.org/project/example/2.4.0/")
        c = pulse("create", "migrate users", "export", "transform", "import", "--stall", "1",
                  agent="codex-db")  # fmt: skip
        pulse("next", c, "18,204 rows", agent="codex-db")
        d = pulse("create", "crawl docs", "fetch", "parse", "index", agent="research-bot")
        pulse("error", d, "HTTP 503 from docs.example.com after 5 retries", agent="research-bot")
        e = pulse("create", "训练分类模型", "准备数据", "训练", "评估", agent="ml-agent")
        pulse("next", e, "数据集 3.2 万条", agent="ml-agent")
        pulse("heartbeat", e, "epoch 7/20, loss 0.213", "--progress", "35", agent="ml-agent")
        f = pulse("create", "deploy to production", "build", "approve", "roll out")
        pulse("next", f, "image 41 MB")
        pulse("wait", f, "Roll out v2.4.0 to all regions? (yes/no)")
        time.sleep(2.5)  # "migrate users" goes quiet past its 1 s stall time
        desk = chrome(1280, 800)
        try:
            desk.get(web.url + "/")
            time.sleep(2)
            desk.save_screenshot(str(DOCS / "web-dashboard.png"))
            desk.get(f"{web.url}/?task={a}")
            time.sleep(1.5)
            desk.save_screenshot(str(DOCS / "web-task.png"))
        finally:
            desk.quit()
            shutil.rmtree(desk.profile_dir, ignore_errors=True)
        phone = chrome(390, 760, mobile=True, lang="zh-CN")
        try:
            phone.get(f"{web.url}/")
            time.sleep(2)
            phone.save_screenshot(str(DOCS / "web-phone.png"))
        finally:
            phone.quit()
            shutil.rmtree(phone.profile_dir, ignore_errors=True)
    finally:
        web.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
