"""Hypothesis drives create/next/heartbeat/done/error/wait, the clock, Redis losing everything
and recover against the pure model: Redis, the mirror and the model never disagree, down to
the step history, the learned stall times and the ETA."""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pulse
from pulse import model
from pulse.errors import TaskFinished

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
