"""Every route that acts on one machine, on both faces, against the policy table.

The routes come from `app.url_map` (each rule taking an agent_id or a machine_id); ROUTES
maps each (endpoint, method) to its action in portal.machines.access.POLICY, and the
expected answers are generated from that table: a stranger gets 404 (never a 403 that
confirms the machine exists), a role too small for the action gets 403, anyone else gets
past the check. A route missing from ROUTES fails the test, so a new one cannot slip by.

Requests that pass the check send bodies the service refuses after it (an empty command,
no user to grant, a machine still in use as a jump host...), so the world stays as it was
from one route to the next.
"""

from __future__ import annotations

import pytest

from portal.machines.access import CONNECTION, POLICY, RANK

pytestmark = pytest.mark.timeout(120)

ROLES = ["stranger", "viewer", "operator", "admin", "owner", "global_admin"]

#: (endpoint, method) -> (action, body). The body is JSON for the API, a form for pages.
#: None as body: not requested here (with the reason in WHY_NOT_REQUESTED).
ROUTES: dict[tuple[str, str], tuple[str, dict | None]] = {
    # HTML face
    ("machines.detail", "GET"): ("view", {}),
    ("machines.logs", "GET"): ("view_logs", {}),
    ("machines.run", "POST"): ("run_command", {"command": ""}),
    ("machines.edit", "GET"): ("update", {}),
    ("machines.edit", "POST"): ("update", {"name": ""}),
    # a new address's host key: only those who may move the machine (host "" is a 4xx after)
    ("machines.edit_scan", "POST"): ("change_connection", {"host": ""}),
    ("machines.access", "POST"): ("grant", {"action": "grant", "user": "", "role": "viewer"}),
    ("machines.hostkey_scan", "POST"): ("scan_host_key", {}),
    ("machines.hostkey_trust", "POST"): ("retrust_host_key", {"host_key": "x"}),
    ("machines.check", "POST"): ("check_connection", None),
    ("machines.enroll_token", "POST"): ("new_registration_token", {}),
    ("machines.delete", "POST"): ("delete", {}),
    ("terminal.page", "GET"): ("open_terminal", {}),
    ("files.transfers", "GET"): ("browse_files", {}),
    ("files.page", "GET"): ("browse_files", {}),
    # JSON face
    ("machines_api.detail", "GET"): ("view", {}),
    ("machines_api.by_id", "GET"): ("view", {}),
    ("machines_api.logs", "GET"): ("view_logs", {}),
    ("machines_api.logs_search", "GET"): ("view_logs", {}),
    ("machines_api.command", "POST"): ("run_command", {"command": ""}),
    ("machines_api.update", "PATCH"): ("update", {"name": ""}),
    ("machines_api.update", "PUT"): ("update", {"name": ""}),
    ("machines_api.access_users", "GET"): ("list_access", {}),
    ("machines_api.access_grant", "POST"): ("grant", {"user": "", "role": "viewer"}),
    ("machines_api.access_revoke", "POST"): ("revoke", {"user": ""}),
    ("machines_api.check", "POST"): ("check_connection", None),
    ("machines_api.retrust", "POST"): ("retrust_host_key", {"host_key": "x"}),
    ("machines_api.enroll_token", "POST"): ("new_registration_token", {}),
    ("machines_api.delete", "DELETE"): ("delete", {}),
    ("terminal_api.ticket", "POST"): ("open_terminal", {}),
    ("terminal_api.machine_sessions", "GET"): ("view_sessions", {}),
    ("terminal_api.machine_sessions_active", "GET"): ("view_sessions", {}),
    ("terminal_ws.terminal", "GET"): ("open_terminal", None),
    # Files (portal.files): passing the check, GETs read the home folder or refuse a missing
    # path; writes send no path and get a 400 after the check.
    ("files_api.listing", "GET"): ("browse_files", {}),
    ("files_api.stat", "GET"): ("browse_files", {}),
    ("files_api.content", "GET"): ("browse_files", {}),
    ("files_api.transfers", "GET"): ("browse_files", {}),
    ("files_api.put_content", "PUT"): ("write_files", {}),
    ("files_api.mkdir", "POST"): ("write_files", {}),
    ("files_api.rename", "POST"): ("write_files", {}),
    ("files_api.delete", "POST"): ("write_files", {}),
    ("files_api.chmod", "POST"): ("write_files", {}),
    ("files_api.zip_folder", "GET"): ("browse_files", {}),
    ("files_api.tus_create", "POST"): ("write_files", {}),
    ("files_api.tus_patch", "PATCH"): ("write_files", None),
    ("files_api.tus_delete", "DELETE"): ("write_files", None),
}

