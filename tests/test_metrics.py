"""GET /metrics: who may scrape it, and figures that move when a real terminal and a real
command run on the real sshd."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from portal import create_app, signals
from tests.fixtures.gunicorn import workers_of
from tests.fixtures.terminal import wait_for
from tests.test_terminal_gunicorn import start_gunicorn  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(90)


def scrape(text: str) -> dict[tuple, float]:
    """{(sample name, ((label, value), ...)): value}"""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_without_a_token_only_loopback_clients(client):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    resp = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert resp.status_code == 403
    assert b"portal_" not in resp.data


def test_with_a_token_only_that_bearer(app_config):
    app = create_app({**app_config, "PORTAL_METRICS_TOKEN": "s3cret-metrics-token"})
    try:
        c = app.test_client()
        assert c.get("/metrics").status_code == 401  # loopback is not enough any more
        bad = c.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")
        ok = c.get(
            "/metrics",
            headers={"Authorization": "Bearer s3cret-metrics-token"},
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        )
        assert ok.status_code == 200 and b"portal_http_requests_total" in ok.data
    finally:
        signals.shutdown(app)


def test_http_requests_by_route_template_and_signin_failures(client, make_user):
    make_user("metricsuser")
    before = scrape(client.get("/metrics").get_data(as_text=True))
    assert (
        client.post("/api/login", json={"login": "metricsuser", "password": "wrong"}).status_code
        == 401
    )
    client.get("/api/machines/no-such-agent")
    after = scrape(client.get("/metrics").get_data(as_text=True))
    assert (
        value(after, "portal_signin_failures_total")
        == value(before, "portal_signin_failures_total") + 1
    )
    key = {"method": "GET", "route": "/api/machines/<agent_id>", "status": "401"}
    assert (
        value(after, "portal_http_requests_total", **key)
        == value(before, "portal_http_requests_total", **key) + 1
    )
    lat = {"method": "POST", "route": "/api/login"}
    assert value(after, "portal_http_request_duration_seconds_count", **lat) >= 1


def test_terminal_and_exec_figures_move(term_env, live_server, token_for):
    owner, machine, open_term = term_env

    def now() -> dict:
        return scrape(requests.get(f"{live_server.url}/metrics", timeout=10).text)

    before = now()
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo metrics-$((40+2))", r"metrics-42")
    during = now()
    assert value(during, "portal_terminals_live") == value(before, "portal_terminals_live") + 1
    assert (
        value(during, "portal_terminals_opened_total")
        == value(before, "portal_terminals_opened_total") + 1
    )
    for direction in ("in", "out"):
        assert value(during, "portal_terminal_bytes_total", direction=direction) > value(
            before, "portal_terminal_bytes_total", direction=direction
        )
    assert value(during, "portal_ssh_handshakes_total", outcome="ok") >= value(
        before, "portal_ssh_handshakes_total", outcome="ok"
    )

    resp = requests.post(
        f"{live_server.url}/api/machines/{machine.agent_id}/command",
        json={"command": "echo hi"},
        headers={"Authorization": f"Bearer {token_for(owner)}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    after_exec = now()
    assert (
        value(after_exec, "portal_exec_duration_seconds_count", outcome="ok")
        == value(during, "portal_exec_duration_seconds_count", outcome="ok") + 1
    )

    # A dropped socket only detaches; DELETE ends the session.
    gone = requests.delete(
        f"{live_server.url}/api/terminal/sessions/{sid}",
        headers={"Authorization": f"Bearer {token_for(owner)}"},
        timeout=10,
    )
    assert gone.status_code in (200, 204), gone.text
    assert wait_for(
        lambda: value(now(), "portal_terminals_live") == value(before, "portal_terminals_live")
    ), "the live terminal gauge did not come back down after the terminal ended"


def test_gunicorn_workers_share_one_scrape(start_gunicorn):  # noqa: F811 - the fixture
    """Two gunicorn workers: whichever answers the scrape, it counts every worker's requests."""
    base, proc, _log = start_gunicorn(workers=2, redis=True)
    key = {"method": "GET", "route": "/health/ready", "status": "200"}
    for _ in range(20):  # new connections each time: both workers take some
        assert requests.get(f"{base}/health/ready", timeout=10).status_code == 200
    seen = set()
    for _ in range(6):
        samples = scrape(requests.get(f"{base}/metrics", timeout=10).text)
        seen.add(value(samples, "portal_http_requests_total", **key))
    assert seen == {20.0}, seen
    assert len(workers_of(proc.pid)) == 2
