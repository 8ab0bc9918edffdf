"""The team stack in compose/, proven without a Docker engine.

1. ``compose/docker-compose.yml``, interpolated with ``compose/.env.example`` the way Compose
   does it, is valid against the Compose Specification's JSON schema. The schema is vendored
   as ``tests/data/compose-spec.json``: it is ``compose/config/compose_spec.json`` from the
   docker-compose 1.29.2 wheel on PyPI (Apache-2.0; the same file as Debian bookworm's
   ``docker-compose`` package), sha256
   0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac.
2. ``docker-compose config`` (Debian's package, which ``.ci/run`` installs) accepts it too;
   skipped where that binary is absent.
3. The stack's services run as local processes with the very commands, entrypoints and
   environment the compose file gives them (read from it, not copied), only host names, ports
   and container paths remapped: Redis through the stack's own ACL entrypoint, its health
   check, two relay replicas and the mirror. An agent then runs a task with the CLI and the
   pushes and the mirror files appear.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
DOCKER_COMPOSE_MISSING = (
    "docker-compose is not installed (Debian: apt-get install -y docker-compose; "
    ".ci/run installs it)"
)
# the image's console scripts, run from this checkout
RELAY_MAIN = "import sys; sys.argv[0] = 'pulse-relay'; from pulse_workers.cli import main; main()"
CONSOLE_SCRIPTS = {
    "pulse-relay": [sys.executable, "-c", RELAY_MAIN],
    "pulse": [sys.executable, "-m", "pulse"],
}
REDIS_IMAGE_WORKDIR = "/data"  # WORKDIR of the official redis image


# -- reading the compose file as Compose does ---------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and comments skipped, one pair of quotes stripped."""
    env = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation on every string of a loaded compose file:
    ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["bare"]
        have = env.get(name)
        op, arg = m["op"], m["arg"] or ""
        if op in (":-", ":?") and not have:
            have = None
        if have is not None:
            return have
        if op and op.endswith("?"):
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op else ""

    return _VAR.sub(one, value)


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), env)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(env_example: dict[str, str]) -> dict[str, Any]:
    return load_compose(env_example)


# -- 1. the Compose Specification's schema ----------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec_schema(
    compose: dict[str, Any],
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # the file declares draft 2019-09 (by a URI jsonschema does not know by that spelling)
    assert "2019-09" in schema["$schema"]
    validator = jsonschema.Draft201909Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)

    # the schema does reject a broken file: a misspelt key, a wrong type
    broken = json.loads(json.dumps(compose))
    broken["services"]["relay"]["restrat"] = "always"
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"
    found = {tuple(e.absolute_path) for e in validator.iter_errors(broken)}
    assert ("services", "relay") in found
    assert ("services", "redis", "healthcheck", "retries") in found


def test_compose_file_without_passwords_is_refused(env_example: dict[str, str]) -> None:
    for key in ("REDIS_AGENT_PASSWORD", "REDIS_WORKER_PASSWORD"):
        env = {k: v for k, v in env_example.items() if k != key}
        with pytest.raises(ValueError, match=key):
            load_compose(env)


