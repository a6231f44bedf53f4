"""Security review fixes for machines: a key pair per machine (no shared portal key), SSRF
(allow-list on the resolved address, fixed error strings, scan restricted and rate-limited),
bad input that used to 500, jump-host rights re-checked at connect time, single-use tokens."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text

from tests.test_machines_api import _direct, _grant, _register_new

pytestmark = pytest.mark.timeout(60)

SECRET_LINE = "internal-secret-line-99"


# ---------------------------------------------------------------- 1. a key pair per machine


def test_portal_key_machines_do_not_share_a_key(client, make_user, auth, sshd):
    """Alice's portal_key machine works once its own key is installed; Bob pointing a new
    portal_key machine at the same host gets a different key that opens nothing."""
    alice, bob = make_user("alice"), make_user("bob")
    r = client.post("/api/machines", json=_direct(sshd, "portal_key"), headers=auth(alice))
    assert r.status_code == 201
    alice_pub, alice_id = r.json["public_key"], r.json["machine"]["agent_id"]
    sshd.authorize_key(alice_pub)
    assert client.post(f"/api/machines/{alice_id}/check", headers=auth(alice)).json["ok"]

    r = client.post(
        "/api/machines", json=_direct(sshd, "portal_key", name="bobs"), headers=auth(bob)
    )
    assert r.status_code == 201
    bob_machine = r.json["machine"]
    assert r.json["public_key"] != alice_pub and bob_machine["status"] == "error"
    r = client.post(
        f"/api/machines/{bob_machine['agent_id']}/command",
        json={"command": "id"},
        headers=auth(bob),
    )
    assert r.status_code == 502 and r.json["code"] == "auth_failed"
    r = client.post(f"/api/machines/{bob_machine['agent_id']}/check", headers=auth(bob))
    assert r.status_code == 200 and r.json["ok"] is False
    # The private halves are stored encrypted, never returned.
    from portal.extensions import db

    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT key_enc, public_key FROM machines")).all()
    assert all(k.startswith("gAAAA") and "PRIVATE" not in k for k, _ in rows)
    assert len({p for _, p in rows}) == 2
    body = client.get(f"/api/machines/{alice_id}", headers=auth(alice)).get_data(as_text=True)
    assert "PRIVATE KEY" not in body and "key_enc" not in body


def test_no_shared_portal_key_left(client, app, make_user, auth):
    alice = make_user("alice")
    assert client.get("/api/machines/portal-key", headers=auth(alice)).status_code == 404
    from portal.extensions import db

    with db.engine.connect() as conn:
        tables = set(db.engine.dialect.get_table_names(conn))
    assert "portal_keys" not in tables


def test_enroll_script_installs_that_machines_own_key(client, make_user, auth):
    alice = make_user("alice")
    one = client.post("/api/machines", json={"name": "one"}, headers=auth(alice)).json
    two = client.post("/api/machines", json={"name": "two"}, headers=auth(alice)).json
    assert one["public_key"] != two["public_key"]
    src = client.get(
        "/api/machines/enroll.sh", query_string={"token": one["registration_token"]}
    ).get_data(as_text=True)
    assert f"PORTAL_KEY='{one['public_key']}'" in src and two["public_key"] not in src
    # A new token keeps the machine's key (an already-installed line stays valid).
    agent_id = one["machine"]["agent_id"]
    r = client.post(f"/api/machines/{agent_id}/enroll-token", headers=auth(alice))
    src = client.get(
        "/api/machines/enroll.sh", query_string={"token": r.json["registration_token"]}
    ).get_data(as_text=True)
    assert one["public_key"] in src


def test_page_shows_the_machines_public_key_and_check_again(client, login, make_user, sshd, auth):
    alice = make_user("alice")
    r = client.post("/api/machines", json=_direct(sshd, "portal_key"), headers=auth(alice))
    pub, agent_id = r.json["public_key"], r.json["machine"]["agent_id"]
    csrf = login(alice)
    page = client.get(f"/machines/{agent_id}").get_data(as_text=True)
    assert pub in page and "Check connection again" in page
    sshd.authorize_key(pub)
    r = client.post(
        f"/machines/{agent_id}/check", headers={"X-CSRFToken": csrf, "HX-Request": "true"}
    )
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/machines/{agent_id}"
    page = client.get(f"/machines/{agent_id}").get_data(as_text=True)
    assert "is reachable" in page
    assert (
        client.get(f"/api/machines/{agent_id}", headers=auth(alice)).json["machine"]["status"]
        == "online"
    )


def test_legacy_portal_key_machine_gets_its_own_key_on_check(
    client, app, make_user, auth, make_machine, sshd
):
    """A machine made with the old shared key (no key of its own) cannot connect; "check
    connection again" creates its own pair for the owner to install."""
    alice = make_user("alice")
    m = make_machine(
        alice,
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        auth_method="portal_key",
        host_keys=sshd.host_key_lines[0],
    )
    r = client.post(
        f"/api/machines/{m.agent_id}/command", json={"command": "true"}, headers=auth(alice)
    )
    assert r.status_code == 422 and "own" in r.json["error"]
    r = client.post(f"/api/machines/{m.agent_id}/check", headers=auth(alice))
    assert r.status_code == 200 and r.json["ok"] is False
    pub = r.json["machine"]["public_key"]
    assert pub.startswith("ssh-ed25519 ")
    sshd.authorize_key(pub)
    assert client.post(f"/api/machines/{m.agent_id}/check", headers=auth(alice)).json["ok"]


