"""The sink contract, redact(), open_sink() and the local sinks: console, jsonl, exec."""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from pulse_workers.sinks import DictMemory, Push, Sink, SinkError, open_sink, redact
from pulse_workers.sinks.exec import ExecSink
from pulse_workers.sinks.jsonl import JsonlSink

from pulse.errors import BadValue
from pulse.render import render_push

TASK = {
    "taskId": "deploy-20250101-000000-abcd",
    "taskName": "deploy",
    "status": "running",
    "version": 2,
    "steps": [{"name": "build", "status": "done"}, {"name": "ship", "status": "running"}],
}


def push(kind: str = "next", event_id: str = "1-0", text: str | None = None) -> Push:
    text = render_push(kind, TASK) if text is None else text
    return Push(event_id, kind, TASK, text, at="2025-01-01T00:00:00+00:00")


def test_push_record_and_sink_error_fields() -> None:
    p = push()
    assert p.task_id == TASK["taskId"]
    assert p.record() == {
        "event_id": "1-0",
        "kind": "next",
        "at": "2025-01-01T00:00:00+00:00",
        "task": TASK,
        "text": p.text,
    }
    e = SinkError("x", permanent=True, retry_after=-3)
    assert (str(e), e.permanent, e.retry_after) == ("x", True, 0.0)
    assert SinkError("y").retry_after is None and not SinkError("y").permanent


def test_dict_memory() -> None:
    m = DictMemory()
    assert m.get("a") is None
    m.set("a", "1")
    assert m.get("a") == "1" and m.data == {"a": "1"}


@pytest.mark.parametrize(
    "url, secret, shown",
    [
        ("tgram://123456:AAH-secretTOKEN/-100777", "AAH-secretTOKEN", "tgram://***/-100777"),
        ("discord://112233/webhook-SECRET-token", "SECRET", "discord://112233/***"),
        (
            "webhook+https://bob:hunter2@hooks.example.com/pulse?secret=S3CRET&team=a",
            "hunter2",
            "webhook+https://bob:***@hooks.example.com/pulse?secret=***&team=a",
        ),
        ("webhook+http://h.example.com/p?secret=S3CRET", "S3CRET", "webhook+http://h.example.com"),
        ("exec://?cmd=" + quote("notify --token TKN123 me"), "TKN123", "exec://?cmd=notify ***"),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general", "TIiaj", "#general"),
        ("json://user:pw0rd@127.0.0.1:8080/path?token=TKN", "pw0rd", "127.0.0.1:8080"),
        ("mailto://me:pa55@gmail.com", "pa55", "mailto://me:***@gmail.com"),
        ("pover://USERKEY123@APPTOKEN456", "KEY123", "pover://***@***"),
        ("tgram:123456:AAH-secretTOKEN", "secretTOKEN", "tgram:***"),
    ],
)
def test_redact_hides_secrets(url: str, secret: str, shown: str) -> None:
    name = redact(url)
    assert secret not in name and "***" in name and shown in name


def test_redact_keeps_harmless_urls() -> None:
    assert redact("console://") == "console://"
    assert redact("jsonl:///var/log/pulse.jsonl") == "jsonl:///var/log/pulse.jsonl"


@pytest.mark.parametrize(
    "url",
    [
        "nonsense",
        "tgram:123456:AAH-secretTOKEN/5",  # no //
        "tgram://not-a-token-secretTOKEN/5",
        "tgram://123456:AAH-secretTOKEN/",  # no chat
        "tgram://123456:AAH-secretTOKEN/1/2",  # two chats
        "discord://abc/secretTOKEN",
        "webhook+https:///no-host?secret=secretTOKEN",
        "exec://host?cmd=x&secret=secretTOKEN",
        "exec://?cmd=" + quote("'unbalanced secretTOKEN"),
        "https://secretTOKEN@hooks.example.com/x",  # plain https goes to Apprise: refused
    ],
)
def test_open_sink_refuses_malformed_urls_without_leaking(url: str) -> None:
    with pytest.raises(BadValue) as info:
        open_sink(url)
    assert "secretTOKEN" not in str(info.value)


@pytest.mark.parametrize("url", ["jsonl:///no/such/dir/x.jsonl", "jsonl://", "console://x"])
def test_open_sink_refuses_bad_local_urls(url: str) -> None:
    with pytest.raises(BadValue):
        open_sink(url)


