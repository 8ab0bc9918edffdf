// The pulse dashboard: the task list from /api/tasks, kept live by /api/events (SSE).
// Task text (names, messages, results) only ever goes into textContent, never HTML.
"use strict";
(function () {
  var TEXT = {
    en: {
      all: "All", running: "Running", stalled: "Stalled", finished: "Finished",
      search: "Search tasks, steps, agents…", live: "live", reconnecting: "reconnecting…",
      empty: "No tasks here.", stalledFlag: "stalled", waitingFlag: "waiting",
      done: "done", error: "failed", left: function (d) { return "≈ " + d + " left"; },
      min: "min", h: "h", s: "s", ago: function (d) { return d + " ago"; },
      needToken: "This dashboard needs its token: open the link you were given (with ?token=…).",
      unreachable: "Redis cannot be reached; retrying…", notFound: "No task matches ",
      agent: "agent", host: "host", id: "id", started: "started", finished_: "finished",
      updated: "updated", result: "result", errorText: "error", question: "question",
      pending: "pending", elapsed: "elapsed",
    },
    zh: {
      all: "全部", running: "进行中", stalled: "卡住", finished: "已结束",
      search: "搜索任务、步骤、agent…", live: "实时", reconnecting: "重新连接中…",
      empty: "这里没有任务。", stalledFlag: "可能卡住", waitingFlag: "等你回复",
      done: "完成", error: "失败", left: function (d) { return "预计还需 " + d; },
      min: "分钟", h: "小时", s: "秒", ago: function (d) { return d + "前"; },
      needToken: "这个面板需要令牌：请打开带 ?token=… 的链接。",
      unreachable: "无法连接 Redis，正在重试…", notFound: "没有匹配的任务 ",
      agent: "agent", host: "主机", id: "ID", started: "开始", finished_: "结束",
      updated: "更新", result: "结果", errorText: "错误", question: "问题",
      pending: "等待中", elapsed: "用时",
    },
  };
  var KINDS = ["create", "next", "heartbeat", "done", "error", "stall", "resume", "wait"];
  var ICON = { running: "🔄", done: "✅", error: "❌", stalled: "⚠️", pending: "⏳", waiting: "⏸" };
  var MAX_TASKS = 500;

  var fixed = document.documentElement.getAttribute("data-lang");
  var browser = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
  var lang = fixed === "zh" || fixed === "en" ? fixed : /^zh/i.test(browser) ? "zh" : "en";
  var T = TEXT[lang];
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";

  var tasks = new Map(); // taskId -> snapshot
  var lastId = null; // the newest stream id seen: where a reconnect resumes
  var clockSkew = 0; // server clock minus ours, ms
  var filter = "all";
  var query = "";
  var openId = null;
  var source = null;
  var drawPending = false;

  var $ = function (id) { return document.getElementById(id); };
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function now() { return Date.now() + clockSkew; }
  function ms(iso) { return iso ? Date.parse(iso) : NaN; }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var sep = lang === "zh" ? "" : " ";
    if (h) return h + sep + T.h + sep + m + sep + T.min;
    if (m) return m + sep + T.min + sep + s + sep + T.s;
    return s + sep + T.s;
  }
  function etaText(task) {
    // as the CLI and the pushes say it (pulse.render.eta_text), counted down on the page:
    // seconds under a minute, minutes rounded up to 90, then hours and minutes
    var eta = task.eta;
    if (!eta || task.status !== "running") return "";
    var left = eta.finishAt ? (ms(eta.finishAt) - now()) / 1000 : eta.remainingSeconds;
    left = Math.max(0, Math.floor(left || 0));
    var sep = lang === "zh" ? " " : " ";
    if (left < 60) return T.left(left + sep + T.s);
    var minutes = Math.ceil(left / 60);
    if (minutes <= 90) return T.left(minutes + sep + T.min);
    var text = Math.floor(minutes / 60) + sep + T.h;
    if (minutes % 60) text += " " + (minutes % 60) + sep + T.min;
    return T.left(text);
  }
  function counts(task) {
    var steps = task.steps || [];
    return [steps.filter(function (s) { return s.status === "done"; }).length, steps.length];
  }
  function currentStep(task) {
    var steps = task.steps || [];
    return steps.find(function (s) { return s.status === "running"; }) ||
      steps.find(function (s) { return s.status === "error"; }) || null;
  }
  function isStalled(task) {
    if (task.status !== "running" || task.waiting) return false;
    var after = task.stallAfter || task.stallSeconds || 180;
    return (now() - ms(task.updatedAt)) / 1000 > after;
  }
  function state(task) {
    if (task.status !== "running") return task.status;
    if (task.waiting) return "waiting";
    return isStalled(task) ? "stalled" : "running";
  }
  function elapsed(task) {
    var end = task.finishedAt ? ms(task.finishedAt) : now();
    return (end - ms(task.startedAt)) / 1000;
  }

  function keep(task) {
    if (!task || !task.taskId) return;
    var known = tasks.get(task.taskId);
    if (known && (known.version || 0) > (task.version || 0)) return; // an older snapshot
    tasks.set(task.taskId, task);
    if (tasks.size > MAX_TASKS) {
      var oldest = Array.from(tasks.values())
        .filter(function (t) { return t.status !== "running"; })
        .sort(function (a, b) { return ms(a.updatedAt) - ms(b.updatedAt); })[0];
      if (oldest) tasks.delete(oldest.taskId);
    }
  }

  function matches(task) {
    var st = state(task);
    if (filter === "running" && task.status !== "running") return false;
    if (filter === "stalled" && st !== "stalled") return false;
    if (filter === "finished" && task.status === "running") return false;
    if (!query) return true;
    var hay = [task.taskName, task.taskId, task.agent, task.host, task.result, task.error,
      task.question].concat((task.steps || []).map(function (s) { return s.name + " " + (s.message || ""); }));
    return hay.join("\n").toLowerCase().indexOf(query) >= 0;
  }

  function card(task) {
    var st = state(task);
    var li = el("li", "task " + st);
    li.dataset.id = task.taskId;
    li.tabIndex = 0;
    var top = el("div", "top");
    top.appendChild(el("span", "icon", ICON[st === "waiting" ? "running" : st] || ""));
    top.appendChild(el("span", "name", task.taskName));
    if (st === "stalled") top.appendChild(el("span", "flag stalled", "⚠️ " + T.stalledFlag));
    if (task.waiting) top.appendChild(el("span", "flag waiting", "⏸ " + T.waitingFlag));
    top.appendChild(el("span", "elapsed", duration(elapsed(task))));
    li.appendChild(top);

    var c = counts(task);
    var progress = el("div", "progress");
    var bar = el("div", "bar");
    var fill = el("div", "fill");
    var running = currentStep(task);
    var part = running && running.status === "running" && running.progress ? running.progress / 100 : 0;
    var share = task.status === "done" ? 1 : c[1] ? (c[0] + part) / c[1] : 0;
    fill.style.width = Math.round(share * 1000) / 10 + "%";
    bar.appendChild(fill);
    progress.appendChild(bar);
    progress.appendChild(el("span", "count", "[" + c[0] + "/" + c[1] + "]"));
    li.appendChild(progress);

    var step = el("div", "step");
    if (task.status === "done") {
      step.appendChild(el("span", "", "🎉 " + T.done));
      if (task.result) step.appendChild(el("span", "msg", " · " + task.result));
    } else if (task.status === "error") {
      step.appendChild(el("span", "", (running ? running.name + " · " : "") + T.error));
      if (task.error) step.appendChild(el("span", "msg", ": " + task.error));
    } else if (running) {
      step.appendChild(el("span", "", "→ " + running.name));
      var said = task.waiting && task.question ? task.question : running.message;
      if (said) step.appendChild(el("span", "msg", ": " + said));
    }
    li.appendChild(step);
    var eta = etaText(task);
    if (eta) li.appendChild(el("div", "eta", eta));
    var meta = [task.agent, task.host, task.taskId].filter(Boolean).join(" · ");
    li.appendChild(el("div", "meta", meta));
    return li;
  }

  function order(a, b) {
    var ra = a.status === "running" ? 0 : 1, rb = b.status === "running" ? 0 : 1;
    return ra - rb || ms(b.updatedAt) - ms(a.updatedAt);
  }

  function draw() {
    drawPending = false;
    var list = $("tasks");
    var shown = Array.from(tasks.values()).filter(matches).sort(order);
    var fragment = document.createDocumentFragment();
    shown.forEach(function (t) { fragment.appendChild(card(t)); });
    list.replaceChildren(fragment);
    $("empty").hidden = shown.length > 0;
    if (openId) drawDetail();
  }
  function schedule() {
    if (!drawPending) { drawPending = true; requestAnimationFrame(draw); }
  }

  function when(iso, short) {
    if (!iso) return "";
    var d = new Date(ms(iso));
    var locale = lang === "zh" ? "zh-CN" : undefined;
    // a step's times: the clock alone when it is today's
    if (short && d.toDateString() === new Date(now()).toDateString()) {
      return d.toLocaleTimeString(locale, { hour12: false });
    }
    return d.toLocaleString(locale, { hour12: false });
  }
  function drawDetail() {
    var task = tasks.get(openId);
    if (!task) return;
    var st = state(task);
    $("d-name").textContent = task.taskName;
    var c = counts(task);
    var status = (ICON[st] || "") + " [" + c[0] + "/" + c[1] + "] " + duration(elapsed(task));
    var eta = etaText(task);
    $("d-status").textContent = status + (eta ? " · " + eta : "");
    var meta = $("d-meta");
    meta.replaceChildren();
    [[T.id, task.taskId], [T.agent, task.agent], [T.host, task.host], [T.started, when(task.startedAt)],
      [T.updated, when(task.updatedAt)], [T.finished_, when(task.finishedAt)]].forEach(function (row) {
      if (!row[1]) return;
      meta.appendChild(el("dt", "", row[0]));
      meta.appendChild(el("dd", "", row[1]));
    });
    var text = "";
    if (task.waiting && task.question) text = "⏸ " + T.question + ": " + task.question;
    else if (task.status === "error" && task.error) text = T.errorText + ": " + task.error;
    else if (task.status === "done" && task.result) text = T.result + ": " + task.result;
    $("d-text").textContent = text;
    var steps = $("d-steps");
    steps.replaceChildren();
    (task.steps || []).forEach(function (s) {
      var li = el("li", s.status);
      var head = el("div", "s-head");
      head.appendChild(el("span", "s-name", (ICON[s.status] || "") + " " + s.name));
      if (s.startedAt) {
        var end = s.finishedAt ? ms(s.finishedAt) : s.status === "running" ? now() : NaN;
        if (!isNaN(end)) head.appendChild(el("span", "s-dur", duration((end - ms(s.startedAt)) / 1000)));
      } else {
        head.appendChild(el("span", "s-dur", T.pending));
      }
      li.appendChild(head);
      if (s.startedAt) {
        li.appendChild(el("div", "s-when", when(s.startedAt, true) + (s.finishedAt ? " → " + when(s.finishedAt, true) : "")));
      }
      var msg = s.message || "";
      if (s.status === "running" && s.progress !== undefined && s.progress !== null) {
        msg = (msg ? msg + " " : "") + "(" + s.progress + "%)";
      }
      if (msg) li.appendChild(el("div", "s-msg", msg));
      steps.appendChild(li);
    });
  }
  function openTask(id) {
    openId = id;
    $("detail").hidden = false;
    history.replaceState(null, "", "?task=" + encodeURIComponent(id));
    drawDetail();
  }
  function closeTask() {
    openId = null;
    $("detail").hidden = true;
    history.replaceState(null, "", location.pathname);
  }

  function notice(text) {
    var n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }
  function setLive(on) {
    var l = $("live");
    l.dataset.state = on ? "live" : "connecting";
    l.textContent = on ? T.live : T.reconnecting;
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) { var e = new Error(body.error || r.statusText); e.status = r.status; throw e; }
          return body;
        });
      });
  }

  function onEvent(message) {
    if (message.lastEventId) lastId = message.lastEventId;
    try { keep(JSON.parse(message.data).task); } catch (e) { return; }
    schedule();
  }
  function connect() {
    if (source) source.close();
    var url = "/api/events" + (lastId ? "?lastEventId=" + encodeURIComponent(lastId) : "");
    source = new EventSource(url);
    source.onopen = function () { setLive(true); notice(""); };
    KINDS.forEach(function (k) { source.addEventListener(k, onEvent); });
    source.onerror = function () {
      setLive(false);
      // CONNECTING: the browser retries by itself, sending Last-Event-ID. CLOSED (the server
      // answered an error, e.g. Redis down): retry ourselves from the last id we saw.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1500);
    };
  }

  function load() {
    getJSON("/api/tasks?limit=200").then(function (body) {
      if (body.now) clockSkew = ms(body.now) - Date.now();
      if (Math.abs(clockSkew) < 1500) clockSkew = 0; // the ISO "now" has whole seconds only
      if (body.namespace) $("ns").textContent = body.namespace;
      (body.tasks || []).forEach(keep);
      lastId = body.lastEventId || lastId;
      schedule();
      connect();
      var wanted = new URLSearchParams(location.search).get("task");
      if (wanted) {
        if (tasks.has(wanted)) openTask(wanted);
        else getJSON("/api/tasks/" + encodeURIComponent(wanted)).then(function (t) {
          keep(t); schedule(); openTask(t.taskId);
        }).catch(function (e) { notice(T.notFound + wanted + " (" + e.message + ")"); });
      }
    }).catch(function (e) {
      setLive(false);
      if (e.status === 401) { notice(T.needToken); return; }
      notice(e.status === 503 ? T.unreachable : e.message);
      setTimeout(load, 2000);
    });
  }

  // -- wiring ---------------------------------------------------------------------------
  document.querySelectorAll("#filters button").forEach(function (b) {
    b.textContent = T[b.dataset.filter];
    b.classList.toggle("on", b.dataset.filter === filter);
    b.addEventListener("click", function () {
      filter = b.dataset.filter;
      document.querySelectorAll("#filters button").forEach(function (x) { x.classList.toggle("on", x === b); });
      draw();
    });
  });
  $("q").placeholder = T.search;
  $("q").addEventListener("input", function (e) { query = e.target.value.trim().toLowerCase(); draw(); });
  $("empty").textContent = T.empty;
  $("tasks").addEventListener("click", function (e) {
    var li = e.target.closest(".task");
    if (li) openTask(li.dataset.id);
  });
  $("tasks").addEventListener("keydown", function (e) {
    var li = e.target.closest(".task");
    if (li && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); openTask(li.dataset.id); }
  });
  $("close").addEventListener("click", closeTask);
  $("detail").addEventListener("click", function (e) { if (e.target === $("detail")) closeTask(); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && openId) closeTask(); });
  setLive(false);
  setInterval(schedule, 1000); // elapsed times tick; stalls appear without an event
  load();
})();
