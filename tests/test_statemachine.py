"""Hypothesis drives create/next/heartbeat/done/error, Redis losing everything and recover
against the pure model: Redis, the mirror and the model never disagree."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
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