# ---------------------------------------------------------------- 2. SSRF


def test_scan_of_an_internal_port_echoes_nothing(client, make_user, auth, fake_service, login):
    alice = make_user("alice")
    svc = fake_service(f"SSH-{SECRET_LINE}\r\n".encode())
    r = client.post(
        "/api/machines/scan-host-key",
        json={"host": svc.host, "port": svc.port},
        headers=auth(alice),
    )
    assert r.status_code == 502
    assert r.json["error"] == f"could not connect to 127.0.0.1:{svc.port}: not an SSH server"
    assert "internal" not in r.get_data(as_text=True)
    csrf = login(alice)
    html = client.post(
        "/machines/scan-host-key",
        data={"host": svc.host, "port": svc.port},
        headers={"X-CSRFToken": csrf, "HX-Request": "true"},
    ).get_data(as_text=True)
    assert "not an SSH server" in html and "internal" not in html


def test_allowed_targets_apply_to_every_path(
    client, app, make_user, auth, sshd, sshd_jump, fake_service
):
    alice = make_user("alice")
    jump = client.post(
        "/api/machines", json=_direct(sshd_jump, "key", name="jump"), headers=auth(alice)
    ).json["machine"]
    inner = client.post(
        "/api/machines",
        json=_direct(sshd, "password", name="inner", gateway=jump["agent_id"]),
        headers=auth(alice),
    ).json["machine"]
    assert inner["status"] == "online"
    svc = fake_service(b"SSH-2.0-x\r\n")
    app.config["PORTAL_ALLOWED_TARGETS"] = "10.0.0.0/8"
    h = auth(alice)
    for agent_id in (jump["agent_id"], inner["agent_id"]):  # the jump host itself is checked
        r = client.post(f"/api/machines/{agent_id}/command", json={"command": "true"}, headers=h)
        assert r.status_code == 400 and r.json["code"] == "target_not_allowed", r.json
        r = client.post(f"/api/machines/{agent_id}/check", headers=h)
        assert r.status_code == 400 and "outside" in r.json["error"], r.json
    r = client.post(
        "/api/machines/scan-host-key", json={"host": svc.host, "port": svc.port}, headers=h
    )
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"
    r = client.post(
        "/api/machines/broadcast",
        json={"command": "true", "agent_ids": [jump["agent_id"]]},
        headers=h,
    )
    assert r.json["results"][0]["code"] == "target_not_allowed"
    # enrollment: registering an address outside the allow-list changes nothing
    r = _register_new(client, h, sshd, port=svc.port, host="127.0.0.1")
    assert r.status_code == 400
    assert svc.accepted == 0
    # a malformed allow-list allows nothing (fail closed)
    app.config["PORTAL_ALLOWED_TARGETS"] = "127.0.0.0/8, not-a-network"
    r = client.post(
        f"/api/machines/{jump['agent_id']}/command", json={"command": "true"}, headers=h
    )
    assert r.status_code == 400
    app.config["PORTAL_ALLOWED_TARGETS"] = "127.0.0.0/8"
    r = client.post(
        f"/api/machines/{inner['agent_id']}/command", json={"command": "echo ok"}, headers=h
    )
    assert r.status_code == 200 and r.json["stdout"] == "ok\n"