def test_open_sink_builds_each_native_kind(tmp_path: Path) -> None:
    urls = {
        "console://": "ConsoleSink",
        f"jsonl://{tmp_path}/out.jsonl": "JsonlSink",
        "webhook+https://h.example.com/x?secret=s": "WebhookSink",
        "exec://?cmd=true": "ExecSink",
        "tgram://123456:AAH-tok/42": "TelegramSink",
        "discord://1234/tok": "DiscordSink",
    }
    for url, kind in urls.items():
        sink = open_sink(url)
        assert type(sink).__name__ == kind and isinstance(sink, Sink)
        assert sink.name == redact(url)
        sink.close()


def test_console_prints_one_flushed_line_per_push(capsys: pytest.CaptureFixture[str]) -> None:
    sink = open_sink("console://")
    sink.send(push("create"))
    sink.send(push("heartbeat", text="💓 [1/2] ship: 40%"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == " | ".join(render_push("create", TASK).splitlines())
    assert lines[1] == "💓 [1/2] ship: 40%" and len(lines) == 2


def test_jsonl_appends_durable_lines(tmp_path: Path) -> None:
    path = tmp_path / "pushes.jsonl"
    sink = open_sink(f"jsonl://{path}")
    sink.send(push("create", "1-0"))
    sink.send(push("next", "2-0", text="line one\nline «two» & <b>"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event_id"] for r in rows] == ["1-0", "2-0"]
    assert rows[1] == {
        "event_id": "2-0",
        "kind": "next",
        "at": "2025-01-01T00:00:00+00:00",
        "task": TASK,
        "text": "line one\nline «two» & <b>",
    }


def _append_many(path: str, tag: str, text: str) -> None:
    sink = JsonlSink(Path(path))
    for i in range(100):
        sink.send(Push(f"{tag}-{i}", "heartbeat", TASK, text))


def test_jsonl_lines_of_several_writers_never_tear(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    big = "x" * 20000  # far beyond PIPE_BUF: only O_APPEND + one write keeps it whole
    ctx = multiprocessing.get_context("spawn")  # fork of a process with threads is unsafe
    procs = [ctx.Process(target=_append_many, args=(str(path), t, big)) for t in "abc"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 300 and all(r["text"] == big for r in rows)


def test_jsonl_unwritable_is_a_sink_error(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "gone" / "x.jsonl")
    with pytest.raises(SinkError):
        sink.send(push())


SCRIPT = """
import json, os, sys
out = {"argv": sys.argv[1:], "stdin": json.load(sys.stdin),
       "env": {k: v for k, v in os.environ.items() if k.startswith("PULSE_EVENT") or
               k == "PULSE_TASK_ID"}}
open(os.environ["OUT"], "w").write(json.dumps(out))
if os.environ.get("FAIL"):
    sys.stderr.write("first line\\nreal reason: quota exceeded\\n\\n")
    sys.exit(3)
"""


def _exec_url(tmp_path: Path, *extra: str) -> str:
    script = tmp_path / "cmd.py"
    script.write_text(SCRIPT)
    cmd = " ".join([sys.executable, str(script), "--to", "'the user'", *extra])
    return "exec://?cmd=" + quote(cmd)


def test_exec_passes_text_stdin_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUT", str(tmp_path / "out.json"))
    sink = open_sink(_exec_url(tmp_path))
    assert sink.name == f"exec://?cmd={sys.executable} ***"
    p = push("next", "7-1", text="✅ [1/2] build done\n🔄 → ship")
    sink.send(p)
    seen = json.loads((tmp_path / "out.json").read_text())
    assert seen["argv"] == ["--to", "the user", p.text]
    assert seen["stdin"] == json.loads(json.dumps(p.record()))
    assert seen["env"] == {
        "PULSE_EVENT_KIND": "next",
        "PULSE_TASK_ID": TASK["taskId"],
        "PULSE_EVENT_ID": "7-1",
    }


def test_exec_failure_is_retryable_with_last_stderr_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUT", str(tmp_path / "out.json"))
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(SinkError) as info:
        open_sink(_exec_url(tmp_path, "--secret-arg")).send(push())
    assert not info.value.permanent
    assert "exit 3: real reason: quota exceeded" in str(info.value)
    assert "--secret-arg" not in str(info.value)


def test_exec_missing_command_is_permanent_and_timeout_kills() -> None:
    with pytest.raises(SinkError) as info:
        open_sink("exec://?cmd=/no/such/pulse-command").send(push())
    assert info.value.permanent and "command not found" in str(info.value)
    slow = ExecSink([sys.executable, "-c", "import time; time.sleep(30)"], name="x", timeout=0.5)
    with pytest.raises(SinkError) as info:
        slow.send(push())
    assert not info.value.permanent and "killed" in str(info.value)
