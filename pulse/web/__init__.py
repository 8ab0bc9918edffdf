"""``pulse web``: the dashboard, the HTTP API and the live event stream of one namespace.

An optional extra (``pip install 'live-task-pulse[web]'``): starlette, uvicorn and
prometheus_client. Nothing on the per-step CLI path imports this package.

    app.py      routes: the page, /api, /metrics, /healthz
    access.py   who may read and write (the token, its cookie, loopback only without one)
    bodies.py   request bodies read and checked (size, JSON, fields, types)
    calls.py    API calls onto the library's Client (a pool of them; the op-id seam)
    hub.py      the one stream reader per process, fanned out to every open page
    metrics.py  Prometheus text
    server.py   uvicorn, and the checks before it listens
    static/     the page: plain HTML, CSS and JS
"""