def test_terminal_shell_target_is_checked_at_socket_open(app, make_user, sshd_machine, sshd):
    """Shells (the terminal) use the same Target: the allow-list is applied when the
    socket opens, whoever builds the target."""
    from portal.extensions import db
    from portal.machines import targets
    from portal.machines.models import Machine
    from portal.ssh import ConnectionPool, TargetNotAllowed, open_shell

    alice = make_user("alice")
    m = sshd_machine(alice)
    app.config["PORTAL_ALLOWED_TARGETS"] = "10.0.0.0/8"
    pool = ConnectionPool()
    try:
        with app.test_request_context():
            row = db.session.get(Machine, m.id)
            target = targets.ssh_target(row, row.owner)
            with pytest.raises(TargetNotAllowed):
                open_shell(target, pool=pool)
    finally:
        pool.close_all()


def test_scan_is_rate_limited(client, make_user, auth):
    alice = make_user("alice")
    codes = [
        client.post(
            "/api/machines/scan-host-key", json={"host": "bad host!"}, headers=auth(alice)
        ).status_code
        for _ in range(31)
    ]
    assert codes[:30] == [400] * 30 and codes[30] == 429


def test_scan_needs_an_account_that_may_add_machines(client, app, make_user, auth):
    from portal.errors import AccessDenied
    from portal.extensions import db
    from portal.machines import access, inventory

    alice = make_user("alice")
    assert client.post("/api/machines/scan-host-key", json={"host": "x"}).status_code == 401
    with app.app_context():
        from portal.accounts.models import User

        u = db.session.get(User, alice.id)
        assert access.can_add_machines(u)
        u.active = False
        assert not access.can_add_machines(u)
        with pytest.raises(AccessDenied):
            inventory.scan_host_keys(u, {"host": "127.0.0.1"})
        db.session.rollback()


# ---------------------------------------------------------------- 3. bad input, no 500s


@pytest.mark.parametrize(
    "query",
    [
        {"q": "ls", "until": "9999-12-31T23:59:59"},
        {"q": "ls", "since": "0001-01-01T00:00:00"},
        {"q": "ls", "since": "0001-01-01T00:00:00+05:00"},
        {"q": "ls", "until": "9999-12-31T23:59:59-05:00"},
        {"until": "9999-12-31T23:59:59", "since": "0001-01-01T00:00:00"},
        {"user": "²"},
        {"user": "99999999999"},
        {"user": "2147483648"},
        {"q": "ls", "user": "٣"},
        {"cursor": "²"},
        {"cursor": "99999999999"},
        {"q": "ls", "cursor": "4611686018427387904"},
        {"since": "2026-01-01T00:00:00+99:00"},
    ],
)
def test_log_queries_never_500(client, make_user, auth, make_machine, query):
    alice = make_user("alice")
    m = make_machine(alice)
    for path in (f"/api/machines/{m.agent_id}/logs", f"/api/machines/{m.agent_id}/logs/search"):
        r = client.get(path, query_string=query, headers=auth(alice))
        assert r.status_code in (200, 400), (path, query, r.status_code)
        if r.status_code == 200:
            assert r.json["logs"] == []


