"""Enrollment: pending machine + single-use token, the real enroll.sh run as the sshd's
user against a live server, then a command through the pinned keys; bad tokens."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess

import pytest
from sqlalchemy import text, update

pytestmark = pytest.mark.timeout(60)


def test_pending_machine_gets_token_and_command(client, app, make_user, auth):
    app.config["PORTAL_BASE_URL"] = "https://portal.example.test"
    alice = make_user("alice")
    r = client.post("/api/machines", json={"name": "web-1", "tags": ["web"]}, headers=auth(alice))
    assert r.status_code == 201
    body = r.json
    assert body["machine"]["status"] == "pending" and body["machine"]["auth_method"] is None
    assert len(body["machine"]["agent_id"]) == 22
    token = body["registration_token"]
    assert token.startswith("wxreg_") and body["registration_expires_at"].endswith("Z")
    # The token travels in a header read from stdin: not in the URL, not in curl's argv.
    assert body["enroll_command"] == (
        f"echo 'X-Registration-Token: {token}' | "
        "curl -fsSL -H @- 'https://portal.example.test/api/machines/enroll.sh' | sh"
    )
    assert "token=" not in body["enroll_command"]
    # only the hash is stored
    from portal.extensions import db

    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM registration_tokens")).scalars().all()
    assert token not in repr(stored) and len(stored[0]) == 64
    # the script embeds the portal key, the token and the register URL
    script = client.get("/api/machines/enroll.sh", headers={"X-Registration-Token": token})
    assert script.status_code == 200 and script.mimetype == "text/x-shellscript"
    src = script.get_data(as_text=True)
    assert src.startswith("#!/bin/sh") and "SSH_HOST_KEY_DIR" in src and "ssh-ed25519 " in src
    assert "https://portal.example.test" in src
    # exec on a pending machine is a clear 422
    r = client.post(
        f"/api/machines/{body['machine']['agent_id']}/command",
        json={"command": "true"},
        headers=auth(alice),
    )
    assert r.status_code == 422


@pytest.mark.parametrize("token", ["", "forged", "wxreg_" + "A" * 43, "wxreg_'; rm -rf /"])
def test_bad_tokens_are_refused(client, token):
    r = client.get("/api/machines/enroll.sh", query_string={"token": token})
    assert r.status_code == 401 and r.get_data(as_text=True).startswith('echo "portal:')
    r = client.post(
        "/api/machines/register",
        json={"token": token, "username": "u", "host_keys": ["ssh-ed25519 AAAA"]},
    )
    assert r.status_code == 401


def test_expired_and_reused_tokens(client, app, make_user, auth, sshd):
    alice = make_user("alice")
    r = client.post("/api/machines", json={"name": "x"}, headers=auth(alice))
    token = r.json["registration_token"]
    pub = r.json["public_key"]  # this machine's own key, made with the pending machine
    from portal.extensions import db
    from portal.machines.models import RegistrationToken

    with app.app_context():
        db.session.execute(
            update(RegistrationToken).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )
        db.session.commit()
    r = client.post(
        "/api/machines/register",
        json={"token": token, "username": sshd.username, "host_keys": sshd.host_key_lines},
    )
    assert r.status_code == 401 and "expired" in r.json["error"]
    assert client.get(f"/api/machines/enroll.sh?token={token}").status_code == 401

    # a new token for the same machine (admin), used once, then reused
    agent_id = (
        r.json and client.get("/api/machines", headers=auth(alice)).json["machines"][0]["agent_id"]
    )
    r = client.post(f"/api/machines/{agent_id}/enroll-token", headers=auth(alice))
    token2 = r.json["registration_token"]
    sshd.authorize_key(pub)
    body = {
        "token": token2,
        "username": sshd.username,
        "port": sshd.port,
        "host_keys": sshd.host_key_lines,
        "hostname": "box1",
        "os": "Linux 6",
    }
    r = client.post("/api/machines/register", json=body)
    assert r.status_code == 200, r.json
    assert r.json["machine"]["status"] == "online"
    r = client.post("/api/machines/register", json=body)
    assert r.status_code == 409 and "already used" in r.json["error"]


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"host_keys": []}, "host_keys"),
        ({"host_keys": ["not a key"]}, "host_keys"),
        ({"host_keys": "ssh-dss AAAA"}, "host_keys"),
        ({"port": 0}, "port"),
        ({"username": "a b"}, "username"),
    ],
)
def test_register_bad_input_keeps_token(client, make_user, auth, sshd, patch, field):
    alice = make_user("alice")
    token = client.post("/api/machines", json={"name": "x"}, headers=auth(alice)).json[
        "registration_token"
    ]
    body = {
        "token": token,
        "username": sshd.username,
        "port": sshd.port,
        "host_keys": sshd.host_key_lines,
    }
    body.update(patch)
    r = client.post("/api/machines/register", json=body)
    assert r.status_code == 400 and r.json["field"] == field
    # nothing changed: the token still works for a correct call
    assert client.get(f"/api/machines/enroll.sh?token={token}").status_code == 200


def test_register_wrong_host_key_is_refused(client, make_user, auth, sshd, sshd_jump):
    alice = make_user("alice")
    created = client.post("/api/machines", json={"name": "x"}, headers=auth(alice)).json
    token = created["registration_token"]
    sshd.authorize_key(created["public_key"])
    r = client.post(
        "/api/machines/register",
        json={
            "token": token,
            "username": sshd.username,
            "port": sshd.port,
            "host_keys": sshd_jump.host_key_lines,
        },
    )  # not the keys this sshd presents
    assert r.status_code == 502 and r.json["code"] == "host_key_mismatch"
    m = client.get("/api/machines", headers=auth(alice)).json["machines"][0]
    assert m["status"] == "pending"


def _run_enroll(command: str, server, user, extra_env: dict | None = None):
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": user.home,
        "SSH_HOST_KEY_DIR": str(server.workdir),
        "SSH_PORT": str(server.port),
        "AUTHORIZED_KEYS_FILE": str(server.authorized_keys_path),
    }
    env.update(extra_env or {})
    argv = ["runuser", "-u", user.username, "--", "env", "-i"]
    argv += [f"{k}={v}" for k, v in env.items()]
    argv += ["sh", "-c", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=45, cwd="/")


@pytest.mark.timeout(90)
def test_enroll_script_for_real(
    client, app, live_server, make_user, auth, login, make_sshd, sshd_user
):
    """curl | sh as the sshd's login user: authorized_keys gains that machine's own key (once
    each: two enrollments, two different keys), the host keys are pinned, the machine is
    online, and a command runs through them."""
    if not shutil.which("runuser") or not shutil.which("curl"):
        pytest.skip("needs runuser and curl")
    server = make_sshd("enroll")
    # The instance's authorized_keys is the file the script must edit, owned by the user.
    os.chown(server.authorized_keys_path, sshd_user.uid, sshd_user.gid)
    app.config["PORTAL_BASE_URL"] = live_server.url
    alice = make_user("alice")
    lines_before = server.authorized_keys_path.read_text().splitlines()

    pubs = []
    for attempt in range(2):  # two machines (same server): two different keys, each added once
        r = client.post("/api/machines", json={"name": f"pending-{attempt}"}, headers=auth(alice))
        command = r.json["enroll_command"]
        # the token is sent in a header read from stdin: not in the URL, not in curl's argv
        assert "token=" not in command and "X-Registration-Token" in command
        assert command.index(r.json["registration_token"]) < command.index("curl")
        pubs.append(r.json["public_key"])
        agent_id = r.json["machine"]["agent_id"]
        out = _run_enroll(command, server, sshd_user)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "enrolled" in out.stdout
        machine = client.get(f"/api/machines/{agent_id}", headers=auth(alice)).json["machine"]
        assert machine["status"] == "online" and machine["auth_method"] == "portal_key"
        assert machine["port"] == server.port and machine["username"] == sshd_user.username
        assert set(machine["host_key_fingerprints"]) == set(server.host_key_fingerprints)
        assert machine["os"].startswith("Linux")
        assert machine["name"] != f"pending-{attempt}"  # took the hostname

    lines_after = server.authorized_keys_path.read_text().splitlines()
    assert lines_after[: len(lines_before)] == lines_before  # nothing else changed
    assert pubs[0] != pubs[1]
    assert lines_after[len(lines_before) :] == pubs

    r = client.post(
        f"/api/machines/{agent_id}/command", json={"command": "whoami"}, headers=auth(alice)
    )
    assert r.status_code == 200 and r.json["stdout"] == f"{sshd_user.username}\n"

    # the token is single use: the same command again fetches nothing (curl -f), runs nothing
    again = _run_enroll(command, server, sshd_user)
    assert "409" in again.stderr and "enrolled" not in again.stdout
    assert server.authorized_keys_path.read_text().splitlines() == lines_after

    # The machine's page shows where it registered from and the pinned host key.
    login(alice)
    page = client.get(f"/machines/{agent_id}").get_data(as_text=True)
    assert f"{sshd_user.username}@127.0.0.1:{server.port}" in page
    for fp in server.host_key_fingerprints:
        assert fp in page


def test_enroll_script_takes_the_token_from_a_header(client, make_user, auth):
    alice = make_user("alice")
    token = client.post("/api/machines", json={"name": "x"}, headers=auth(alice)).json[
        "registration_token"
    ]
    r = client.get("/api/machines/enroll.sh", headers={"X-Registration-Token": token})
    assert r.status_code == 200 and r.get_data(as_text=True).startswith("#!/bin/sh")
    assert r.headers["Cache-Control"] == "no-store"
    # older enroll commands (?token=) keep working
    assert client.get("/api/machines/enroll.sh", query_string={"token": token}).status_code == 200
    for headers in ({}, {"X-Registration-Token": "wxreg_" + "A" * 43}):
        r = client.get("/api/machines/enroll.sh", headers=headers)
        assert r.status_code == 401 and r.get_data(as_text=True).startswith('echo "portal:')
