"""Hypothesis drives create/next/heartbeat/done/error, Redis losing everything and recover
against the pure model: Redis, the mirror and the model never disagree."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import pulse
from pulse import model
from pulse.errors import StepConflict, TaskFinished

texts = st.one_of(st.none(), st.text(max_size=20))


@pytest.fixture
def machine_url(redis_url: str) -> str:
    return redis_url


def test_redis_and_the_model_agree(machine_url: str, redis_client) -> None:
    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            redis_client.flushall()
            self.dir = Path(tempfile.mkdtemp(prefix="pulse-sm-"))
            self.client = pulse.connect(machine_url, dir=self.dir, namespace="sm")
            self.expected: dict[str, model.Task] = {}

        def teardown(self) -> None:
            self.client.close()
            shutil.rmtree(self.dir, ignore_errors=True)

        @rule(steps=st.integers(min_value=1, max_value=4))
        def create(self, steps: int) -> None:
            handle = self.client.create("task", [f"s{i}" for i in range(steps)])
            self.expected[handle.id] = handle.task

        @precondition(lambda self: self.expected)
        @rule(
            data=st.data(),
            op=st.sampled_from(model.OPS),
            message=texts,
            progress=st.one_of(st.none(), st.integers(0, 100)),
        )
        def update(self, data, op: str, message, progress) -> None:
            task_id = data.draw(st.sampled_from(sorted(self.expected)))
            if op == "error" and not message:
                message = "failed"
            if op != "heartbeat":
                progress = None
            before = self.expected[task_id]
            try:
                change = self.client.update(task_id, op, message, progress)
            except TaskFinished:
                assert before["status"] != "running"
                return
            stored = model.check_text(message)[0]  # what the client keeps of the message
            want, kind = model.apply(before, op, change.task["updatedAt"], stored, progress)
            assert (change.kind, change.task) == (kind, want)
            self.expected[task_id] = change.task

        @rule()
        def redis_loses_everything_then_recover(self) -> None:
            redis_client.flushall()
            redis_client.script_flush()
            report = self.client.recover()
            assert report.restored == len(self.expected) and not report.refused

        @invariant()
        def redis_and_mirror_hold_the_model(self) -> None:
            self.client.flush_mirror()
            for task_id, want in self.expected.items():
                got = self.client.get(task_id)
                got["stalled"] = want["stalled"] = False
                assert got == want
                assert self.client.mirror.read(task_id) == want

    Machine.TestCase.settings = settings(
        max_examples=25,
        stateful_step_count=15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Machine.TestCase().runTest()


# -- two hosts, each going offline and online at random ----------------------------------------


class Host:
    """A host: a client with a mirror folder of its own, reaching Redis through a link that
    goes away while the host is offline; and what the model says its mirror holds."""

    def __init__(self, name: str, socket_path: str, root: Path) -> None:
        from pulse.client import Client
        from pulse.settings import Settings

        self.name = name
        self.link = root / f"{name}.sock"
        self.link.symlink_to(socket_path)
        settings = Settings(redis_url=f"unix://{self.link}", namespace="sm2", dir=root / name)
        self.warnings: list[str] = []
        self.client = Client(settings, warn=self.warnings.append)
        self.online = True
        self.mirror: dict[str, model.Task] = {}  # the model of its mirror folder
        self.pending: list[dict] = []  # the model of its journal
        self.conflicts: list[dict] = []  # the model of its conflicts file

    def go_offline(self) -> None:
        self.link.unlink()
        if self.client._store is not None:
            self.client._store.conn.close()  # an open socket would still reach Redis
        self.online = False

    def go_online(self, socket_path: str) -> None:
        self.link.symlink_to(socket_path)
        self.online = True


def test_two_hosts_offline_and_online_at_random_lose_nothing_and_misplace_nothing(
    redis_server, redis_client
) -> None:
    sock = redis_server.socket
    events = "pulse:{sm2}:events"

    class TwoHosts(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            redis_client.flushall()
            self.root = Path(tempfile.mkdtemp(prefix="pulse-sm2-", dir="/tmp"))
            self.hosts = [Host(n, sock, self.root) for n in ("a", "b")]
            self.redis: dict[str, model.Task] = {}  # the model of what Redis holds
            self.applied = 0  # events the model says the stream holds
            self.n = 0

        def teardown(self) -> None:
            for h in self.hosts:
                h.client.close()
            shutil.rmtree(self.root, ignore_errors=True)

        # the model of a host's replay: each entry applies to the step it was made for, once
        def model_sync(self, h: Host) -> None:
            touched = []
            for e in h.pending:
                t = self.redis[e["taskId"]]
                try:
                    after, _ = model.apply(
                        t, e["op"], e["now"], e["message"], e["progress"], step=e["step"]
                    )
                except (TaskFinished, StepConflict):
                    h.conflicts.append(e)
                else:
                    self.redis[e["taskId"]] = after
                    self.applied += 1
                touched.append(e["taskId"])
            h.pending = []
            for task_id in touched:
                h.mirror[task_id] = self.redis[task_id]

        @initialize(steps=st.integers(min_value=2, max_value=5))
        def a_task_both_hosts_know(self, steps: int) -> None:
            a, b = self.hosts
            handle = a.client.create("shared", [f"s{i}" for i in range(steps)])
            self.redis[handle.id] = a.mirror[handle.id] = handle.task
            change = b.client.heartbeat(handle.id, "b sees it")
            self.redis[handle.id] = b.mirror[handle.id] = change.task
            self.applied += 2

        @precondition(lambda self: any(h.online for h in self.hosts))
        @rule(data=st.data(), steps=st.integers(min_value=1, max_value=4))
        def create(self, data, steps: int) -> None:
            h = data.draw(st.sampled_from([h for h in self.hosts if h.online]))
            self.model_sync(h)
            handle = h.client.create("task", [f"s{i}" for i in range(steps)])
            self.redis[handle.id] = h.mirror[handle.id] = handle.task
            self.applied += 1

        @rule(data=st.data(), who=st.sampled_from([0, 1]))
        def next(self, data, who: int) -> None:  # the update that moves steps: the most often
            self.update(data, "next", who)

        @rule(data=st.data(), op=st.sampled_from(model.OPS), who=st.sampled_from([0, 1]))
        def update(self, data, op: str, who: int) -> None:
            h = self.hosts[who]
            task_id = data.draw(st.sampled_from(sorted(self.redis)))
            self.n += 1
            if h.online:
                self.model_sync(h)
                base = self.redis[task_id]
            elif task_id in h.mirror:
                base = h.mirror[task_id]
            else:
                return  # offline, a task its mirror never saw: nothing to base it on
            running = model.running_index(base)
            step = None if running is None else running + 1
            # each message says who made it and for which step, to find it misplaced later
            message = f"{op} {h.name}{self.n} for step {step}"
            progress = 50 if op == "heartbeat" else None
            try:
                change = h.client.update(task_id, op, message, progress)
            except TaskFinished:
                assert base["status"] != "running"
                return
            if h.online:
                want, _ = model.apply(base, op, change.task["updatedAt"], message, progress)
                assert change.task == want
                self.redis[task_id] = h.mirror[task_id] = change.task
                self.applied += 1
            else:
                (entry,) = [e for e in h.client.journal.entries() if e["message"] == message]
                h.pending.append(entry)
                h.mirror[task_id] = change.task

        @precondition(lambda self: all(h.online for h in self.hosts))
        @rule(who=st.sampled_from([0, 1]))
        def go_offline(self, who: int) -> None:
            self.hosts[who].go_offline()

        @precondition(lambda self: all(h.online for h in self.hosts))
        @rule()
        def both_go_offline(self) -> None:
            for h in self.hosts:
                h.go_offline()

        @precondition(lambda self: not all(h.online for h in self.hosts))
        @rule(who=st.sampled_from([0, 1]))
        def come_back_and_sync(self, who: int) -> None:
            h = self.hosts[who]
            if not h.online:
                h.go_online(sock)
            self.model_sync(h)
            h.client.sync()

        @invariant()
        def redis_mirrors_and_conflicts_hold_every_update_once(self) -> None:
            for task_id, want in self.redis.items():
                got = json.loads(redis_client.hget(f"pulse:{{sm2}}:task:{task_id}", "snap"))
                assert got == want
                for step_index, s in enumerate(got["steps"]):  # no message on another's step
                    said = s.get("message")
                    if said and " for step " in said and not said.startswith("error"):
                        assert said.endswith(f" for step {step_index + 1}"), (said, got)
            assert redis_client.xlen(events) == self.applied
            for h in self.hosts:
                kept = h.client.conflicts()
                assert [c["opId"] for c in kept] == [c["opId"] for c in h.conflicts]
                waiting = h.client.journal.entries()
                assert [e["opId"] for e in waiting] == [e["opId"] for e in h.pending]
                for task_id, want in h.mirror.items():
                    have = h.client.mirror.read(task_id)
                    assert have is not None
                    have.pop("unconfirmed", None)  # type: ignore[misc]
                    assert have == want

    TwoHosts.TestCase.settings = settings(
        max_examples=100,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    TwoHosts.TestCase().runTest()