WHY_NOT_REQUESTED = {
    # Passing the check connects to the machine; the refusals are the same call as the
    # command's (require before any work), and tests/test_machines_security.py checks them.
    "machines.check": "connects when allowed",
    "machines_api.check": "connects when allowed",
    # A socket is refused with a close frame after the upgrade, through the same
    # terminal.policy.machine_for_terminal as the ticket above: tests/test_terminal_auth.py
    # (test_viewer_cannot_open_terminal, test_stranger_gets_not_found) checks it live.
    "terminal_ws.terminal": "a WebSocket: refused after the upgrade",
    # An upload id that passes the check names no upload (404 after it); the roles are
    # checked live in tests/test_files_tus.py (test_viewer_cannot_upload_resumably).
    "files_api.tus_patch": "needs an upload created first",
    "files_api.tus_delete": "needs an upload created first",
}


def _machine_rules(app):
    out = {}
    for rule in app.url_map.iter_rules():
        if set(rule.arguments) & {"agent_id", "machine_id"}:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                out[(rule.endpoint, method)] = rule
    return out


def _expected(role: str, action: str, stores_secret: bool) -> int | None:
    """404 / 403, or None: gets past the access check."""
    if role == "stranger":
        return 404
    need = POLICY[action]
    if role in ("owner", "global_admin"):
        return None
    if need == CONNECTION:
        return 403 if role != "admin" or stores_secret else None
    return None if RANK[role] >= RANK[need] else 403


def test_every_machine_route_has_an_action(app):
    rules = _machine_rules(app)
    missing = sorted(set(rules) - set(ROUTES))
    stale = sorted(set(ROUTES) - set(rules))
    assert not missing, f"routes without an action in ROUTES: {missing}"
    assert not stale, f"ROUTES names routes that do not exist: {stale}"
    assert {action for action, _ in ROUTES.values()} <= set(POLICY)
    for (endpoint, _method), (_action, body) in ROUTES.items():
        assert body is not None or endpoint in WHY_NOT_REQUESTED


@pytest.fixture
def world(app, make_user, sshd_machine, caller_for):
    """The owner's machine (it stores a private key, and is the jump host of another, so
    deleting it is a 409 after the check) and a caller holding `role`."""
    from portal.extensions import db
    from portal.machines.models import Machine

    def _make(role: str):
        owner = make_user("owner")
        machine = sshd_machine(owner, "key")
        with app.app_context():
            db.session.add(
                Machine(name="behind", owner_id=owner.id, gateway_id=machine.id, status="offline")
            )
            db.session.commit()
        return machine, caller_for(machine, owner, role)

    return _make


def _url(app, rule, machine) -> str:
    values = {"agent_id": machine.agent_id, "machine_id": machine.id, "upload_id": "none"}
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **{k: values[k] for k in rule.arguments})


@pytest.mark.parametrize("role", ROLES)
def test_routes_follow_the_policy_table(app, client, auth, login, world, role):
    machine, caller = world(role)
    headers = auth(caller)
    csrf = login(caller)
    rules = _machine_rules(app)
    wrong, checked = [], 0
    for endpoint, method in sorted(ROUTES):
        action, body = ROUTES[(endpoint, method)]
        if body is None:
            continue
        url = _url(app, rules[(endpoint, method)], machine)
        api = url.startswith("/api/")
        if method == "GET":
            r = client.get(url, headers=headers if api else None)
        elif api:
            r = client.open(url, method=method, json=body, headers=headers)
        else:
            r = client.open(url, method=method, data=body, headers={"X-CSRFToken": csrf})
        checked += 1
        want = _expected(role, action, stores_secret=True)
        got = r.status_code
        if want is None:
            if got in (403, 404) or got >= 500:
                wrong.append(f"{method} {endpoint} ({action}): {got}, should pass the check")
        elif got != want:
            wrong.append(f"{method} {endpoint} ({action}): {got} != {want}")
        elif api:
            assert r.is_json and r.json.get("error"), (endpoint, r.get_data(as_text=True))
    assert checked >= len(ROUTES) - len(WHY_NOT_REQUESTED)
    assert not wrong, f"{role}: " + "; ".join(wrong)