def test_stack_has_what_an_operator_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "relay", "mirror", "web"}
    for name, svc in services.items():
        assert svc["restart"] == "unless-stopped", name
        assert "container_name" not in svc, f"{name} could not be scaled"

    redis = services["redis"]
    assert redis["image"] == "redis:7"
    args = redis["command"]
    opts = dict(zip(args[1::2], args[2::2], strict=True))
    assert args[0] == "redis-server"
    assert opts["--appendonly"] == "yes"
    assert opts["--appendfsync"] == "everysec"
    assert opts["--maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "redis-cli" in test[1] and "--pass" in test[1]

    for name in ("relay", "mirror"):
        svc = services[name]
        assert svc["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}
        assert svc["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert svc["command"][0] == "pulse-relay"
        assert "@redis:6379/" in svc["environment"]["PULSE_REDIS_URL"]
    assert services["relay"]["deploy"]["replicas"] >= 2  # one active, one standing by
    for name in ("relay", "mirror"):  # their own --check says whether they work
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "pulse-relay" and test[-1] == "--check"
    assert "PULSE_SINKS" in services["relay"]["environment"]
    mirror = services["mirror"]
    mirror_dir = mirror["command"][mirror["command"].index("--mirror") + 1]
    assert f"mirror:{mirror_dir}" in mirror["volumes"]
    assert set(compose["volumes"]) >= {"mirror"} | {
        v.split(":")[0] for v in redis["volumes"] if not v.startswith(".")
    }


# -- the ACL users the redis entrypoint writes ------------------------------------------------

ACL_DOC = ROOT / "docs" / "acl.md"


def _write_acl(compose: dict[str, Any], tmp_path: Path, **overrides: str) -> subprocess.Popen:
    """The redis service's entrypoint with its environment, running `true` for redis-server."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "REDIS_"))},
        **{k: str(v) for k, v in compose["services"]["redis"]["environment"].items()},
        "REDIS_ACLFILE": str(tmp_path / "users.acl"),
        **overrides,
    }
    return subprocess.run(
        ["sh", str(COMPOSE_DIR / "redis-entrypoint.sh"), "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _acl_rules(lines: list[str]) -> dict[str, set[str]]:
    """user name -> its rules, less passwords and resets of them (compared as sets)."""
    users = {}
    for line in lines:
        words = line.split()
        if words[:1] == ["user"]:
            users[words[1]] = {w for w in words[2:] if w[0] not in "><" and w != "resetpass"}
    return users


def test_redis_entrypoint_writes_the_acl_users_of_docs_acl_md(
    compose: dict[str, Any], env_example: dict[str, str], tmp_path: Path
) -> None:
    done = _write_acl(compose, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr  # the .env.example placeholders are still the passwords
    written = (tmp_path / "users.acl").read_text().splitlines()
    assert (tmp_path / "users.acl").stat().st_mode & 0o077 == 0  # passwords: owner only
    agent, worker = env_example["REDIS_AGENT_USER"], env_example["REDIS_WORKER_USER"]
    assert f"user {agent} on resetpass >{env_example['REDIS_AGENT_PASSWORD']} " in written[1]
    got = _acl_rules(written)
    assert set(got) == {"default", agent, worker}  # no admin unless its password is set
    assert got["default"] == {"off", "resetkeys", "resetchannels", "-@all"}

    if not ACL_DOC.exists():
        pytest.skip("docs/acl.md is not there to compare with")
    block = re.search(r"^```acl\n(.*?)^```", ACL_DOC.read_text(encoding="utf-8"), re.M | re.S)
    assert block, "docs/acl.md has no ```acl block"
    namespace = env_example["PULSE_NAMESPACE"]
    documented = _acl_rules(block[1].replace("NAMESPACE", namespace).splitlines())
    assert got["default"] == documented["default"]
    assert got[agent] == documented["pulse-agent"], got[agent] ^ documented["pulse-agent"]
    assert got[worker] == documented["pulse-worker"], got[worker] ^ documented["pulse-worker"]

    with_admin = _write_acl(compose, tmp_path, REDIS_ADMIN_PASSWORD="s3cret")
    assert with_admin.returncode == 0, with_admin.stderr
    admin = _acl_rules((tmp_path / "users.acl").read_text().splitlines())
    assert admin[env_example["REDIS_ADMIN_USER"]] == {"on", "~*", "&*", "+@all"}


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"REDIS_AGENT_PASSWORD": ""}, "REDIS_AGENT_PASSWORD is empty"),
        ({"REDIS_WORKER_PASSWORD": "two words"}, "REDIS_WORKER_PASSWORD may hold only"),
        ({"REDIS_AGENT_USER": "default"}, "taken twice"),
        ({"REDIS_WORKER_USER": "pulse-agent"}, "taken twice"),
        ({"PULSE_NAMESPACE": "a b"}, "PULSE_NAMESPACE may hold only"),
    ],
)
def test_redis_entrypoint_refuses_bad_users(
    compose: dict[str, Any], tmp_path: Path, overrides: dict[str, str], complaint: str
) -> None:
    refused = _write_acl(compose, tmp_path, **overrides)
    assert refused.returncode == 1 and complaint in refused.stderr, refused.stderr
    assert not (tmp_path / "users.acl").exists()


# -- 2. docker-compose config ----------------------------------------------------------------


def _docker_compose_env() -> dict[str, str]:
    # only what the env file says: the developer's own PULSE_*/REDIS_* would win over it
    return {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "REDIS_"))}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason=DOCKER_COMPOSE_MISSING)
def test_docker_compose_config_accepts_the_stack(tmp_path: Path) -> None:
    base = ["docker-compose", "--project-directory", str(COMPOSE_DIR), "-f", str(COMPOSE_FILE)]
    run = subprocess.run(
        [*base, "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_docker_compose_env(),
    )
    assert run.returncode == 0, run.stderr
    resolved = yaml.safe_load(run.stdout)
    assert set(resolved["services"]) == {"redis", "relay", "mirror", "web"}
    assert "@redis:6379/0" in resolved["services"]["relay"]["environment"]["PULSE_REDIS_URL"]

    no_password = tmp_path / "env"
    no_password.write_text(
        "".join(
            f"{k}={v}\n"
            for k, v in read_env_file(ENV_EXAMPLE).items()
            if k != "REDIS_WORKER_PASSWORD"
        )
    )
    refused = subprocess.run(
        [*base, "--env-file", str(no_password), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_docker_compose_env(),
    )
    assert refused.returncode != 0
    assert "REDIS_WORKER_PASSWORD" in refused.stderr


# -- the image -------------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    text = (COMPOSE_DIR / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_dockerfile_builds_the_project_and_runs_the_relay_as_a_user() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    stages = _dockerfile_stages()
    assert all(s[0][1].split()[0] == "python:3.11-slim" for s in stages)
    final = stages[-1]
    users = [rest for ins, rest in final if ins == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [json.loads(rest) for ins, rest in final if ins == "CMD"][-1] == ["pulse-relay"]
    assert not any(ins == "ENTRYPOINT" for ins, _ in final)  # `run relay pulse status` works
    # the compiler stays in the build stage
    assert not any("gcc" in rest for ins, rest in final if ins == "RUN")
    installs = [rest for stage in stages for ins, rest in stage if ins == "RUN" and "pip" in rest]
    assert installs and all("--no-cache-dir" in r for r in installs)

    # everything pip needs to build the project is copied into the build stage
    copied = {
        src.rstrip("/")
        for stage in stages
        for ins, rest in stage
        if ins == "COPY" and not rest.startswith("--from")
        for src in rest.split()[:-1]
    }
    for src in copied:
        assert (ROOT / src).exists(), src
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", project["project"]["readme"]}
    setuptools = project["tool"]["setuptools"]
    folders = setuptools.get("package-dir", {})  # pulse_workers lives in workers/
    needed |= {folders.get(top, top) for top in {p.split(".")[0] for p in setuptools["packages"]}}
    assert needed <= copied
    # and the build context keeps them (compose/Dockerfile.dockerignore)
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for src in needed:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, src


# -- 3. the stack as local processes --------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """The compose services as local processes: container paths and host names remapped."""

    def __init__(
        self, compose: dict[str, Any], env_file: dict[str, str], root: Path, redis_bin: Path
    ) -> None:
        self.compose = compose
        self.env_file = env_file  # the operator's .env the compose file was read with
        self.root = root
        self.redis_bin = redis_bin  # the folder of a local redis-server
        self.redis_port = _free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        (root / "logs").mkdir()

    # remapping

    def volumes(self, service: str) -> dict[str, Path]:
        """Container path -> host path: bind mounts from compose/, named volumes in tmp."""
        found = {}
        for spec in self.compose["services"][service].get("volumes", []):
            source, target = spec.split(":")[:2]
            if source.startswith((".", "/")):
                host = (COMPOSE_DIR / source).resolve()
            else:
                assert source in self.compose["volumes"], f"undeclared volume {source}"
                host = self.root / "volumes" / source
                host.mkdir(parents=True, exist_ok=True)
            found[target] = host
        return found

    def path(self, service: str, container_path: str) -> str:
        for target, host in sorted(self.volumes(service).items(), key=lambda kv: -len(kv[0])):
            if container_path == target or container_path.startswith(target + "/"):
                return str(host) + container_path[len(target) :]
        # only in the container's own filesystem: a private folder per service
        local = self.root / "rootfs" / service / container_path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        return str(local)

    def url(self, url: str) -> str:
        """A redis:// URL naming a service: that service's local address instead."""
        parts = urlsplit(url)
        if parts.hostname not in self.compose["services"]:
            return url
        assert parts.hostname == "redis" and parts.port == 6379, url
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{self.redis_port}"))

    def environment(self, service: str) -> dict[str, str]:
        env = {}
        for key, value in self.compose["services"][service].get("environment", {}).items():
            value = "" if value is None else str(value)
            if value.startswith("/"):
                value = self.path(service, value)
            elif "://" in value:
                value = self.url(value)
            env[key] = value
        return env

    def argv(self, service: str, args: list[str]) -> list[str]:
        head = CONSOLE_SCRIPTS.get(args[0], [args[0]])
        return head + [self.path(service, a) if a.startswith("/") else a for a in args[1:]]

    # processes

    def base_env(self) -> dict[str, str]:
        """What the images bring: no pulse settings of the developer, a UTF-8 locale."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PULSE_", "TASK_PULSE_", "REDIS_"))
        }
        env.update(
            LANG="C.UTF-8",
            HOME=str(self.root / "home"),
            XDG_DATA_HOME=str(self.root / "home" / "data"),
            PATH=os.pathsep.join([str(self.redis_bin), os.environ.get("PATH", os.defpath)]),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        return env

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen:
        log = self.root / "logs" / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd or self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[name], self.logs[name] = proc, log
        return proc

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")[-3000:]

    def alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{self.log(name)}"

    def stop(self) -> dict[str, int]:
        """SIGTERM as `docker compose stop` sends it; workers first, Redis last."""
        codes = {}
        for name in sorted(self.procs, key=lambda n: n == "redis"):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


def _wait(what: str, check: Callable[[], Any], stack: Stack, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        stack.alive()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{stack.log(n)}" for n in stack.procs)
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


@pytest.fixture
def stack(env_example: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    from pulse.embedded import find_redis_server
    from pulse.errors import BackendUnavailable

    try:
        redis_server = find_redis_server()
    except BackendUnavailable as e:
        pytest.skip(str(e))
    # the operator's .env: the example, with the relay pushing to a file we can read
    env_file = {**env_example, "PULSE_SINKS": f"jsonl://{tmp_path / 'pushes.jsonl'}"}
    s = Stack(load_compose(env_file), env_file, tmp_path, Path(redis_server).parent)
    try:
        yield s
    finally:
        s.stop()


def _pushes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_stack_services_run_a_task_end_to_end(stack: Stack, tmp_path: Path) -> None:
    services = stack.compose["services"]
    env_file = stack.env_file
    namespace = env_file["PULSE_NAMESPACE"]
    base = stack.base_env()

    # Redis: its entrypoint (the stack's ACL script) and command, on a free local port
    redis = services["redis"]
    redis_argv = stack.argv("redis", redis["entrypoint"] + redis["command"])
    redis_argv += ["--port", str(stack.redis_port), "--bind", "127.0.0.1"]
    redis_env = {**base, **stack.environment("redis")}
    stack.start("redis", redis_argv, redis_env, cwd=Path(stack.path("redis", REDIS_IMAGE_WORKDIR)))

    # its health check, as Docker runs it in the container (redis-cli pointed at the port)
    kind, health = redis["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    if shutil.which("redis-cli", path=redis_env["PATH"]):
        health = health.replace("redis-cli", f"redis-cli -p {stack.redis_port}", 1)
        _wait(
            "the redis health check",
            lambda: (
                subprocess.run(
                    ["sh", "-c", health], env=redis_env, capture_output=True, timeout=10
                ).returncode
                == 0
            ),
            stack,
        )
    else:  # a redis-server without redis-cli beside it: PING as the health check's user
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
    acl = Path(redis_env["REDIS_ACLFILE"]).read_text()
    assert "user default off" in acl and f"~pulse:{{{namespace}}}:*" in acl

    # the workers: two relay replicas and the mirror, with their commands and environment
    for name, replicas in (("relay", 2), ("mirror", 1)):
        svc = services[name]
        env = {**base, **stack.environment(name)}
        for i in range(1, replicas + 1):
            stack.start(f"{name}-{i}", stack.argv(name, svc["command"]), env)
    relay_env = {**base, **stack.environment("relay")}
    mirror_env = {**base, **stack.environment("mirror")}
    mirror_dir = Path(mirror_env["PULSE_DIR"])
    pushes_file = Path(relay_env["PULSE_SINKS"].removeprefix("jsonl://"))
    # both relays and the mirror joined their consumer groups
    _wait(
        "the workers to start",
        lambda: all("relaying namespace" in stack.log(f"relay-{i}") for i in (1, 2)),
        stack,
    )

    def healthy(name: str) -> bool:  # the compose healthcheck, as docker would run it
        test = services[name]["healthcheck"]["test"][1:]
        env = relay_env if name == "relay" else mirror_env
        argv = [*CONSOLE_SCRIPTS["pulse-relay"], *test[1:]]
        return subprocess.run(argv, env=env, capture_output=True, timeout=60).returncode == 0

    # one relay holds the lease (its group starts at the end of the stream from then on)
    _wait("a relay to be active", lambda: healthy("relay") and healthy("mirror"), stack)

    # an agent on another host: the agent user's URL, the stack's namespace
    agent_env = {
        **base,
        "PULSE_REDIS_URL": stack.url(
            f"redis://{env_file['REDIS_AGENT_USER']}:{env_file['REDIS_AGENT_PASSWORD']}"
            "@redis:6379/0"
        ),
        "PULSE_NAMESPACE": namespace,
        "PULSE_DIR": str(tmp_path / "agent-mirror"),
        "PULSE_LANG": "en",
        "PULSE_AGENT": "agent-1",
    }

    def pulse(*args: str, env: dict[str, str] = agent_env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CONSOLE_SCRIPTS["pulse"], *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = pulse("create", "deploy site", "build", "ship", "--stall", "1")
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()
    assert pulse("next", task_id, "built in 40s").returncode == 0
    # quiet past its stall time: one stall alert, however many relays run
    _wait(
        "the stall push",
        lambda: any(p["kind"] == "stall" for p in _pushes(pushes_file)),
        stack,
    )
    time.sleep(1.5)  # another stall check by each relay: still one alert
    done = pulse("done", task_id, "https://example.com/r/42")
    assert done.returncode == 0, done.stderr

    def finished() -> list[dict[str, Any]]:
        got = _pushes(pushes_file)
        return got if got and got[-1]["kind"] == "done" else []

    pushes = _wait("the done push", finished, stack)
    kinds = [p["kind"] for p in pushes]
    assert kinds[:2] == ["create", "next"] and kinds.count("stall") == 1, kinds
    ids = [p["event_id"] for p in pushes]
    assert len(ids) == len(set(ids)), f"an event was pushed twice: {kinds}"
    assert all(p["task"]["taskId"] == task_id for p in pushes)
    assert pushes[0]["text"].startswith("🚀") and "deploy site" in pushes[0]["text"]
    assert pushes[-1]["text"].startswith("🎉") and "example.com/r/42" in pushes[-1]["text"]

    snapshot = mirror_dir / namespace / f"{task_id}.json"
    _wait(
        "the mirror file",
        lambda: snapshot.exists() and json.loads(snapshot.read_text())["status"] == "done",
        stack,
    )
    assert json.loads(snapshot.read_text())["version"] == pushes[-1]["task"]["version"]

    # the workers' user runs any pulse verb and the relay's check (docker compose run/exec)
    status = pulse("status", task_id, "--json", env=relay_env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "done"

    def settled() -> dict[str, Any]:
        check = subprocess.run(
            [*CONSOLE_SCRIPTS["pulse-relay"], "--check", "--json"],
            env=relay_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stderr
        report = json.loads(check.stdout)["namespaces"][0]
        [lag] = report["sinks"].values()
        return {**lag, "dead_letters": report["dead_letters"]} if lag["pending"] == 0 else {}

    # the relays ack an event once pushed: nothing left pending, undelivered or dead
    lag = _wait("the relays to ack every event", settled, stack)
    assert lag["undelivered"] == 0 and lag["dead_letters"] == 0, lag
    # create, next, stall, resume (the done of a stalled task resumes it first), done
    assert lag["stream_length"] == 5, lag

    # the agent user is held to its namespace and to the agent's commands
    other = pulse("--namespace", "someone-else", "status")
    assert other.returncode != 0 and "NOPERM" in other.stderr
    as_relay = subprocess.run(
        [*CONSOLE_SCRIPTS["pulse-relay"], "--check"],
        env=agent_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_relay.returncode != 0 and "NOPERM" in as_relay.stderr

    # Redis lost the task: the mirror volume brings it back (docker compose run mirror ...)
    import redis as redispy

    worker = redispy.Redis.from_url(relay_env["PULSE_REDIS_URL"])
    try:
        assert worker.delete(f"pulse:{{{namespace}}}:task:{task_id}") == 1
    finally:
        worker.close()
    assert pulse("status", task_id, env=mirror_env).returncode == 1
    recovered = pulse("recover", "--json", env=mirror_env)
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["restored"] == 1
    assert pulse("status", task_id, env=agent_env).returncode == 0

    # `docker compose stop`: every service ends cleanly on SIGTERM, Redis kept its AOF
    codes = stack.stop()
    assert codes == dict.fromkeys(codes, 0), {n: (c, stack.log(n)) for n, c in codes.items()}
    data = Path(stack.path("redis", "/data"))
    assert (data / "appendonly.aof").exists() or (data / "appendonlydir").is_dir()
