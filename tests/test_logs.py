"""PORTAL_LOG_FORMAT=json under gunicorn: one JSON object a line with the request id (also on the
terminal's lines), X-Request-Id in and out, and no password, token or key in any line."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import PASSWORD
from tests.fixtures.terminal import Term, wait_for
from tests.test_terminal_gunicorn import start_gunicorn  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)


def test_json_logs_carry_request_ids_and_no_secrets(
    start_gunicorn,  # noqa: F811 - the fixture
    monkeypatch,
    make_user,
    sshd_machine,
):
    monkeypatch.setenv("PORTAL_LOG_FORMAT", "json")
    owner = make_user("logowner")
    machine = sshd_machine(owner)
    base, _proc, logfile = start_gunicorn()

    # Real requests that carry secrets: a password, a JWT, an API key, a token in a URL.
    resp = requests.post(
        f"{base}/api/login", json={"login": "logowner", "password": PASSWORD}, timeout=30
    )
    assert resp.status_code == 200
    token, refresh = resp.json()["token"], resp.json()["refresh_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    requests.post(
        f"{base}/api/login", json={"login": "logowner", "password": "Wrong-pw-1"}, timeout=30
    )
    api_key = requests.post(
        f"{base}/api/profile/regenerate-api-key", headers=bearer, timeout=30
    ).json()["api_key"]
    mine = requests.get(
        f"{base}/api/machines",
        headers={"X-API-Key": api_key, "X-Request-Id": "rid-from-client-1"},
        timeout=30,
    )
    assert mine.status_code == 200 and mine.headers["X-Request-Id"] == "rid-from-client-1"
    odd = requests.get(
        f"{base}/health", headers={"X-Request-Id": "bad id\twith spaces"}, timeout=30
    )
    assert (
        odd.headers["X-Request-Id"] != "bad id\twith spaces"
        and len(odd.headers["X-Request-Id"]) == 32
    )

    # The terminal: a request id on the socket's request reaches the terminal's log line.
    ws = base.replace("http://", "ws://")
    term = Term(
        f"{ws}/api/terminal/{machine.agent_id}/ws?token={token}",
        header=["X-Request-Id: rid-terminal-0001"],
    )
    try:
        term.wait_control("ready")
        term.run("echo hi-$((1+1))", r"hi-2")
        term.control("[" * 30000)  # logged as one warning line by the socket's handler
        term.wait_control("error")
    finally:
        term.close()

    def lines():
        out = []
        for raw in logfile.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                out.append(json.loads(raw))
        return out

    assert wait_for(lambda: any(r["request_id"] == "rid-terminal-0001" for r in lines())), lines()
    text = logfile.read_text(errors="replace")
    for secret in (PASSWORD, "Wrong-pw-1", token, refresh, api_key):
        assert secret not in text
    for record in lines():
        assert {"time", "level", "logger", "message", "request_id"} <= set(record)
