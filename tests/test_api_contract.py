"""Every path of the WebXTerm Community 1.0 API (and the portal's additions in API.md) exists
with the right method, and answers JSON errors — never HTML, never a 500 — without auth."""

from __future__ import annotations

import re

import pytest

CONTRACT = """
POST /api/signup
POST /api/login
POST /api/auth/refresh
POST /api/auth/logout
GET /api/machines
POST /api/machines
GET /api/machines/by-id/1
GET /api/machines/AGENT
DELETE /api/machines/AGENT
POST /api/machines/AGENT/command
GET /api/machines/AGENT/logs
GET /api/machines/AGENT/logs/search
GET /api/machines/AGENT/sessions
GET /api/machines/AGENT/sessions/active
GET /api/machines/AGENT/access/users
POST /api/machines/AGENT/access/grant
POST /api/machines/AGENT/access/revoke
POST /api/machines/register
GET /api/machines/enroll.sh
GET /api/terminal/AGENT/ws
POST /api/terminal/AGENT/ticket
GET /api/terminal/sessions
DELETE /api/terminal/sessions/SID
GET /api/sessions/SID
GET /api/dashboard/stats
GET /api/dashboard/recent-machines
GET /api/dashboard/recent-activity
GET /api/profile
POST /api/profile/regenerate-api-key
POST /api/profile/reset-password
POST /api/profile/upload-avatar
GET /api/users
GET /api/community/issues
POST /api/community/issues
GET /api/community/issues/1
PUT /api/community/issues/1
DELETE /api/community/issues/1
GET /api/community/issues/1/fixes
POST /api/community/issues/1/fixes
POST /api/community/issues/1/fixes/1/like
DELETE /api/community/issues/1/fixes/1/like
POST /api/community/issues/1/fixes/1/accept
POST /api/community/upload
GET /health
"""
ROUTES = [tuple(line.split()) for line in CONTRACT.strip().splitlines()]
PUBLIC = {
    "/api/signup",
    "/api/login",
    "/api/auth/refresh",
    "/api/machines/register",
    "/api/machines/enroll.sh",
    "/health",
}


@pytest.mark.parametrize("method, path", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_contract_route_exists(app, method, path):
    ws = path.endswith("/ws")
    adapter = app.url_map.bind("localhost", url_scheme="ws" if ws else "http")
    endpoint, _args = adapter.match(path, method=method, websocket=ws)
    assert endpoint


@pytest.mark.parametrize(
    "method, path",
    [r for r in ROUTES if r[1] not in PUBLIC and not r[1].endswith("/ws")],
    ids=[f"{m} {p}" for m, p in ROUTES if p not in PUBLIC and not p.endswith("/ws")],
)
def test_protected_routes_answer_401_json_without_auth(client, method, path):
    resp = client.open(path, method=method, json={})
    assert resp.status_code == 401, (method, path, resp.status_code)
    assert resp.is_json and resp.get_json()["error"]


def test_every_api_route_is_documented(app):
    """docs/api.md lists every JSON route the app serves (so the reference cannot rot)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    missing = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r":\1", rule.rule)
        if path.startswith("/api/") and f"`{path}`" not in doc:
            missing.append(path)
    assert not missing, f"undocumented in docs/api.md: {sorted(set(missing))}"


def test_an_id_out_of_range_is_404_with_every_method_of_the_path(app, client, make_user, auth):
    """Found by schemathesis (issue 19): DELETE/PUT/PATCH /api/community/issues/2147483648 was
    a 405 (its GET rule claimed the path) while the spec and GET said 404. Every `<int:...>`
    rule, every method, an id just past the bound and far past it: 404, never 405."""
    headers = auth(make_user("bigids"))
    checked = 0
    for rule in app.url_map.iter_rules():
        if "<int:" not in rule.rule or not rule.rule.startswith("/api/"):
            continue
        for too_big in ("2147483648", "99999999999", "-1"):
            path = re.sub(r"<int:\w+>", too_big, rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                resp = client.open(path, method=method, headers=headers, json={})
                assert resp.status_code == 404, (method, path, resp.status_code)
                assert resp.is_json
                checked += 1
        # The largest id still routes (then 404 from the lookup, or the view's own answer).
        path = re.sub(r"<int:\w+>", str(2**31 - 1), rule.rule)
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        assert app.url_map.bind("localhost").match(path, method=method)[0] == rule.endpoint
    assert checked > 30
