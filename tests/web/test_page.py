"""The dashboard in a real headless Chromium: tasks made by the CLI appear and advance live,
without a reload; stalled and finished states show; task text is never HTML."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.web.conftest import chrome, start_web, wait_until

pytest.importorskip("selenium", reason="selenium is not installed")


def card(browser, task_id):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'li.task[data-id="{task_id}"]')


# The page redraws its cards every second: read a card in one script call, never through an
# element found before (it may have been replaced in between).
_LOOK = (
    "const c = [...document.querySelectorAll('li.task')]"
    ".find(e => e.dataset.id === arguments[0]);"
    "return c ? [c.className, c.innerText] : ['', ''];"
)


def card_class(browser, task_id):
    return browser.execute_script(_LOOK, task_id)[0]


def card_text(browser, task_id):
    return browser.execute_script(_LOOK, task_id)[1]


def open_page(browser, web, path="/"):
    browser.get(web.url + path)
    # marks this document: if the page reloaded, the mark would be gone
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete")
    browser.execute_script("window.__sameDocument = true")
    wait_until(lambda: card_live(browser), what="the live mark")


def card_live(browser):
    return browser.execute_script("return document.getElementById('live').dataset.state") == "live"


def test_a_task_appears_and_advances_live(browser, web, run_pulse):
    open_page(browser, web)
    tid = run_pulse(web.env, "create", "deploy", "build", "test", "ship").stdout.strip()
    wait_until(lambda: "[0/3]" in card_text(browser, tid), what="the new task")
    assert "→ build" in card_text(browser, tid)

    started = time.monotonic()
    run_pulse(web.env, "next", tid, "built in 40s")
    wait_until(lambda: "[1/3]" in card_text(browser, tid), what="the step change")
    assert time.monotonic() - started < 5  # within a second in practice; CI is slow
    assert "→ test" in card_text(browser, tid)
    run_pulse(web.env, "heartbeat", tid, "half the suite", "--progress", "50")
    wait_until(lambda: "half the suite" in card_text(browser, tid), what="the heartbeat")
    assert browser.execute_script("return window.__sameDocument") is True  # no reload


def test_stalled_and_finished_states_show(browser, web, run_pulse):
    open_page(browser, web)
    quiet = run_pulse(web.env, "create", "quiet job", "wait", "--stall", "1").stdout.strip()
    finished = run_pulse(web.env, "create", "quick job", "one").stdout.strip()
    failed = run_pulse(web.env, "create", "bad job", "one").stdout.strip()
    run_pulse(web.env, "done", finished, "all good")
    run_pulse(web.env, "error", failed, "disk full")

    # no relay runs: the page itself sees the task go quiet past its stall time
    wait_until(lambda: "stalled" in card_class(browser, quiet), what="stall")
    assert "⚠️" in card_text(browser, quiet)
    wait_until(lambda: "done" in card_class(browser, finished), what="done")
    assert "[1/1]" in card_text(browser, finished) and "all good" in card_text(browser, finished)
    wait_until(lambda: "error" in card_class(browser, failed), what="error")
    assert "disk full" in card_text(browser, failed)

    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, 'button[data-filter="stalled"]').click()
    shown = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "li.task")]
    assert shown == [quiet]
    browser.find_element(By.CSS_SELECTOR, 'button[data-filter="finished"]').click()
    shown = {e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "li.task")}
    assert shown == {finished, failed}
    browser.find_element(By.CSS_SELECTOR, 'button[data-filter="all"]').click()
    browser.find_element(By.ID, "q").send_keys("disk")
    shown = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "li.task")]
    assert shown == [failed]


def test_task_text_is_never_html(browser, web, run_pulse):
    name = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
    tid = run_pulse(web.env, "create", name, "<b>step</b>").stdout.strip()
    run_pulse(web.env, "heartbeat", tid, "<img src=y onerror=window.__pwned=3>")
    open_page(browser, web, f"/?task={tid}")
    wait_until(lambda: name in card_text(browser, tid), what="the name as text")
    from selenium.webdriver.common.by import By

    wait_until(lambda: browser.find_element(By.ID, "d-name").text == name, what="the detail")
    assert "<b>step</b>" in browser.find_element(By.ID, "d-steps").text
    assert browser.find_elements(By.CSS_SELECTOR, "#tasks img, #detail img, #tasks b") == []
    assert browser.execute_script("return window.__pwned") is None


def test_a_link_opens_the_task_timeline(browser, web, run_pulse):
    tid = run_pulse(web.env, "create", "backup", "dump", "upload").stdout.strip()
    run_pulse(web.env, "next", tid, "dumped 12 GB")
    open_page(browser, web, f"/?task={tid[:10]}")  # a prefix, as any verb takes
    from selenium.webdriver.common.by import By

    detail = browser.find_element(By.ID, "detail")
    wait_until(lambda: detail.is_displayed(), what="the detail panel")
    steps = browser.find_element(By.ID, "d-steps").text
    assert "dump" in steps and "dumped 12 GB" in steps and "upload" in steps
    assert browser.execute_script("return location.search") == f"?task={tid}"
    browser.find_element(By.ID, "close").click()
    assert not detail.is_displayed()
    wait_until(lambda: card(browser, tid).click() or True, what="a click on the card")
    assert detail.is_displayed()


def test_after_a_server_restart_the_page_catches_up(browser, web_env, free_port, run_pulse):
    web = start_web(web_env, free_port)
    try:
        open_page(browser, web)
        tid = run_pulse(web_env, "create", "long job", "a", "b", "c").stdout.strip()
        wait_until(lambda: "[0/3]" in card_text(browser, tid), what="the task")
        web.stop()
        # made while no server runs: the page gets them from the stream when it reconnects
        run_pulse(web_env, "next", tid, "a done")
        run_pulse(web_env, "next", tid, "b done")
        other = run_pulse(web_env, "create", "made while down", "x").stdout.strip()
        wait_until(lambda: not card_live(browser), what="the page noticing")
        web = start_web(web_env, free_port)
        wait_until(lambda: "[2/3]" in card_text(browser, tid), 15, what="the missed updates")
        assert card_text(browser, other)
        assert browser.execute_script("return window.__sameDocument") is True
    finally:
        web.stop()


def test_zh_from_the_browser_and_a_phone_width(web, run_pulse):
    run_pulse(web.env, "create", "任务", "第一步")
    b = chrome(390, 844, mobile=True, lang="zh-CN")
    try:
        b.get(web.url + "/")
        from selenium.webdriver.common.by import By

        wait_until(lambda: b.find_elements(By.CSS_SELECTOR, "li.task"), what="the task")
        assert b.find_element(By.CSS_SELECTOR, 'button[data-filter="running"]').text == "进行中"
        # one column, nothing wider than the screen
        assert b.execute_script("return document.documentElement.scrollWidth") <= 390
    finally:
        b.quit()
        shutil.rmtree(b.profile_dir, ignore_errors=True)


def test_pulse_lang_fixes_the_language(browser, web_env, free_port, run_pulse):
    web = start_web({**web_env, "PULSE_LANG": "zh"}, free_port)
    try:
        open_page(browser, web)  # the browser asks for English
        from selenium.webdriver.common.by import By

        assert browser.find_element(By.CSS_SELECTOR, 'button[data-filter="all"]').text == "全部"
    finally:
        web.stop()


def test_eta_and_waiting_show_where_a_snapshot_has_them(browser, web, run_pulse, redis_client):
    # a snapshot as a newer library writes it (SPEC: waiting, question, stallAfter, eta), put
    # on the stream as its event: the page shows what it carries, and works without it too
    tid = run_pulse(web.env, "create", "train", "prepare", "fit", "--stall", "1").stdout.strip()
    open_page(browser, web)
    wait_until(lambda: "stalled" in card_class(browser, tid), what="stall")
    task = json.loads(run_pulse(web.env, "status", tid, "--json").stdout)
    finish = datetime.now(timezone.utc) + timedelta(minutes=12, seconds=30)
    task.update(
        version=task["version"] + 1,
        waiting=True,
        question="Ship to production? <yes/no>",
        stallAfter=600,
        eta={"remainingSeconds": 750, "finishAt": finish.isoformat(), "runs": 5},
    )
    at = task["updatedAt"]
    redis_client.xadd("pulse:{test}:events", {"kind": "wait", "at": at, "task": json.dumps(task)})
    wait_until(lambda: "waiting" in card_class(browser, tid), what="waiting")
    text = card_text(browser, tid)
    assert "⏸" in text and "Ship to production? <yes/no>" in text
    assert "≈ 13 min left" in text or "≈ 12 min left" in text
    assert "stalled" not in card_class(browser, tid)  # waiting: never stalled
