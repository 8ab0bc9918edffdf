"""The stack's ``web`` service: its definition, and its command, environment and health check
run as local processes (the way tests/test_compose.py runs the others) against the stack's
Redis with its ACL users: an agent's task shows on the API with the stack's token."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.test_compose import (  # noqa: F401 - the fixtures
    REDIS_IMAGE_WORKDIR,
    Stack,
    _free_port,
    _wait,
    compose,
    env_example,
    load_compose,
    stack,
)


def test_web_service_needs_its_token_and_stays_on_loopback(compose: dict[str, Any], env_example):  # noqa: F811
    web = compose["services"]["web"]
    assert web["command"][:2] == ["pulse", "web"]
    assert web["environment"]["PULSE_WEB_TOKEN"] == env_example["PULSE_WEB_TOKEN"]
    assert web["ports"] == ["127.0.0.1:8765:8765"]  # a TLS proxy on the host in front
    assert web["healthcheck"]["test"][0] == "CMD"
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
    assert web["depends_on"] == {"redis": {"condition": "service_healthy"}}
    with pytest.raises(ValueError, match="PULSE_WEB_TOKEN"):
        load_compose({k: v for k, v in env_example.items() if k != "PULSE_WEB_TOKEN"})


def test_web_service_serves_an_agents_task_through_the_worker_acl(stack: Stack, tmp_path: Path):  # noqa: F811
    services = stack.compose["services"]
    base = stack.base_env()
    redis = services["redis"]
    argv = stack.argv("redis", redis["entrypoint"] + redis["command"])
    argv += ["--port", str(stack.redis_port), "--bind", "127.0.0.1"]
    redis_env = {**base, **stack.environment("redis")}
    stack.start("redis", argv, redis_env, cwd=Path(stack.path("redis", REDIS_IMAGE_WORKDIR)))
    import redis as redispy

    def ping() -> bool:
        try:
            return redispy.Redis(
                port=stack.redis_port,
                username=redis_env["REDIS_AGENT_USER"],
                password=redis_env["REDIS_AGENT_PASSWORD"],
            ).ping()
        except redispy.RedisError:
            return False

    _wait("redis to answer PING", ping, stack)

    port = str(_free_port())
    web = services["web"]
    web_argv = [port if a == "8765" else a for a in stack.argv("web", web["command"])]
    web_argv[web_argv.index("--host") + 1] = "127.0.0.1"  # the container's 0.0.0.0, locally
    web_env = {**base, **stack.environment("web")}
    stack.start("web", web_argv, web_env)
    health = [a.replace(":8765/", f":{port}/") for a in web["healthcheck"]["test"][1:]]
    health[0] = sys.executable

    def healthy() -> bool:
        return subprocess.run(health, capture_output=True, timeout=10).returncode == 0

    _wait("the web health check", healthy, stack)

    env_file = stack.env_file
    agent_env = {
        **base,
        "PULSE_REDIS_URL": stack.url(
            f"redis://{env_file['REDIS_AGENT_USER']}:{env_file['REDIS_AGENT_PASSWORD']}"
            "@redis:6379/0"
        ),
        "PULSE_NAMESPACE": env_file["PULSE_NAMESPACE"],
        "PULSE_DIR": str(tmp_path / "agent-mirror"),
    }
    made = subprocess.run(
        [sys.executable, "-m", "pulse", "create", "from an agent", "one", "two"],
        env=agent_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    task_id = made.stdout.strip()

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/tasks",
        headers={"Authorization": f"Bearer {web_env['PULSE_WEB_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        listed = json.load(answer)
    assert [t["taskId"] for t in listed["tasks"]] == [task_id]
    # the stream reader works under the worker user's ACL: the list names where it stands
    assert listed["lastEventId"] != "0-0"
    _wait(
        "the stream reader", lambda: "cannot read the event stream" not in stack.log("web"), stack
    )
    stack.alive()
