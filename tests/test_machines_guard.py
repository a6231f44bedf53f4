"""Where a stored secret goes (issue 16, findings 5 and 6): only the owner or a global admin
moves a machine that stores a password or key (host, port, jump host, pinned host keys),
a re-pin takes only a fingerprint a fresh scan presents, link-local and cloud metadata
addresses are refused (allow/deny lists), and machine create/scan/check is rate-limited
per user. Real sshd instances throughout; a second one plays the attacker's fake server."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.test_machines_api import _count, _direct, _grant, _register_new

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def sshd_fake(make_sshd):
    """Another real sshd with its own host keys: the server an attacker would point at.
    It accepts the same account and password as `sshd`, so a password sent there shows
    up in its log ("Accepted password for ...")."""
    return make_sshd("fake")


def _row(agent_id: str) -> dict:
    from portal.extensions import db

    with db.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT name, host, port, gateway_id, host_keys, secret_enc, auth_method "
                "FROM machines WHERE agent_id = :a"
            ),
            {"a": agent_id},
        ).one()
    return dict(row._mapping)


@pytest.fixture
def victim(client, make_user, auth, sshd, sshd_jump):
    """alice's password machine on the real sshd; bob is a machine admin there (not the
    owner) and owns a jump host of his own."""
    alice, bob = make_user("alice"), make_user("bob")
    r = client.post("/api/machines", json=_direct(sshd, "password", name="db"), headers=auth(alice))
    assert r.status_code == 201 and r.json["machine"]["status"] == "online", r.json
    agent_id = r.json["machine"]["agent_id"]
    assert _grant(client, auth(alice), agent_id, "bob", "admin").status_code == 200
    r = client.post(
        "/api/machines", json=_direct(sshd_jump, "key", name="bobs-jump"), headers=auth(bob)
    )
    assert r.status_code == 201, r.json
    return alice, bob, agent_id, r.json["machine"]["agent_id"]


# ---------------------------------------------------------------- 5. moving a stored secret


def test_machine_admin_cannot_send_the_stored_password_elsewhere(
    client, auth, victim, sshd, sshd_fake
):
    """The attack: bob (machine admin, not owner) points alice's password machine at his
    own server (port/host), routes it through his jump host, and re-pins the fake's key.
    Every step is a 403 that changes nothing; alice's next command still goes to the real
    sshd, and the fake server never sees a connection, let alone the password."""
    alice, bob, agent_id, bobs_jump = victim
    before = _row(agent_id)
    mark = len(sshd_fake.log_text())
    attempts = [
        ("PATCH", f"/api/machines/{agent_id}", {"port": sshd_fake.port}),
        ("PATCH", f"/api/machines/{agent_id}", {"host": "localhost", "port": sshd_fake.port}),
        ("PATCH", f"/api/machines/{agent_id}", {"gateway": bobs_jump}),
        ("PATCH", f"/api/machines/{agent_id}", {"name": "renamed", "port": sshd_fake.port}),
        ("POST", f"/api/machines/{agent_id}/host-key", {"trust_host_key": True}),
        (
            "POST",
            f"/api/machines/{agent_id}/host-key",
            {"host_key": sshd_fake.host_key_fingerprints[0], "trust_host_key": True},
        ),
    ]
    for method, url, body in attempts:
        r = client.open(url, method=method, json=body, headers=auth(bob))
        assert r.status_code == 403, (body, r.json)
        assert "owner" in r.json["error"]
    assert _row(agent_id) == before  # not even the name changed
    # What bob may still do as a machine admin: rename it.
    r = client.patch(f"/api/machines/{agent_id}", json={"name": "db-1"}, headers=auth(bob))
    assert r.status_code == 200
    # The owner's next command runs on the real machine ...
    r = client.post(
        f"/api/machines/{agent_id}/command", json={"command": "echo real"}, headers=auth(alice)
    )
    assert r.status_code == 200 and r.json["stdout"] == "real\n"
    row = _row(agent_id)
    assert (row["host"], row["port"], row["gateway_id"]) == (sshd.host, sshd.port, None)
    # ... and the fake server was never contacted (no scan, no login, no password).
    seen = sshd_fake.log_text()[mark:]
    assert "Connection from" not in seen and "password" not in seen, seen


def test_owner_moves_the_machine_and_repins_by_fingerprint(client, auth, victim, sshd, sshd_fake):
    alice, _bob, agent_id, _ = victim
    r = client.patch(
        f"/api/machines/{agent_id}",
        json={"host": sshd_fake.host, "port": sshd_fake.port},
        headers=auth(alice),
    )
    assert r.status_code == 200 and r.json["machine"]["port"] == sshd_fake.port
    # The pinned key still is the old server's: refused before any credential is sent.
    r = client.post(
        f"/api/machines/{agent_id}/command", json={"command": "true"}, headers=auth(alice)
    )
    assert r.status_code == 502 and r.json["code"] == "host_key_mismatch"
    assert "Accepted password" not in sshd_fake.log_text()
    url = f"/api/machines/{agent_id}/host-key"
    bad = [
        {"trust_host_key": True},  # no fingerprint: a blind re-pin
        {"host_key": ""},
        {"host_key": sshd_fake.host_key_lines[0]},  # a key line, not a scanned fingerprint
        {"host_key": sshd.host_key_fingerprints[0], "trust_host_key": True},  # not presented
        {"host_key": ["SHA256:" + "A" * 43]},
        {"host_key": 7},
    ]
    for body in bad:
        r = client.post(url, json=body, headers=auth(alice))
        assert r.status_code == 400 and r.json["field"] == "host_key", (body, r.json)
    assert _row(agent_id)["host_keys"] == sshd.host_key_lines[0]
    r = client.post(
        url,
        json={"host_key": sshd_fake.host_key_fingerprints[0], "trust_host_key": True},
        headers=auth(alice),
    )
    assert r.status_code == 200, r.json
    assert r.json["machine"]["host_key_fingerprint"] == sshd_fake.host_key_fingerprints[0]
    r = client.post(
        f"/api/machines/{agent_id}/command", json={"command": "echo moved"}, headers=auth(alice)
    )
    assert r.status_code == 200 and r.json["stdout"] == "moved\n"


@pytest.mark.parametrize(
    "body",
    [{"port": None}, {"port": 0}, {"port": "x"}, {"host": ""}, {"host": "bad host!"}, {"host": 5}],
)
def test_owner_bad_move_is_a_400_and_changes_nothing(client, auth, victim, body):
    alice, _bob, agent_id, _ = victim
    before = _row(agent_id)
    r = client.patch(f"/api/machines/{agent_id}", json={**body, "name": "n"}, headers=auth(alice))
    assert r.status_code == 400 and r.json["field"] in ("host", "port"), r.json
    assert _row(agent_id) == before


def test_global_admin_may_change_the_jump_host(client, auth, make_user, victim):
    _alice, _bob, agent_id, bobs_jump = victim
    boss = make_user("boss", role="admin")
    r = client.patch(f"/api/machines/{agent_id}", json={"gateway": bobs_jump}, headers=auth(boss))
    assert r.status_code == 200
    assert _row(agent_id)["gateway_id"] is not None
    r = client.patch(f"/api/machines/{agent_id}", json={"gateway": None}, headers=auth(boss))
    assert r.status_code == 200 and _row(agent_id)["gateway_id"] is None


def test_machine_admin_may_move_a_machine_without_a_stored_secret(
    client, auth, make_user, make_machine, grant_role
):
    """A portal_key machine signs in with its own key pair (a signature, nothing reusable
    is sent): its admins keep the right to move it."""
    alice, bob = make_user("alice"), make_user("bob")
    m = make_machine(alice, host="127.0.0.1", auth_method="portal_key", secret_enc=None)
    grant_role(m, bob, "admin")
    r = client.patch(f"/api/machines/{m.agent_id}", json={"port": 2222}, headers=auth(bob))
    assert r.status_code == 200 and r.json["machine"]["port"] == 2222


def test_page_repin_posts_fingerprints_and_needs_the_owner(client, login, victim, sshd_fake):
    import re

    alice, bob, agent_id, _ = victim

    csrf = login(bob)
    h = {"X-CSRFToken": csrf, "HX-Request": "true"}
    html = client.post(f"/machines/{agent_id}/host-key/scan", headers=h).get_data(as_text=True)
    assert "only its owner or a global admin" in html and 'name="host_key"' not in html
    r = client.post(
        f"/machines/{agent_id}/host-key",
        data={"host_key": sshd_fake.host_key_fingerprints[0], "host_key_ack": "1"},
        headers=h,
    )
    assert r.status_code == 403 and "owner" in r.get_data(as_text=True)

    client.post("/logout", headers=h)
    csrf = login(alice)
    h = {"X-CSRFToken": csrf, "HX-Request": "true"}
    html = client.post(f"/machines/{agent_id}/host-key/scan", headers=h).get_data(as_text=True)
    posted = re.findall(r'name="host_key" value="([^"]+)"', html)
    assert posted and all(v.startswith("SHA256:") for v in posted)  # fingerprints, not keys
    r = client.post(
        f"/machines/{agent_id}/host-key",
        data={"host_key": posted, "host_key_ack": "1"},
        headers=h,
    )
    assert r.status_code == 204
    r = client.post(
        f"/machines/{agent_id}/host-key",
        data={"host_key": "SHA256:" + "B" * 43, "host_key_ack": "1"},
        headers=h,
    )
    assert r.status_code == 422 and "does not present" in r.get_data(as_text=True)


# ---------------------------------------------------------------- 6. targets


DENIED_HOSTS = [
    "169.254.169.254",  # cloud metadata
    "169.254.1.1",  # IPv4 link-local
    "fe80::1",
    "[fe80::1]",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",  # NAT64
    "2852039166",  # a name the resolver turns into 169.254.169.254
    "0xa9.0xfe.0xa9.0xfe",
]


@pytest.mark.parametrize("host", DENIED_HOSTS)
def test_link_local_and_metadata_targets_are_refused(
    client, app, make_user, auth, sshd, sshd_machine, host
):
    alice = make_user("alice")
    h = auth(alice)
    body = _direct(sshd, "password", host=host, name="meta", verify=False)
    r = client.post("/api/machines", json=body, headers=h)
    assert r.status_code == 400, r.json
    assert r.json["code"] == "target_not_allowed" and r.json["field"] == "host"
    assert "link-local or cloud metadata" in r.json["error"]
    assert _count(app, "machines") == 0
    r = client.post("/api/machines/scan-host-key", json={"host": host}, headers=h)
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"
    # editing an existing machine (its owner) to point there
    m = sshd_machine(alice, "password")
    r = client.patch(f"/api/machines/{m.agent_id}", json={"host": host}, headers=h)
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"
    assert _row(m.agent_id)["host"] == sshd.host
    # enrollment that claims that address
    r = _register_new(client, h, sshd, host=host)
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"
    assert _count(app, "machines WHERE status = 'pending'") == 1


def test_every_resolved_address_is_checked(client, make_user, auth, sshd, monkeypatch):
    """A name with one harmless and one metadata address is refused (the DNS answer is the
    only stand-in here: there is no resolver to configure for a test)."""
    import socket

    import portal.ssh.connect as connect_mod

    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host == "mixed.test":
            return real("127.0.0.1", port, *args, **kwargs) + real(
                "169.254.169.254", port, *args, **kwargs
            )
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(connect_mod.socket, "getaddrinfo", resolver)
    alice = make_user("alice")
    body = _direct(sshd, "password", host="mixed.test", verify=False)
    r = client.post("/api/machines", json=body, headers=auth(alice))
    assert r.status_code == 400 and "resolves to a link-local" in r.json["error"]


def test_existing_row_with_a_metadata_address_is_refused_at_connect_time(
    client, make_user, auth, make_machine, fake_service
):
    alice = make_user("alice")
    m = make_machine(alice, host="169.254.169.254")  # stored before the rule existed
    h = auth(alice)
    r = client.post(f"/api/machines/{m.agent_id}/command", json={"command": "id"}, headers=h)
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"
    r = client.post(f"/api/machines/{m.agent_id}/check", headers=h)
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"


def test_allow_and_deny_lists(
    client, app, make_user, auth, sshd, sshd_jump, sshd_machine, fake_service
):
    alice = make_user("alice")
    h = auth(alice)
    meta = _direct(sshd, "password", host="169.254.169.254", name="meta", verify=False)
    # An allow entry as narrow as the denied range opens it; a catch-all does not.
    app.config["PORTAL_ALLOWED_TARGETS"] = "0.0.0.0/0"
    assert client.post("/api/machines", json=meta, headers=h).status_code == 400
    app.config["PORTAL_ALLOWED_TARGETS"] = "169.254.169.254/32, 127.0.0.0/8"
    r = client.post("/api/machines", json=meta, headers=h)
    assert r.status_code == 201, r.json
    app.config["PORTAL_ALLOWED_TARGETS"] = ""

    # PORTAL_DENIED_TARGETS tightens: the loopback sshd becomes unreachable on every path.
    m = sshd_machine(alice, "password")
    svc = fake_service(b"SSH-2.0-x\r\n")
    app.config["PORTAL_DENIED_TARGETS"] = "127.0.0.0/8"
    r = client.post("/api/machines", json=_direct(sshd, "password", name="x"), headers=h)
    assert r.status_code == 400 and "may not connect" in r.json["error"]
    r = client.post(
        "/api/machines/scan-host-key", json={"host": svc.host, "port": svc.port}, headers=h
    )
    assert r.status_code == 400
    r = client.post(f"/api/machines/{m.agent_id}/command", json={"command": "id"}, headers=h)
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"
    assert svc.accepted == 0
    # a deny entry wins over an allow entry
    app.config["PORTAL_ALLOWED_TARGETS"] = "127.0.0.0/8"
    app.config["PORTAL_DENIED_TARGETS"] = "127.0.0.1/32"
    r = client.post(f"/api/machines/{m.agent_id}/command", json={"command": "id"}, headers=h)
    assert r.status_code == 400
    # a malformed deny list allows nothing (fail closed)
    app.config["PORTAL_ALLOWED_TARGETS"] = ""
    app.config["PORTAL_DENIED_TARGETS"] = "10.0.0.0/8, nonsense"
    r = client.post(f"/api/machines/{m.agent_id}/command", json={"command": "id"}, headers=h)
    assert r.status_code == 400
    app.config["PORTAL_DENIED_TARGETS"] = "10.0.0.0/8"
    r = client.post(f"/api/machines/{m.agent_id}/command", json={"command": "echo ok"}, headers=h)
    assert r.status_code == 200 and r.json["stdout"] == "ok\n"

    # Behind a jump host, an IP literal meets the denials (the allow list is the portal's
    # own networks, not the jump host's).
    jump = client.post(
        "/api/machines", json=_direct(sshd_jump, "key", name="jump"), headers=h
    ).json["machine"]
    inner = _direct(sshd, "password", name="inner", gateway=jump["agent_id"], verify=False)
    r = client.post("/api/machines", json={**inner, "host": "fe80::1"}, headers=h)
    assert r.status_code == 400 and r.json["code"] == "target_not_allowed"
    app.config["PORTAL_ALLOWED_TARGETS"] = "127.0.0.0/8"
    r = client.post("/api/machines", json={**inner, "host": "192.168.7.7"}, headers=h)
    assert r.status_code == 201, r.json


def test_machine_create_and_check_are_rate_limited_per_user(client, app, make_user, auth, login):
    app.config["PORTAL_MACHINE_RATE_LIMIT"] = "3 per minute"
    alice, bob = make_user("alice"), make_user("bob")
    made = []
    for i in range(3):
        r = client.post("/api/machines", json={"name": f"p{i}"}, headers=auth(alice))
        assert r.status_code == 201
        made.append(r.json["machine"]["agent_id"])
    r = client.post("/api/machines", json={"name": "one-too-many"}, headers=auth(alice))
    assert r.status_code == 429 and "too many" in r.json["error"]
    assert _count(app, "machines") == 3
    # one budget for create, scan and check, on both faces
    r = client.post(f"/api/machines/{made[0]}/check", headers=auth(alice))
    assert r.status_code == 429
    r = client.post("/api/machines/scan-host-key", json={"host": "127.0.0.1"}, headers=auth(alice))
    assert r.status_code == 429
    csrf = login(alice)
    r = client.post("/machines/enroll", data={"name": "page"}, headers={"X-CSRFToken": csrf})
    assert r.status_code == 429
    assert _count(app, "machines") == 3
    # counted per user: bob has his own
    r = client.post("/api/machines", json={"name": "bobs"}, headers=auth(bob))
    assert r.status_code == 201
