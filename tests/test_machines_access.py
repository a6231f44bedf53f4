"""Who may do what: the role x route matrix on both faces (JSON API and HTML pages).

A machine the caller may not see is a 404 everywhere (never a 403 that confirms it
exists); a visible machine with too small a role is a 403."""

from __future__ import annotations

import pytest

from tests.test_machines_api import _grant

pytestmark = pytest.mark.timeout(90)

RANK = {None: 0, "viewer": 1, "operator": 2, "admin": 3}
ROLES = ["stranger", "viewer", "operator", "admin", "owner", "global_admin"]


def _effective(role: str) -> str | None:
    return {"stranger": None, "owner": "admin", "global_admin": "admin"}.get(role, role)


@pytest.fixture
def world(make_user, sshd_machine, grant_role, caller_for):
    """owner's machine on the real sshd, a caller for each role, and a victim with a grant."""

    def _make(role: str):
        owner = make_user("owner")
        machine = sshd_machine(owner, "key")
        victim = make_user("victim")
        grant_role(machine, victim, "viewer")
        make_user("newcomer")
        return machine, caller_for(machine, owner, role), victim

    return _make


def _expect(role: str, need: str, ok: int) -> int:
    eff = _effective(role)
    if eff is None:
        return 404
    if need == "owner":  # where a stored secret goes: owner or global admin only
        return ok if role in ("owner", "global_admin") else 403
    return ok if RANK[eff] >= RANK[need] else 403


# (method, path template, json body, role needed, status when allowed). Destructive last.
API_ROUTES = [
    ("GET", "/api/machines/{a}", None, "viewer", 200),
    ("GET", "/api/machines/by-id/{id}", None, "viewer", 200),
    ("GET", "/api/machines/{a}/logs", None, "viewer", 200),
    ("GET", "/api/machines/{a}/logs/search?q=hello", None, "viewer", 200),
    ("POST", "/api/machines/{a}/command", {"command": "echo hello"}, "operator", 200),
    ("GET", "/api/machines/{a}/access/users", None, "admin", 200),
    (
        "POST",
        "/api/machines/{a}/access/grant",
        {"user": "newcomer", "role": "viewer"},
        "admin",
        200,
    ),
    ("PATCH", "/api/machines/{a}", {"name": "renamed", "tags": ["x"]}, "admin", 200),
    ("POST", "/api/machines/{a}/host-key", {"host_key": "{hostfp}"}, "owner", 200),
    ("POST", "/api/machines/{a}/access/revoke", {"user": "victim"}, "admin", 200),
    ("DELETE", "/api/machines/{a}", None, "admin", 204),
]

PAGE_ROUTES = [
    ("GET", "/machines/{a}", None, "viewer", 200),
    ("GET", "/machines/{a}/logs?q=hello", None, "viewer", 200),
    ("POST", "/machines/{a}/run", {"command": "echo hello"}, "operator", 200),
    (
        "POST",
        "/machines/{a}/access",
        {"action": "grant", "user": "newcomer", "role": "viewer"},
        "admin",
        200,
    ),
    ("POST", "/machines/{a}/host-key/scan", {}, "admin", 200),
    ("POST", "/machines/{a}/edit", {"name": "renamed", "tags": "x"}, "admin", 303),
    ("POST", "/machines/{a}/access", {"action": "revoke", "user": "victim"}, "admin", 200),
    ("POST", "/machines/{a}/delete", {}, "admin", 303),
]


