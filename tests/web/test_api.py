"""The HTTP API of ``pulse web`` against a real Redis, through a real server process: what a
client without pulse (curl, a Node or Go program) sees."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.web.conftest import TOKEN, mirror_has_no_journal, start_web


def test_reads_without_a_token_and_refuses_writes(web, run_pulse):
    task_id = run_pulse(web.env, "create", "deploy", "build", "ship").stdout.strip()
    run_pulse(web.env, "next", task_id, "built")

    listed = web.call("GET", "/api/tasks")
    assert listed.status == 200
    assert [t["taskId"] for t in listed.json()["tasks"]] == [task_id]

    one = web.call("GET", f"/api/tasks/{task_id[:8]}")  # a unique prefix works
    assert one.status == 200
    assert one.json()["steps"][0] == {
        **one.json()["steps"][0],
        "status": "done",
        "message": "built",
    }

    refused = web.call("POST", f"/api/tasks/{task_id}/next", {})
    assert refused.status == 403
    assert "PULSE_WEB_TOKEN" in refused.json()["error"]
    assert web.call("GET", f"/api/tasks/{task_id}").json()["version"] == 2  # nothing changed


def test_refuses_to_listen_beyond_loopback_without_a_token(web_env, free_port):
    out = subprocess.run(
        [sys.executable, "-m", "pulse", "web", "--host", "0.0.0.0", "--port", str(free_port)],
        env=web_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "PULSE_WEB_TOKEN" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_every_api_call_needs_the_token(web_with_token):
    web = web_with_token
    assert web.call("GET", "/api/tasks").status == 401
    assert web.call("GET", "/api/tasks", token="wrong").status == 401
    assert web.call("GET", "/api/tasks", token=TOKEN).status == 200
    assert web.call("GET", f"/api/tasks?token={TOKEN}").status == 200
    assert web.call("GET", "/api/events?token=wrong").status == 401
    # writes need the header: the query token is for a browser's first visit
    assert (
        web.call("POST", f"/api/tasks?token={TOKEN}", {"name": "a", "steps": ["b"]}).status == 401
    )
    assert web.call("GET", "/healthz").status == 200  # for the container's healthcheck


def test_the_first_visit_trades_the_token_for_a_cookie_good_for_reads_only(web_with_token):
    web = web_with_token
    visit = web.call("GET", f"/?task=abc&token={TOKEN}")
    assert visit.status == 303
    assert visit.headers["Location"] == "/?task=abc"  # the token leaves the address bar
    cookie = visit.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}

    assert web.call("GET", "/api/tasks", headers=jar).status == 200
    created = web.call("POST", "/api/tasks", {"name": "a", "steps": ["b"]}, headers=jar)
    assert created.status == 401
    assert web.call("GET", "/api/tasks", headers={"Cookie": "pulse_web=forged"}).status == 401
    assert web.call("GET", "/?token=wrong").status == 401


def test_a_task_tracked_over_http_alone(web_with_token, run_pulse):
    web = web_with_token
    made = web.call(
        "POST", "/api/tasks", {"name": "etl", "steps": ["extract", "load"]}, token=TOKEN
    )
    assert made.status == 201
    task = made.json()
    assert task["status"] == "running" and task["steps"][0]["status"] == "running"
    tid = task["taskId"]

    beat = web.call(
        "POST", f"/api/tasks/{tid}/heartbeat", {"message": "half", "progress": 50}, token=TOKEN
    )
    assert beat.status == 200 and beat.json()["steps"][0]["progress"] == 50
    assert (
        web.call("POST", f"/api/tasks/{tid}/next", {"message": "10k rows"}, token=TOKEN).status
        == 200
    )
    asked = web.call("POST", f"/api/tasks/{tid}/wait", {"question": "ship?"}, token=TOKEN)
    assert asked.status == 200
    assert (asked.json()["waiting"], asked.json()["question"]) == (True, "ship?")
    done = web.call("POST", f"/api/tasks/{tid}/done", {"result": "ok"}, token=TOKEN)
    assert done.status == 200 and done.json()["status"] == "done" and done.json()["result"] == "ok"

    # the same library underneath: the CLI sees what the API did
    seen = json.loads(run_pulse(web.env, "status", tid, "--json").stdout)
    assert seen["version"] == done.json()["version"] == 5
    assert seen["waiting"] is False  # done ends the wait

    again = web.call("POST", f"/api/tasks/{tid}/next", {}, token=TOKEN)
    assert again.status == 409 and "error" in again.json()


def test_errors_are_json_with_the_status_of_their_kind(web_with_token, run_pulse):
    web = web_with_token
    a = run_pulse(web.env, "create", "twin", "s").stdout.strip()
    run_pulse(web.env, "create", "twin", "s")
    assert web.call("GET", "/api/tasks/nope", token=TOKEN).status == 404
    ambiguous = web.call("POST", "/api/tasks/twin/next", {}, token=TOKEN)
    assert ambiguous.status == 409 and "twin" in ambiguous.json()["error"]
    failed = web.call("POST", f"/api/tasks/{a}/error", {}, token=TOKEN)
    assert failed.status == 400  # an error needs its message, as in the CLI
    assert web.call("GET", "/api/tasks?view=sideways", token=TOKEN).status == 400
    assert web.call("GET", "/api/tasks?limit=-1", token=TOKEN).status == 400
    assert web.call("POST", f"/api/tasks/{a}/explode", {}, token=TOKEN).status == 404


def test_bad_bodies_are_refused_before_anything_changes(web_with_token, run_pulse):
    web = web_with_token
    tid = run_pulse(web.env, "create", "job", "one", "two").stdout.strip()
    path = f"/api/tasks/{tid}/heartbeat"
    cases = {
        b"{not json": 400,
        b"[1, 2]": 400,
        json.dumps({"message": "x", "colour": "red"}).encode(): 400,  # unknown field
        json.dumps({"progress": "50"}).encode(): 400,  # wrong type
        json.dumps({"progress": True}).encode(): 400,
        json.dumps({"progress": 150}).encode(): 400,  # the library's own rule
        json.dumps({"message": "x" * 70_000}).encode(): 413,
        b"\xff\xfe": 400,
    }
    for raw, status in cases.items():
        answer = web.call("POST", path, raw=raw, token=TOKEN)
        assert answer.status == status, raw[:40]
        assert set(answer.json()) == {"error"}
    for body in (
        {"name": "x"},
        {"name": "x", "steps": "abc"},
        {"name": 3, "steps": ["a"]},
        {"name": "x", "steps": [1]},
        {"name": "x", "steps": ["a"], "stall": "9"},
    ):
        assert web.call("POST", "/api/tasks", body, token=TOKEN).status == 400, body
    assert web.call("GET", f"/api/tasks/{tid}", token=TOKEN).json()["version"] == 1
    assert [t["taskId"] for t in web.call("GET", "/api/tasks", token=TOKEN).json()["tasks"]] == [
        tid
    ]


def test_events_stream_live_and_resume_after_an_id(web, run_pulse, open_stream):
    stream = open_stream(web)
    tid = run_pulse(web.env, "create", "stream me", "a", "b").stdout.strip()
    run_pulse(web.env, "next", tid, "a done")
    run_pulse(web.env, "done", tid)
    first = stream.next_event()
    kinds = [first[1], stream.next_event()[1], stream.next_event()[1]]
    assert kinds == ["create", "next", "done"]
    event_id, kind, data = first
    assert data["id"] == event_id and data["task"]["taskId"] == tid and data["kind"] == kind

    resumed = open_stream(web, {"Last-Event-ID": event_id})
    assert [resumed.next_event()[1] for _ in range(2)] == ["next", "done"]
    # the page's first connection resumes from the id /api/tasks gave it
    also = open_stream(web, path=f"/api/events?lastEventId={event_id}")
    assert also.next_event()[1] == "next"


def test_redis_down_is_503_and_nothing_is_journaled(web_env, free_port, tmp_path):
    from tests.redis_proc import redis_proc

    with redis_proc() as redis:
        env = {**web_env, "PULSE_REDIS_URL": redis.url, "PULSE_WEB_TOKEN": TOKEN}
        web = start_web(env, free_port)
        try:
            tid = web.call("POST", "/api/tasks", {"name": "n", "steps": ["s"]}, token=TOKEN)
            tid = tid.json()["taskId"]
            redis.stop()
            assert web.call("GET", "/healthz").status == 503
            listed = web.call("GET", "/api/tasks", token=TOKEN)
            assert listed.status == 503 and "error" in listed.json()
            assert web.call("GET", f"/api/tasks/{tid}", token=TOKEN).status == 503
            down = web.call("POST", f"/api/tasks/{tid}/next", {}, token=TOKEN)
            assert down.status == 503 and "error" in down.json()
            assert (
                web.call("POST", "/api/tasks", {"name": "n", "steps": ["s"]}, token=TOKEN).status
                == 503
            )
            assert mirror_has_no_journal(env)
            redis.start()
            assert web.call("GET", "/healthz").json() == {"ok": True}
        finally:
            web.stop()


def test_metrics_are_prometheus_text(web):
    web.call("GET", "/api/tasks")
    text = web.call("GET", "/metrics").body.decode()
    assert 'pulse_web_requests_total{code="200",route="/api/tasks"} 1.0' in text
    assert "pulse_web_event_streams 0.0" in text


def test_the_event_stream_carries_on_after_redis_restarts(web_env, free_port, open_stream):
    from tests.redis_proc import redis_proc

    with redis_proc(persist=True) as redis:
        env = {**web_env, "PULSE_REDIS_URL": redis.url, "PULSE_WEB_TOKEN": TOKEN}
        web = start_web(env, free_port)
        try:
            stream = open_stream(web, {"Authorization": f"Bearer {TOKEN}"})
            made = web.call("POST", "/api/tasks", {"name": "n", "steps": ["a", "b"]}, token=TOKEN)
            tid = made.json()["taskId"]
            assert stream.next_event()[1] == "create"
            redis.restart()
            assert web.call("POST", f"/api/tasks/{tid}/next", {}, token=TOKEN).status == 200
            event_id, kind, data = stream.next_event()  # the same open stream
            assert (kind, data["task"]["version"]) == ("next", 2)
        finally:
            web.stop()


def test_an_idempotency_key_applies_a_retried_update_once(web_with_token, open_stream):
    web = web_with_token
    tid = web.call("POST", "/api/tasks", {"name": "n", "steps": ["a", "b", "c"]}, token=TOKEN)
    tid = tid.json()["taskId"]
    key = {"Idempotency-Key": "deploy-42-step-a"}
    first = web.call("POST", f"/api/tasks/{tid}/next", {"message": "a"}, token=TOKEN, headers=key)
    retry = web.call("POST", f"/api/tasks/{tid}/next", {"message": "a"}, token=TOKEN, headers=key)
    assert first.status == retry.status == 200
    assert retry.json()["version"] == first.json()["version"] == 2  # applied once
    assert [s["status"] for s in retry.json()["steps"]] == ["done", "running", "pending"]
    other = web.call(
        "POST", f"/api/tasks/{tid}/next", {}, token=TOKEN, headers={"Idempotency-Key": "k2"}
    )
    assert other.json()["version"] == 3
    bad = web.call(
        "POST", f"/api/tasks/{tid}/next", {}, token=TOKEN, headers={"Idempotency-Key": "a b"}
    )
    assert bad.status == 400
    assert bad.json()["error"] == "an operation id is 1-64 letters, digits, '_' or '-'"


def test_an_idempotency_key_makes_a_retried_create_one_task(web_with_token, open_stream):
    web = web_with_token
    stream = open_stream(web, {"Authorization": f"Bearer {TOKEN}"})
    key, body = {"Idempotency-Key": "deploy-42-create"}, {"name": "n", "steps": ["a", "b"]}
    first = web.call("POST", "/api/tasks", body, token=TOKEN, headers=key)
    tid = first.json()["taskId"]
    assert web.call("POST", f"/api/tasks/{tid}/next", {}, token=TOKEN).status == 200
    retry = web.call("POST", "/api/tasks", body, token=TOKEN, headers=key)
    assert first.status == retry.status == 201
    assert retry.json() == web.call("GET", f"/api/tasks/{tid}", token=TOKEN).json()
    assert retry.json()["taskId"] == tid and retry.json()["version"] == 2  # as it is now
    other = web.call("POST", "/api/tasks", body, token=TOKEN, headers={"Idempotency-Key": "k9"})
    assert other.status == 201 and other.json()["taskId"] != tid
    listed = web.call("GET", "/api/tasks?view=all", token=TOKEN).json()["tasks"]
    assert sorted(t["taskId"] for t in listed) == sorted([tid, other.json()["taskId"]])
    kinds = [stream.next_event()[1] for _ in range(3)]
    assert kinds == ["create", "next", "create"]  # the retry emitted nothing
