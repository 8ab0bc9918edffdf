"""Hypothesis drives create/next/heartbeat/done/error/wait, the clock, Redis losing everything
and recover against the pure model: Redis, the mirror and the model never disagree, down to
the step history, the learned stall times and the ETA."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, settings
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
            self.now = time.time()  # the client's clock, moved by the `later` rule
            self.client.clock = lambda: self.now
            self.expected: dict[str, model.Task] = {}
            self.history: dict[str, list[list[int]]] = {}
            self.paces: dict[str, dict] = {}

        def teardown(self) -> None:
            self.client.close()
            shutil.rmtree(self.dir, ignore_errors=True)

        @rule(seconds=st.sampled_from([0.001, 0.5, 1, 7, 61, 200, 3600]))
        def later(self, seconds: float) -> None:
            self.now += seconds

        @rule(steps=st.integers(min_value=1, max_value=4), name=st.sampled_from(["a", "b"]))
        def create(self, steps: int, name: str) -> None:
            self.create_task(steps, name)

        def create_task(self, steps: int, name: str) -> str:
            handle = self.client.create(name, [f"s{i}" for i in range(steps)])
            task = handle.task
            want = copy.deepcopy(task)
            pace = model.new_pace()
            model.pace_start(pace, want, 0, int(self.now * 1000), self.history)
            model.pace_eta(pace, want, task["startedAt"], int(self.now * 1000))
            assert task == want
            self.expected[handle.id], self.paces[handle.id] = task, pace
            return handle.id

        @rule(
            name=st.sampled_from(["a", "b"]),
            seconds=st.lists(st.sampled_from([1, 30, 400]), min_size=2, max_size=2),
        )
        def a_whole_run(self, name: str, seconds: list[int]) -> None:
            """A task run start to end, so history builds up and ETAs appear."""
            task_id = self.create_task(len(seconds), name)
            for s in seconds:
                self.now += s
                self.update_task(task_id, "next", None, None)

        @precondition(lambda self: self.expected)
        @rule(
            data=st.data(),
            op=st.sampled_from(model.OPS),
            message=texts,
            progress=st.one_of(st.none(), st.integers(0, 100)),
        )
        def update(self, data, op: str, message, progress) -> None:
            task_id = data.draw(st.sampled_from(sorted(self.expected)))
            self.update_task(task_id, op, message, progress)

        def update_task(self, task_id: str, op: str, message, progress) -> None:
            if op in ("error", "wait") and not (message or "").strip():
                message = "failed" if op == "error" else "go on?"
            if op != "heartbeat":
                progress = None
            before = self.expected[task_id]
            try:
                change = self.client.update(task_id, op, message, progress)
            except TaskFinished:
                assert before["status"] != "running"
                return
            stored = model.check_text(message)[0]  # what the client keeps of the message
            want, kind = model.apply(
                before, op, change.task["updatedAt"], stored, progress,
                pace=self.paces[task_id], history=self.history, now_ms=int(self.now * 1000),
            )  # fmt: skip
            assert (change.kind, change.task) == (kind, want)
            event("an eta" if want["eta"] else "no eta")
            event("stallAfter learned" if want["stallAfter"] > 180 else "stallAfter fixed")
            self.expected[task_id] = change.task

        @rule()
        def redis_loses_everything_then_recover(self) -> None:
            redis_client.flushall()
            redis_client.script_flush()
            report = self.client.recover()
            assert report.restored == len(self.expected) and not report.refused
            # The history went with Redis, and so did each running step's pace.
            self.history.clear()
            self.paces = {t: model.new_pace() for t in self.paces}

        @invariant()
        def redis_and_mirror_hold_the_model(self) -> None:
            self.client.flush_mirror()
            now = datetime.fromtimestamp(self.now, self.client.settings.tz)
            for task_id, want in self.expected.items():
                got = self.client.get(task_id)
                read = copy.deepcopy(want)
                read["stalled"] = model.is_stalled(want, now, 180)
                model.refresh_eta(read, now)
                assert got == read
                assert self.client.mirror.read(task_id) == want
            stored = self.client.store.history()
            assert {model.history_field(*k): v for k, v in stored.items()} == self.history

    Machine.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Machine.TestCase().runTest()


# -- two hosts, each going offline and online at random ----------------------------------------


def unlearned(task: dict) -> dict:
    """A snapshot without what the scripts learn from the step history (the first machine
    holds those to the model; an update journaled offline cannot know them)."""
    return {k: v for k, v in task.items() if k not in ("eta", "stallAfter")}


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
                assert unlearned(change.task) == unlearned(want)
                want = change.task  # with what Redis learned from the step history
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
                assert unlearned(got) == unlearned(want)
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
                    assert unlearned(have) == unlearned(want)

    TwoHosts.TestCase.settings = settings(
        max_examples=100,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    TwoHosts.TestCase().runTest()
