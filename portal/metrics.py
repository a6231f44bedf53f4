"""Prometheus metrics: GET /metrics, and the counters the rest of the portal moves.

Multiprocess-safe: under gunicorn, portal/gunicorn_conf.py points PROMETHEUS_MULTIPROC_DIR at a
private folder before the workers import this module, every worker writes its figures there,
and a scrape served by any worker sums them (dead workers are marked in `child_exit`). Outside
gunicorn (flask run, tests) the process's own registry is served.

Access: with PORTAL_METRICS_TOKEN set, only `Authorization: Bearer <token>` (else 401); unset,
only loopback clients (else 403). Never open by default. See docs/operations.md, "Metrics".
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

bp = Blueprint("metrics", __name__)

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter(
    "portal_http_requests_total",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "portal_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=LATENCY,
)
TERMINALS_LIVE = Gauge(
    "portal_terminals_live", "Live terminal sessions", multiprocess_mode="livesum"
)
TERMINALS_OPENED = Counter("portal_terminals_opened_total", "Terminal sessions opened")
WATCHERS_LIVE = Gauge(
    "portal_terminal_watchers_live", "Live read-only watch sockets", multiprocess_mode="livesum"
)
TERMINAL_BYTES = Counter(
    "portal_terminal_bytes_total", "Terminal bytes (in: typed, out: shown)", ["direction"]
)
# The keystroke path's two counters, labelled once: labels() per keystroke cost ~2.3 µs each
# (a lock and a dict look-up) on top of the increment.
TERMINAL_BYTES_IN = TERMINAL_BYTES.labels("in")
TERMINAL_BYTES_OUT = TERMINAL_BYTES.labels("out")
EXEC_LATENCY = Histogram(
    "portal_exec_duration_seconds", "API command latency by outcome", ["outcome"], buckets=LATENCY
)
SSH_CONNECTIONS = Gauge(
    "portal_ssh_pool_connections", "Open pooled SSH connections", multiprocess_mode="livesum"
)
SSH_HANDSHAKES = Counter("portal_ssh_handshakes_total", "SSH connections by outcome", ["outcome"])
SIGNIN_FAILURES = Counter("portal_signin_failures_total", "Failed password sign-ins")
RATE_LIMITED = Counter("portal_rate_limited_total", "Requests refused with 429", ["route"])
BUS_MESSAGES = Counter("portal_bus_messages_total", "Terminal bus messages published", ["kind"])
JOB_LAG = Histogram(
    "portal_background_job_lag_seconds",
    "How late the terminal janitor's 1 s tick ran",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def _loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address(addr or "").is_loopback
    except ValueError:
        return False


@bp.get("/metrics")
def metrics():
    token = current_app.config.get("PORTAL_METRICS_TOKEN") or os.environ.get("PORTAL_METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            resp = Response("metrics need the bearer token\n", 401, mimetype="text/plain")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return resp
    elif not _loopback(request.remote_addr):
        return Response("metrics are served to loopback clients only\n", 403, mimetype="text/plain")
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def init_app(app) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def _start_timer():
        g.metrics_t0 = time.perf_counter()

    @app.after_request
    def _count(resp):
        t0 = g.pop("metrics_t0", None)
        if t0 is not None:
            route = _route()
            HTTP_REQUESTS.labels(request.method, route, str(resp.status_code)).inc()
            HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - t0)
            if resp.status_code == 429:
                RATE_LIMITED.labels(route).inc()
        return resp