def test_time_filters_still_work_at_the_edges(client, app, make_user, auth, make_machine):
    from portal.extensions import db
    from portal.machines import commands
    from portal.machines.models import Machine

    alice = make_user("alice")
    m = make_machine(alice)
    with app.test_request_context():
        commands.log_command(db.session.get(Machine, m.id), alice.id, source="api", command="ls")
        db.session.commit()
    for query in (
        {"q": "ls", "until": "9999-12-31T23:59:59", "since": "0001-01-01T00:00:00"},
        {"until": "9999-12-31T23:59:59", "since": "0001-01-01T00:00:00"},
    ):
        for suffix in ("logs", "logs/search"):
            r = client.get(
                f"/api/machines/{m.agent_id}/{suffix}", query_string=query, headers=auth(alice)
            )
            assert r.status_code == 200 and len(r.json["logs"]) == 1, (suffix, r.json)


@pytest.mark.parametrize("ref", [99999999999, 2**31, "99999999999", "²", "١٢", 0, -1])
def test_grant_with_out_of_range_or_odd_ids_is_404(client, make_user, auth, make_machine, ref):
    alice = make_user("alice")
    m = make_machine(alice)
    for action in ("grant", "revoke"):
        r = client.post(
            f"/api/machines/{m.agent_id}/access/{action}",
            json={"user": ref, "role": "viewer"},
            headers=auth(alice),
        )
        assert r.status_code in (400, 404), (action, ref, r.status_code)


def test_ids_from_input_are_bounded(app, make_user, make_machine):
    from portal.errors import NotFound
    from portal.extensions import db
    from portal.machines import inventory
    from portal.machines import logs as machine_logs

    alice = make_user("alice")
    make_machine(alice)
    with app.app_context():
        from portal.accounts.models import User

        u = db.session.get(User, alice.id)
        for bad in (2**31, 2**63, "99999999999", "²", "1e3", "", None, True, -5, 0):
            with pytest.raises(NotFound):
                inventory.get_machine_by_id(u, bad)
            with pytest.raises(NotFound):
                machine_logs.get_log(u, bad)
        assert inventory.parse_id("2147483647") == 2**31 - 1
        assert inventory.parse_id(" 7 ") == 7


def test_pending_machine_host_key_scan_is_422(client, login, make_user, auth):
    alice = make_user("alice")
    agent_id = client.post("/api/machines", json={"name": "p"}, headers=auth(alice)).json[
        "machine"
    ]["agent_id"]
    csrf = login(alice)
    r = client.post(
        f"/machines/{agent_id}/host-key/scan", headers={"X-CSRFToken": csrf, "HX-Request": "true"}
    )
    assert r.status_code == 422 and "has not been enrolled yet" in r.get_data(as_text=True)
    r = client.post(f"/api/machines/{agent_id}/check", headers=auth(alice))
    assert r.status_code == 422


# ---------------------------------------------------------------- 4. jump host rights, tokens