def _fill(value, machine, sshd):
    if isinstance(value, str):
        return value.format(
            a=machine.agent_id,
            id=machine.id,
            hostkey=sshd.host_key_lines[0],
            hostfp=sshd.host_key_fingerprints[0],
        )
    if isinstance(value, dict):
        return {k: _fill(v, machine, sshd) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", ROLES)
def test_api_matrix(client, auth, world, sshd, role):
    machine, caller, _ = world(role)
    headers = auth(caller)
    wrong = []
    listed = [m["agent_id"] for m in client.get("/api/machines", headers=headers).json["machines"]]
    if (machine.agent_id in listed) != (_effective(role) is not None):
        wrong.append(f"list shows machine: {machine.agent_id in listed}")
    for method, path, body, need, ok in API_ROUTES:
        url = _fill(path, machine, sshd)
        r = client.open(url, method=method, json=_fill(body, machine, sshd), headers=headers)
        want = _expect(role, need, ok)
        if r.status_code != want:
            wrong.append(
                f"{method} {path}: {r.status_code} != {want} {r.get_data(as_text=True)[:200]}"
            )
        if r.status_code == 403:
            assert "error" in r.json
    assert not wrong, f"{role}: " + "; ".join(wrong)


@pytest.mark.parametrize("role", ROLES)
def test_page_matrix(client, login, world, sshd, role):
    machine, caller, _ = world(role)
    csrf = login(caller)
    wrong = []
    page = client.get("/machines").get_data(as_text=True)
    if (f"/machines/{machine.agent_id}" in page) != (_effective(role) is not None):
        wrong.append("list page visibility")
    for method, path, form, need, ok in PAGE_ROUTES:
        url = _fill(path, machine, sshd)
        r = client.open(
            url, method=method, data=_fill(form, machine, sshd), headers={"X-CSRFToken": csrf}
        )
        want = _expect(role, need, ok)
        if r.status_code != want:
            wrong.append(f"{method} {path}: {r.status_code} != {want}")
    assert not wrong, f"{role}: " + "; ".join(wrong)


def _terminal_href(app, agent_id: str) -> str:
    """The terminal page's URL (a stand-in endpoint when the terminal feature is absent)."""
    if "terminal.page" not in app.view_functions:
        app.add_url_rule("/t/<agent_id>", endpoint="terminal.page", view_func=lambda agent_id: "")
    with app.test_request_context():
        from flask import url_for

        return url_for("terminal.page", agent_id=agent_id)


def test_detail_page_buttons_follow_the_role(client, app, login, world, sshd):
    machine, viewer, _ = world("viewer")
    _terminal_href(app, machine.agent_id)
    login(viewer)
    html = client.get(f"/machines/{machine.agent_id}").get_data(as_text=True)
    assert "Open terminal" not in html and "Run a command" not in html
    assert "Delete machine" not in html and "Access" not in html.split("Command log")[0]


def test_operator_sees_terminal_button_and_command_box(client, app, login, world):
    machine, operator, _ = world("operator")
    href = _terminal_href(app, machine.agent_id)
    login(operator)
    html = client.get(f"/machines/{machine.agent_id}").get_data(as_text=True)
    assert f'href="{href}"' in html and "Open terminal" in html
    assert "Run a command" in html and "Delete machine" not in html


def test_revoke_removes_sight_at_once_and_sends_signals(client, app, auth, world, request):
    from portal import signals

    revoked, deleted = [], []

    def on_revoked(sender, user_id, machine_id, **_):
        revoked.append((user_id, machine_id))

    def on_deleted(sender, machine_id, **_):
        deleted.append(machine_id)

    signals.access_revoked.connect(on_revoked, sender=app)
    signals.machine_deleted.connect(on_deleted, sender=app)
    request.addfinalizer(lambda: signals.access_revoked.disconnect(on_revoked, sender=app))
    request.addfinalizer(lambda: signals.machine_deleted.disconnect(on_deleted, sender=app))
    machine, operator, victim = world("operator")
    owner_headers = None
    from portal.accounts.models import User
    from portal.extensions import db

    with app.app_context():
        owner = db.session.get(User, machine.owner_id)
        db.session.expunge(owner)
    owner_headers = auth(owner)
    assert (
        client.get(f"/api/machines/{machine.agent_id}", headers=auth(operator)).status_code == 200
    )
    r = client.post(
        f"/api/machines/{machine.agent_id}/access/revoke",
        json={"user": operator.id},
        headers=owner_headers,
    )
    assert r.status_code == 200
    assert revoked == [(operator.id, machine.id)]
    assert (
        client.get(f"/api/machines/{machine.agent_id}", headers=auth(operator)).status_code == 404
    )
    # demoting to viewer also closes terminals (operator -> viewer)
    _grant(client, owner_headers, machine.agent_id, victim.username, "operator")
    _grant(client, owner_headers, machine.agent_id, victim.email, "viewer")
    assert revoked[-1] == (victim.id, machine.id)
    users = client.get(
        f"/api/machines/{machine.agent_id}/access/users", headers=owner_headers
    ).json["users"]
    assert {u["username"]: u["role"] for u in users} == {"owner": "admin", "victim": "viewer"}
    assert set(users[0]) >= {"user_id", "username", "email", "role", "granted_at"}
    r = client.delete(f"/api/machines/{machine.agent_id}", headers=owner_headers)
    assert r.status_code == 204 and deleted == [machine.id]


@pytest.mark.parametrize(
    "body,status",
    [
        ({"user": "nobody-here", "role": "viewer"}, 404),
        ({"user": "victim", "role": "superuser"}, 400),
        ({"user": "", "role": "viewer"}, 400),
        ({"user": True, "role": "viewer"}, 400),
        ({"user": "owner", "role": "viewer"}, 409),
    ],
)
def test_grant_bad_input(client, auth, world, body, status):
    machine, owner, _ = world("owner")
    r = client.post(
        f"/api/machines/{machine.agent_id}/access/grant", json=body, headers=auth(owner)
    )
    assert r.status_code == status and r.json["error"]


def test_html_post_without_csrf_is_refused(client, login, world):
    machine, owner, _ = world("owner")
    login(owner)
    r = client.post(f"/machines/{machine.agent_id}/delete")
    assert r.status_code == 400
    assert client.get(f"/machines/{machine.agent_id}").status_code == 200
