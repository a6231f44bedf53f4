"""Editing a machine (issue 20): names unique per owner (409 on the API, a field error on
the page), the edit rules by role, a blank secret keeps the stored one, a move pins the new
address's host key only by a fingerprint a fresh scan presents, and the edit page shows
every error at once and keeps what was typed. Real sshd servers throughout (`sshd_jump`
plays the machine's new address)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from portal.formlimits import limits

pytestmark = pytest.mark.timeout(90)


def _row(agent_id: str) -> dict:
    from portal.extensions import db

    with db.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT name, host, port, username, auth_method, secret_enc, host_keys, "
                "gateway_id, tags, status FROM machines WHERE agent_id = :a"
            ),
            {"a": agent_id},
        ).one()
    return dict(row._mapping)


def _errors(html: str) -> dict[str, str]:
    return dict(re.findall(r'<p class="field-error" id="e-([a-z_]+)"[^>]*>([^<]+)</p>', html))


def _run(client, headers, agent_id, command="echo hi"):
    return client.post(
        f"/api/machines/{agent_id}/command", json={"command": command}, headers=headers
    )


# ---------------------------------------------------------------- names


def test_names_are_unique_per_owner_on_the_api(client, make_user, auth):
    alice, bob = make_user("alice"), make_user("bob")
    h = auth(alice)
    r = client.post("/api/machines", json={"name": "web"}, headers=h)
    assert r.status_code == 201
    web = r.json["machine"]["agent_id"]
    for name in ("web", "WEB", " web "):
        r = client.post("/api/machines", json={"name": name}, headers=h)
        assert r.status_code == 409, (name, r.json)
        assert r.json["field"] == "name" and r.json["code"] == "name_taken"
        assert "already have a machine named" in r.json["error"]
    # another owner's namespace is their own
    assert client.post("/api/machines", json={"name": "web"}, headers=auth(bob)).status_code == 201
    # rename onto a taken name: 409, nothing changes; keeping one's own name is fine
    r = client.post("/api/machines", json={"name": "db"}, headers=h)
    db_id = r.json["machine"]["agent_id"]
    r = client.patch(f"/api/machines/{db_id}", json={"name": "Web", "tags": ["x"]}, headers=h)
    assert r.status_code == 409 and r.json["field"] == "name"
    assert _row(db_id)["name"] == "db" and _row(db_id)["tags"] == ""
    r = client.patch(f"/api/machines/{web}", json={"name": "web", "tags": ["x"]}, headers=h)
    assert r.status_code == 200 and r.json["machine"]["tags"] == ["x"]
    r = client.put(f"/api/machines/{web}", json={"name": "Web"}, headers=h)  # its own, recased
    assert r.status_code == 200 and r.json["machine"]["name"] == "Web"
    # a global admin renaming alice's machine is told whose name it is
    boss = make_user("boss", role="admin")
    r = client.patch(f"/api/machines/{db_id}", json={"name": "web"}, headers=auth(boss))
    assert r.status_code == 409 and "its owner has" in r.json["error"]


def test_rows_that_differ_only_in_case_stay_editable(client, make_user, auth, make_machine):
    """Old rows may differ only in case (the index is exact): editing one keeps working."""
    alice = make_user("alice")
    make_machine(alice, name="web")
    other = make_machine(alice, name="WEB")
    r = client.patch(
        f"/api/machines/{other.agent_id}", json={"name": "WEB", "tags": ["y"]}, headers=auth(alice)
    )
    assert r.status_code == 200


def test_enrolled_hostname_gets_a_free_name(app, make_user, make_machine):
    from portal.extensions import db
    from portal.machines.naming import free_name

    alice = make_user("alice")
    make_machine(alice, name="web")
    make_machine(alice, name="web (2)")
    with app.app_context():
        assert free_name(alice.id, "web") == "web (3)"
        assert free_name(alice.id, "WEB") == "WEB (3)"
        assert free_name(alice.id, "db") == "db"
        assert len(free_name(alice.id, "w" * 200)) == 100
        db.session.rollback()


def test_the_database_refuses_a_duplicate_too(app, make_user, make_machine):
    from sqlalchemy.exc import IntegrityError

    from portal.extensions import db
    from portal.machines.models import Machine

    alice = make_user("alice")
    make_machine(alice, name="web")
    with app.app_context():
        db.session.add(Machine(name="web", owner_id=alice.id, status="pending"))
        with pytest.raises(IntegrityError):
            db.session.flush()
        db.session.rollback()


def test_migration_renames_existing_duplicates(tmp_path):
    """A database from before 0014 with duplicate names per owner upgrades cleanly."""
    from alembic import command
    from sqlalchemy import inspect

    from portal.cli import alembic_config
    from portal.db import make_engine

    url = f"sqlite:///{tmp_path / 'dups.db'}"
    command.upgrade(alembic_config(url), "0012_command_offset")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for uid, name in ((1, "alice"), (2, "bob")):
                conn.execute(
                    text(
                        "INSERT INTO users (id, email, username, username_key, role, "
                        "active, token_version, created_at) VALUES (:i, :e, :n, :n, 'user', "
                        "1, 0, '2026-01-01 00:00:00')"
                    ),
                    {"i": uid, "e": f"{name}@example.test", "n": name},
                )
            rows = [
                (1, "web", 1),
                (2, "web", 1),
                (3, "web", 1),
                (4, "web (2)", 1),  # the suffix the first duplicate would want is taken
                (5, "web", 2),  # bob's: another namespace
                (6, "x", None),
                (7, "x", None),  # ownerless: left alone
                (8, "WEB", 1),  # differs only in case: stays
            ]
            for mid, name, owner in rows:
                conn.execute(
                    text(
                        "INSERT INTO machines (id, agent_id, name, port, host_keys, status, "
                        "tags, owner_id, created_at, sensitive) VALUES (:i, :a, :n, 22, '', "
                        "'pending', '', :o, '2026-01-01 00:00:00', 0)"
                    ),
                    {"i": mid, "a": f"agent{mid}", "n": name, "o": owner},
                )
    finally:
        engine.dispose()
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            names = dict(conn.execute(text("SELECT id, name FROM machines")).all())
        assert names == {
            1: "web",
            2: "web (3)",
            3: "web (4)",
            4: "web (2)",
            5: "web",
            6: "x",
            7: "x",
            8: "WEB",
        }
        indexes = {i["name"]: i for i in inspect(engine).get_indexes("machines")}
        assert indexes["uq_machines_owner_name"]["unique"]
    finally:
        engine.dispose()
    command.downgrade(alembic_config(url), "0012_command_offset")


# ---------------------------------------------------------------- edit rules by role


ROLES = ["stranger", "viewer", "operator", "admin", "owner", "global_admin"]


@pytest.mark.parametrize("role", ROLES)
def test_edit_rules_by_role(client, auth, make_user, sshd_machine, caller_for, sshd, role):
    """API.md "Roles": edit is admin; moving a machine that stores a secret is owner or
    global admin; a stranger is told nothing (404)."""
    owner = make_user("owner")
    m = sshd_machine(owner, "password")
    caller = caller_for(m, owner, role)
    h = auth(caller)
    url = f"/api/machines/{m.agent_id}"
    want = {"stranger": 404, "viewer": 403, "operator": 403}.get(role, 200)
    r = client.patch(url, json={"name": f"by-{role}"}, headers=h)
    assert r.status_code == want, r.json
    # the credentials: replaced by an admin (the same password here, so it still connects)
    r = client.patch(url, json={"auth_method": "password", "password": sshd.password}, headers=h)
    assert r.status_code == want, r.json
    # where it connects: owner and global admin only (it stores a password)
    move = {"port": sshd.port + 1}
    r = client.patch(url, json=move, headers=h)
    assert r.status_code == (
        want if role in ("owner", "global_admin", "stranger") else 403 if role == "admin" else want
    ), r.json
    if role == "admin":
        assert "owner" in r.json["error"]
    row = _row(m.agent_id)
    assert row["port"] == (sshd.port + 1 if role in ("owner", "global_admin") else sshd.port)


def test_blank_secret_keeps_the_stored_one(client, auth, make_user, sshd_machine, sshd):
    alice = make_user("alice")
    m = sshd_machine(alice, "key")
    h = auth(alice)
    before = _row(m.agent_id)
    url = f"/api/machines/{m.agent_id}"
    r = client.patch(url, json={"auth_method": "key", "private_key": "", "tags": ["a"]}, headers=h)
    assert r.status_code == 200
    assert _row(m.agent_id)["secret_enc"] == before["secret_enc"]
    # a passphrase alone cannot change a key it does not come with
    r = client.patch(url, json={"auth_method": "key", "passphrase": "x"}, headers=h)
    assert r.status_code == 400 and r.json["field"] == "private_key"
    # switching method needs the new secret
    r = client.patch(url, json={"auth_method": "password"}, headers=h)
    assert r.status_code == 400 and r.json["field"] == "password"
    assert _row(m.agent_id)["auth_method"] == "key"
    # a new password for the current method without naming it
    r = client.patch(
        url, json={"auth_method": "password", "password": sshd.password, "verify": True}, headers=h
    )
    assert r.status_code == 200 and r.json["machine"]["status"] == "online"
    assert r.json["machine"]["auth_method"] == "password"
    assert sshd.password not in r.get_data(as_text=True)
    assert _run(client, h, m.agent_id).json["stdout"] == "hi\n"
    # SSH user: checked like on create
    r = client.patch(url, json={"username": "bad user!"}, headers=h)
    assert r.status_code == 400 and r.json["field"] == "username"


def test_move_pins_the_new_host_key_by_fingerprint(
    client, auth, make_user, sshd_machine, sshd, sshd_jump
):
    alice = make_user("alice")
    m = sshd_machine(alice, "password")
    h = auth(alice)
    url = f"/api/machines/{m.agent_id}"
    before = _row(m.agent_id)
    move = {"host": sshd_jump.host, "port": sshd_jump.port}
    # a key line, or a fingerprint the new address does not present: 400, nothing changes
    for given in (sshd_jump.host_key_lines[0], sshd.host_key_fingerprints[0]):
        r = client.patch(url, json={**move, "host_key": given}, headers=h)
        assert r.status_code == 400 and r.json["field"] == "host_key", r.json
        assert _row(m.agent_id) == before
    r = client.patch(
        url,
        json={**move, "host_key": sshd_jump.host_key_fingerprints[0], "verify": True},
        headers=h,
    )
    assert r.status_code == 200, r.json
    body = r.json["machine"]
    assert body["port"] == sshd_jump.port and body["status"] == "online"
    assert body["host_key_fingerprints"] == [sshd_jump.host_key_fingerprints[0]]
    assert _run(client, h, m.agent_id).status_code == 200


# ---------------------------------------------------------------- the page


def test_edit_page_all_errors_at_once_keeps_what_was_typed(
    client, login, make_user, sshd_machine, make_machine, sshd
):
    alice = make_user("alice")
    m = sshd_machine(alice, "password")
    make_machine(alice, name="taken")
    csrf = login(alice)
    page = client.get(f"/machines/{m.agent_id}")
    assert f'href="/machines/{m.agent_id}/edit"' in page.get_data(as_text=True)
    r = client.get(f"/machines/{m.agent_id}/edit")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert sshd.password not in html  # the stored secret is never shown
    assert f'value="{sshd.host}"' in html and f'value="{sshd.username}"' in html
    assert f'maxlength="{limits()["machine_name"]}"' in html
    form = {
        "csrf_token": csrf,
        "name": "taken",
        "tags": "ok",
        "host": sshd.host,
        "port": "70000",
        "username": "bad user!",
        "auth_method": "key",
        "private_key": sshd.client_key_private_text,
        "passphrase": "",
        "password": "",
        "sensitive": ["0"],
    }
    r = client.post(f"/machines/{m.agent_id}/edit", data=form)
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and r.headers["Cache-Control"] == "no-store"
    errors = _errors(html)
    assert set(errors) >= {"name", "port", "username"}, errors
    assert "already have a machine named" in errors["name"]
    assert "65535" in errors["port"]
    # the pasted key is still there; nothing changed
    assert sshd.client_key_private_text.splitlines()[1] in html
    assert 'value="taken"' in html and 'value="70000"' in html
    assert _row(m.agent_id)["name"] == m.name and _row(m.agent_id)["auth_method"] == "password"
    # fixed without pasting again: the key goes in, the connection is checked
    r = client.post(
        f"/machines/{m.agent_id}/edit",
        data={**form, "name": "renamed", "port": str(sshd.port), "username": sshd.username},
    )
    assert r.status_code == 303, _errors(r.get_data(as_text=True))
    row = _row(m.agent_id)
    assert (row["name"], row["auth_method"], row["status"]) == ("renamed", "key", "online")
    html = client.get(f"/machines/{m.agent_id}").get_data(as_text=True)
    assert "Saved. renamed is reachable." in html


def test_edit_page_move_needs_a_confirmed_host_key(
    client, login, make_user, sshd_machine, sshd, sshd_jump
):
    alice = make_user("alice")
    m = sshd_machine(alice, "password")
    csrf = login(alice)
    url = f"/machines/{m.agent_id}/edit"
    form = {
        "csrf_token": csrf,
        "name": m.name,
        "tags": "",
        "host": sshd_jump.host,
        "port": str(sshd_jump.port),
        "gateway": "",
        "username": sshd.username,
        "auth_method": "password",
        "password": "",
    }
    r = client.post(url, data=form)
    assert (
        r.status_code == 422
        and "fetch the host key" in _errors(r.get_data(as_text=True))["host_key"]
    )
    # the fetch shows what the new address presents (fingerprints only)
    r = client.post(
        f"{url}/scan",
        data={"host": sshd_jump.host, "port": sshd_jump.port, "gateway": ""},
        headers={"X-CSRFToken": csrf, "HX-Request": "true"},
    )
    scanned = re.findall(r'name="host_key" value="([^"]+)"', r.get_data(as_text=True))
    assert set(scanned) == set(sshd_jump.host_key_fingerprints)
    assert "BEGIN" not in r.get_data(as_text=True) and "AAAA" not in r.get_data(as_text=True)
    r = client.post(url, data={**form, "host_key": scanned})  # box not ticked
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and "tick the box" in _errors(html)["host_key"]
    assert all(fp in html for fp in scanned)  # shown again, no need to fetch again
    assert _row(m.agent_id)["port"] == sshd.port
    r = client.post(url, data={**form, "host_key": scanned, "host_key_ack": "1"})
    assert r.status_code == 303, _errors(r.get_data(as_text=True))
    row = _row(m.agent_id)
    assert row["port"] == sshd_jump.port and row["status"] == "online"
    assert set(row["host_keys"].splitlines()) == set(sshd_jump.host_key_lines)


def test_edit_page_by_role(client, login, make_user, sshd_machine, grant_role, sshd):
    owner, op, adm = make_user("owner"), make_user("op"), make_user("adm")
    m = sshd_machine(owner, "password")
    grant_role(m, op, "operator")
    grant_role(m, adm, "admin")
    csrf = login(op)
    assert f"/machines/{m.agent_id}/edit" not in client.get(f"/machines/{m.agent_id}").get_data(
        as_text=True
    )
    assert client.get(f"/machines/{m.agent_id}/edit").status_code == 403
    r = client.post(f"/machines/{m.agent_id}/edit", data={"csrf_token": csrf, "name": "x"})
    assert r.status_code == 403
    client.post("/logout", data={"csrf_token": csrf})
    csrf = login(adm)
    html = client.get(f"/machines/{m.agent_id}/edit").get_data(as_text=True)
    # a machine admin who is not the owner: no host/port/jump host fields, a note instead
    assert 'id="f-host"' not in html and "only its owner or a global admin" in html
    assert 'id="f-username"' in html and 'id="f-password"' in html
    r = client.post(
        f"/machines/{m.agent_id}/edit",
        data={
            "csrf_token": csrf,
            "name": m.name,
            "host": "192.0.2.99",
            "host_key": "SHA256:x",
            "host_key_ack": "1",
        },
    )
    assert r.status_code == 403 and _row(m.agent_id)["host"] == sshd.host
    r = client.post(
        f"/machines/{m.agent_id}/edit/scan",
        data={"host": sshd.host, "port": sshd.port},
        headers={"X-CSRFToken": csrf, "HX-Request": "true"},
    )
    assert r.status_code == 403
    r = client.post(f"/machines/{m.agent_id}/edit", data={"csrf_token": csrf, "name": "by-adm"})
    assert r.status_code == 303 and _row(m.agent_id)["name"] == "by-adm"


def test_pending_machine_edit_page_has_only_name_tags_sensitive(client, login, make_user):
    alice = make_user("alice")
    csrf = login(alice)
    r = client.post("/machines/enroll", data={"csrf_token": csrf, "name": "later", "tags": ""})
    assert r.status_code == 200
    agent_id = re.search(r"/machines/([A-Za-z0-9_-]{20,})", r.get_data(as_text=True))[1]
    html = client.get(f"/machines/{agent_id}/edit").get_data(as_text=True)
    assert 'id="f-name"' in html and 'id="f-sensitive"' in html
    assert 'id="f-host"' not in html and 'name="auth_method"' not in html
    r = client.post(
        f"/machines/{agent_id}/edit",
        data={"csrf_token": csrf, "name": "later-2", "tags": "a", "sensitive": ["0", "1"]},
    )
    assert r.status_code == 303
    row = _row(agent_id)
    assert (row["name"], row["tags"]) == ("later-2", "a")


def test_machines_list_tells_look_alike_names_apart(client, login, make_user, make_machine):
    alice, bob = make_user("alice"), make_user("bob", role="admin")
    make_machine(alice, name="web", host="10.0.0.1")
    make_machine(alice, name="WEB", host="10.0.0.2")  # an old row: differs only in case
    make_machine(bob, name="db", host="10.0.0.3")
    make_machine(alice, name="db", host="10.0.0.4")  # another owner's "db"
    make_machine(alice, name="solo", host="10.0.0.5")
    login(bob)  # a global admin sees both owners' machines
    html = client.get("/machines").get_data(as_text=True)
    notes = re.findall(r'<span class="muted small mono look-alike">([^<]+)</span>', html)
    assert sorted(notes) == sorted(
        [
            "deploy@10.0.0.1 · alice’s",
            "deploy@10.0.0.2 · alice’s",
            "deploy@10.0.0.3",
            "deploy@10.0.0.4 · alice’s",
        ]
    ), notes