def test_losing_operator_on_the_jump_host_stops_its_use(
    client, app, make_user, auth, sshd, sshd_jump, request
):
    alice, bob = make_user("alice"), make_user("bob")
    jump = client.post(
        "/api/machines", json=_direct(sshd_jump, "key", name="jump"), headers=auth(alice)
    ).json["machine"]
    assert _grant(client, auth(alice), jump["agent_id"], "bob", "operator").status_code == 200
    r = client.post(
        "/api/machines",
        json=_direct(sshd, "password", name="bobs-inner", gateway=jump["agent_id"]),
        headers=auth(bob),
    )
    assert r.status_code == 201 and r.json["machine"]["status"] == "online"
    inner = r.json["machine"]["agent_id"]
    r = client.post(
        f"/api/machines/{inner}/command", json={"command": "echo ok"}, headers=auth(bob)
    )
    assert r.status_code == 200
    # Alice demotes Bob to viewer on the jump host: Bob's machine behind it stops working,
    # and his live terminals behind it are closed (the terminal's receiver of the signal).
    from portal import signals

    revoked = []

    def on_revoked(sender, user_id, machine_id, **_):
        revoked.append((user_id, machine_id))

    signals.access_revoked.connect(on_revoked, sender=app)
    request.addfinalizer(lambda: signals.access_revoked.disconnect(on_revoked, sender=app))
    _grant(client, auth(alice), jump["agent_id"], "bob", "viewer")
    r = client.post(
        f"/api/machines/{inner}/command", json={"command": "echo ok"}, headers=auth(bob)
    )
    assert r.status_code == 403 and "jump host jump" in r.json["error"]
    inner_id = client.get(f"/api/machines/{inner}", headers=auth(bob)).json["machine"]["id"]
    assert (bob.id, inner_id) in revoked
    r = client.post(f"/api/machines/{inner}/check", headers=auth(bob))
    assert r.status_code == 403
    r = client.post(
        "/api/machines/broadcast", json={"command": "true", "agent_ids": [inner]}, headers=auth(bob)
    )
    assert r.json["results"][0]["status"] == 403
    # The terminal builds targets from a machine it loaded for Bob: refused too.
    from portal.errors import AccessDenied
    from portal.extensions import db
    from portal.machines import inventory, targets

    with app.test_request_context():
        from portal.accounts.models import User

        b = db.session.get(User, bob.id)
        machine = inventory.get_machine(b, inner)
        with pytest.raises(AccessDenied):
            targets.ssh_target(machine, b)
    # After full revocation the same; an admin of both still reaches it.
    client.post(
        f"/api/machines/{jump['agent_id']}/access/revoke", json={"user": "bob"}, headers=auth(alice)
    )
    r = client.post(f"/api/machines/{inner}/command", json={"command": "true"}, headers=auth(bob))
    assert r.status_code == 403
    root = make_user("root", role="admin")
    r = client.post(
        f"/api/machines/{inner}/command", json={"command": "echo ok"}, headers=auth(root)
    )
    assert r.status_code == 200


def test_registration_token_is_spent_atomically(client, app, make_user, auth, sshd, monkeypatch):
    """Two registrations race with one token: the one that finishes second sees the token
    spent (409) even though it passed the early check, and changes nothing."""
    from portal import ssh
    from portal.db import utcnow
    from portal.extensions import db
    from portal.machines.models import Machine, RegistrationToken

    alice = make_user("alice")
    created = client.post("/api/machines", json={"name": "pending-x"}, headers=auth(alice)).json
    sshd.authorize_key(created["public_key"])
    body = {
        "token": created["registration_token"],
        "username": sshd.username,
        "port": sshd.port,
        "host_keys": sshd.host_key_lines,
        "hostname": "racer",
    }
    real_run = ssh.run

    def run_then_lose_the_race(target, command, **kw):
        result = real_run(target, command, **kw)
        # Another request spends the token while this one was connecting.
        s = db.new_session()
        try:
            row = s.scalar(select(RegistrationToken))
            row.used_at = utcnow()
            s.commit()
        finally:
            s.close()
        return result

    monkeypatch.setattr(ssh, "run", run_then_lose_the_race)
    r = client.post("/api/machines/register", json=body)
    assert r.status_code == 409 and "already used" in r.json["error"]
    with app.app_context():
        m = db.session.scalar(select(Machine))
        assert m.status == "pending" and m.host is None and m.name == "pending-x"


def test_concurrent_registrations_one_wins(client, app, make_user, auth, sshd):
    alice = make_user("alice")
    created = client.post("/api/machines", json={"name": "pending-y"}, headers=auth(alice)).json
    sshd.authorize_key(created["public_key"])
    body = {
        "token": created["registration_token"],
        "username": sshd.username,
        "port": sshd.port,
        "host_keys": sshd.host_key_lines,
    }
    codes = []
    barrier = threading.Barrier(4)

    def go():
        with app.test_client() as c:
            barrier.wait(10)
            codes.append(c.post("/api/machines/register", json=body).status_code)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert sorted(codes) == [200, 409, 409, 409], codes
