"""The audit log: receivers of the signals write it; the API, export, retention, webhook."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import PASSWORD, csrf_from


def _flush(app):
    app.extensions["portal_audit"].flush()


def _events(client, headers, **params):
    resp = client.get("/api/audit", headers=headers, query_string=params)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_sign_in_events_and_visibility(app, client, admin, make_user, auth):
    bob = make_user("bob")
    ok = client.post(
        "/api/login",
        json={"login": "bob", "password": PASSWORD},
        headers={"User-Agent": "audit-test/1"},
    )
    assert ok.status_code == 200
    bad = client.post("/api/login", json={"login": "bob", "password": "wrong-password-1"})
    assert bad.status_code == 401
    client.post("/api/login", json={"login": "nobody", "password": "x"})
    _flush(app)

    body = _events(client, auth(admin), action="sign_in")
    rows = body["events"]
    assert [r["result"] for r in rows] == ["failed", "failed", "ok"]
    assert rows[2]["actor"] == "bob" and rows[2]["user_agent"] == "audit-test/1"
    assert rows[2]["ip"] == "127.0.0.1"
    assert rows[1]["details"] == {"reason": "wrong password"}
    assert rows[0]["details"] == {"reason": "unknown account"}
    dumped = json.dumps(body)
    assert "wrong-password-1" not in dumped and PASSWORD not in dumped

    # bob sees his own events only (his sign-in, and the failed one naming him: no, that
    # one has no actor id; it names the login he typed), never the admin-only rest.
    mine = _events(client, auth(bob))["events"]
    assert mine and all(r["actor_id"] == bob.id for r in mine)
    assert _events(client, auth(bob), actor="root-admin")["events"] == []


def test_filters_cursor_and_bad_input(app, client, admin, auth):
    from portal import signals

    with app.app_context():
        for i in range(7):
            signals.send(signals.user_invited, email=f"p{i}@example.test", role="user", actor=None)
    _flush(app)
    h = auth(admin)
    first = _events(client, h, action="user_invited", limit=3)
    assert len(first["events"]) == 3 and first["next_cursor"]
    second = _events(client, h, action="user_invited", limit=3, cursor=first["next_cursor"])
    third = _events(client, h, action="user_invited", limit=3, cursor=second["next_cursor"])
    names = [e["target_name"] for e in first["events"] + second["events"] + third["events"]]
    assert names == [f"p{i}@example.test" for i in range(6, -1, -1)]
    assert third["next_cursor"] is None
    assert [e["target_name"] for e in _events(client, h, q="P3@EXAMPLE")["events"]] == [
        "p3@example.test"
    ]
    assert _events(client, h, q="100%")["events"] == []
    assert _events(client, h, actor="system", action="user_invited", limit=1)["events"]
    assert _events(client, h, since="2999-01-01T00:00:00Z")["events"] == []
    for params in ({"limit": "0"}, {"limit": "x"}, {"since": "yesterday"}, {"machine": "-1"}):
        resp = client.get("/api/audit", headers=h, query_string=params)
        assert resp.status_code == 400 and "error" in resp.get_json(), params
    assert client.get("/api/audit").status_code == 401


def test_other_features_signals_are_recorded(app, client, admin, auth, make_user):
    """The MFA and files work send these; the receivers are ready for them."""
    from portal import signals
    from portal.extensions import db
    from portal.machines.models import Machine

    bob = make_user("bob")
    with app.app_context():
        m = Machine(name="web-1", owner_id=admin.id, status="pending")
        db.session.add(m)
        db.session.commit()
        user = db.session.get(type(bob), bob.id)
        signals.send(
            signals.mfa_event,
            user=user,
            action="failed",
            method="totp",
            actor=user,
            details={"code": "123456", "attempt": 2},
        )
        signals.send(
            signals.file_transferred,
            user=user,
            machine=m,
            path="/etc/hosts",
            direction="download",
            size=12,
            sha256="ab" * 32,
            duration_ms=3,
            result="ok",
            details={},
        )
        signals.send(
            signals.file_changed,
            user=user,
            machine=m,
            action="rename",
            path="/tmp/a",
            result="ok",
            details={"new_path": "/tmp/b"},
        )
        mid = m.id
    _flush(app)
    rows = _events(client, auth(admin), machine=mid)["events"]
    assert [r["action"] for r in rows] == ["file_changed", "file_transferred"]
    assert rows[0]["details"] == {"new_path": "/tmp/b", "action": "rename", "path": "/tmp/a"}
    assert rows[1]["details"]["direction"] == "download"
    mfa = _events(client, auth(admin), action="mfa_failed")["events"]
    assert mfa[0]["result"] == "failed" and mfa[0]["details"] == {"attempt": 2, "method": "totp"}


def test_api_key_actor_label_and_key_events(app, client, make_user, auth):
    bob = make_user("bob")
    resp = client.post("/api/profile/regenerate-api-key", headers=auth(bob))
    assert resp.status_code in (200, 201), resp.get_data(as_text=True)
    key = resp.get_json()["api_key"]
    client.get("/api/profile", headers={"Authorization": f"Bearer {key}"})
    resp2 = client.post(
        "/api/profile/regenerate-api-key", headers={"Authorization": f"Bearer {key}"}
    )
    assert resp2.status_code in (200, 201)
    _flush(app)
    rows = _events(client, auth(bob))["events"]
    assert [r["action"] for r in rows[:3]] == [
        "api_key_created",
        "api_key_revoked",
        "api_key_created",
    ]
    assert rows[1]["actor"] == f"api key {key[:10]}"  # replaced using itself
    assert rows[2]["actor"] == "bob"  # created with a JWT
    assert rows[1]["details"] == {"prefix": key[:10]}
    assert key not in json.dumps(rows)


def test_export_jsonl_and_csv(app, client, admin, auth):
    from portal import signals

    with app.app_context():
        for i in range(1205):  # more than one export batch
            signals.send(signals.user_invited, email=f"=cmd{i}", role="user", actor=None)
    _flush(app)
    h = auth(admin)
    resp = client.get("/api/audit/export?format=jsonl&action=user_invited", headers=h)
    assert resp.status_code == 200 and resp.mimetype == "application/x-ndjson"
    lines = resp.get_data(as_text=True).splitlines()
    assert len(lines) == 1205
    assert json.loads(lines[0])["target_name"] == "=cmd1204"
    resp = client.get("/api/audit/export?format=csv&action=user_invited", headers=h)
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert len(rows) == 1205
    assert rows[-1]["target_name"] == "'=cmd0"  # no spreadsheet formula
    assert json.loads(rows[-1]["details"]) == {"role": "user"}
    bad = client.get("/api/audit/export?format=xml", headers=h)
    assert bad.status_code == 400 and "format" in bad.get_json()["error"]


def test_retention_cli_deletes_only_old_events(app, client, admin, auth):
    import datetime as dt

    from sqlalchemy import update

    from portal import signals
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    with app.app_context():
        signals.send(signals.user_invited, email="old@example.test", role="user", actor=None)
        signals.send(signals.user_invited, email="new@example.test", role="user", actor=None)
    _flush(app)
    with app.app_context():
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
        db.session.execute(
            update(AuditEvent).where(AuditEvent.target_name == "old@example.test").values(at=old)
        )
        db.session.commit()
    app.config["PORTAL_AUDIT_RETENTION_DAYS"] = 30
    out = app.test_cli_runner().invoke(args=["audit", "prune"])
    assert out.exit_code == 0 and "deleted 1 " in out.output
    names = [
        e["target_name"] for e in _events(client, auth(admin), action="user_invited")["events"]
    ]
    assert names == ["new@example.test"]
    out = app.test_cli_runner().invoke(args=["audit", "prune", "--days", "0"])
    assert out.exit_code != 0


class _Receiver:
    """A real HTTP server that answers 500 to the first `fail` POSTs, then 204."""

    def __init__(self, fail: int):
        self.fail, self.got, self.calls = fail, [], 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                if outer.calls <= outer.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.got.append((self.headers["X-Portal-Signature"], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = _Receiver(fail=3)
    yield r
    r.close()


def _wait(pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_webhook_retries_with_signature_and_survives_restart(
    app, client, admin, login, receiver, app_config
):
    from portal import create_app, signals
    from portal.audit.models import AuditDelivery
    from portal.extensions import db

    app.config["PORTAL_AUDIT_WEBHOOK_BACKOFF"] = 0.05
    token = login(admin)
    secret = "s3cret-webhook-key-123"
    resp = client.post(
        "/audit/webhook", data={"url": "ftp://x", "secret": secret, "csrf_token": token}
    )
    assert resp.status_code == 400 and "http://" in resp.get_data(as_text=True)
    resp = client.post(
        "/audit/webhook", data={"url": receiver.url, "secret": "short", "csrf_token": token}
    )
    assert resp.status_code == 400 and "16 to 200" in resp.get_data(as_text=True)
    resp = client.post(
        "/audit/webhook", data={"url": receiver.url, "secret": secret, "csrf_token": token}
    )
    assert resp.status_code == 303
    page = client.get("/audit").get_data(as_text=True)
    assert secret not in page and receiver.url in page

    with app.app_context():
        signals.send(signals.user_invited, email="hook@example.test", role="user", actor=None)
    _flush(app)
    assert _wait(lambda: receiver.got), "the webhook never got the event"
    assert receiver.calls == 4  # three failures, then the delivery
    sig, body = receiver.got[0]
    assert sig == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert json.loads(body)["target_name"] == "hook@example.test"
    with app.app_context():
        assert _wait(lambda: db.session.query(AuditDelivery).count() == 0)

    # Queued while "down": the process stops before delivering; a new one delivers it.
    app.extensions["portal_audit_webhook"].stop()
    with app.app_context():
        signals.send(signals.user_invited, email="later@example.test", role="user", actor=None)
    _flush(app)
    with app.app_context():
        assert db.session.query(AuditDelivery).count() == 1
        db.session.remove()
    second = create_app({**app_config, "TESTING": False, "PORTAL_AUDIT_WEBHOOK_BACKOFF": 0.05})
    try:
        assert _wait(lambda: len(receiver.got) == 2)
        assert json.loads(receiver.got[1][1])["target_name"] == "later@example.test"
    finally:
        signals.shutdown(second)


def test_audit_page_filters_and_htmx(app, client, admin, make_user, login):
    from portal import signals

    bob = make_user("bob")
    with app.app_context():
        for i in range(60):
            signals.send(
                signals.user_invited, email=f"inv{i}@example.test", role="user", actor=None
            )
    login(admin)
    _flush(app)
    html = client.get("/audit").get_data(as_text=True)
    assert "inv59@example.test" in html and "Older events" in html
    assert "inv9@example.test" not in html
    part = client.get(
        "/audit?q=inv5&action=user_invited",
        headers={"HX-Request": "true", "HX-Target": "audit-events"},
    )
    assert part.status_code == 200
    text = part.get_data(as_text=True)
    assert "<html" not in text and "inv5@example.test" in text and "inv6@" not in text
    bad = client.get(
        "/audit?since=soon", headers={"HX-Request": "true", "HX-Target": "audit-events"}
    )
    assert bad.status_code == 400 and "ISO 8601" in bad.get_data(as_text=True)

    # A user sees only their own events, and no webhook form.
    client.post("/logout", data={"csrf_token": csrf_from(html)})
    login(bob)
    _flush(app)
    html = client.get("/audit").get_data(as_text=True)
    assert "inv1@example.test" not in html and "sign_in" in html
    assert "audit-webhook" not in html
    token = csrf_from(html)
    resp = client.post(
        "/audit/webhook",
        data={"url": "http://127.0.0.1:9/x", "secret": "x" * 20, "csrf_token": token},
    )
    assert resp.status_code == 403
    with app.app_context():
        from portal.audit.models import AuditWebhook
        from portal.extensions import db

        assert db.session.query(AuditWebhook).count() == 0


def test_refresh_reuse_role_change_and_sign_out(app, client, admin, make_user, auth, login):
    bob = make_user("bob")
    pair = client.post("/api/login", json={"login": "bob", "password": PASSWORD}).get_json()
    assert (
        client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
        == 200
    )
    again = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 401
    resp = client.post(f"/api/users/{bob.id}/role", json={"role": "admin"}, headers=auth(admin))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    token = login(admin)
    client.post("/logout", data={"csrf_token": token})
    _flush(app)
    h = auth(admin)
    reuse = _events(client, h, action="refresh_reuse_detected")["events"]
    assert len(reuse) == 1 and reuse[0]["target_id"] == str(bob.id)
    assert reuse[0]["result"] == "denied" and pair["refresh_token"] not in json.dumps(reuse)
    role = _events(client, h, action="user_role_changed")["events"][0]
    assert (role["actor"], role["target_name"], role["details"]) == (
        "root-admin",
        "bob",
        {"role": "admin"},
    )
    out = _events(client, h, action="sign_out")["events"]
    assert [e["actor"] for e in out] == ["root-admin"]
    # bob, an admin now, sees everyone's events (the admin's sign-out too)
    seen = {e["action"] for e in _events(client, auth(bob))["events"]}
    assert {"refresh_reuse_detected", "user_role_changed", "sign_in", "sign_out"} <= seen


def test_admin_account_actions_are_audited(app, client, admin, auth):
    h = auth(admin)
    inv = client.post("/api/users/invites", json={"email": "x@example.test"}, headers=h)
    assert inv.status_code == 201, inv.get_data(as_text=True)
    invite_id = inv.get_json()["invite"]["id"]
    assert client.delete(f"/api/users/invites/{invite_id}", headers=h).status_code == 200
    made = client.post(
        "/api/users", json={"email": "c@example.test", "username": "carol"}, headers=h
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    carol = made.get_json()["user"]["id"]
    reset = client.post(f"/api/users/{carol}/reset-password", headers=h)
    assert reset.status_code == 200, reset.get_data(as_text=True)
    deact = client.post(f"/api/users/{carol}/active", json={"active": False}, headers=h)
    assert deact.status_code == 200, deact.get_data(as_text=True)
    _flush(app)
    rows = _events(client, h)["events"]
    assert [r["action"] for r in rows][:6] == [
        "user_deactivated",
        "tokens_revoked",
        "password_reset_by_admin",
        "tokens_revoked",
        "user_created",
        "invite_revoked",
    ]
    assert all(r["actor"] == "root-admin" for r in rows[:6] if r["action"] != "tokens_revoked")
    dumped = json.dumps(rows)
    assert made.get_json().get("password", "none-given") not in dumped
    assert reset.get_json().get("password", "none-given") not in dumped


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_events_go_to_syslog_once_committed(app_config, kind):
    """PORTAL_AUDIT_SYSLOG: a real socket receives each event as a syslog message (facility
    authpriv; info for ok, warning otherwise) tagged portal-audit, with the event as JSON."""
    import re
    import socket
    import threading

    from portal import create_app, signals

    got: list[bytes] = []
    if kind == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))

        def serve():
            while True:
                try:
                    got.append(sock.recv(65536))
                except OSError:
                    return

    else:
        sock = socket.create_server(("127.0.0.1", 0))

        def serve():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            buf = b""
            with conn:
                while data := conn.recv(65536):
                    *lines, buf = (buf + data).split(b"\n")  # a line per event
                    got.extend(line for line in lines if line)

    threading.Thread(target=serve, daemon=True).start()
    port = sock.getsockname()[1]
    app = create_app({**app_config, "PORTAL_AUDIT_SYSLOG": f"{kind}://127.0.0.1:{port}"})
    try:
        with app.app_context():
            signals.send(signals.sign_in_failed, login="mallory", reason="no such user")
            signals.send(signals.user_invited, email="new@example.test", role="user", actor=None)
        _flush(app)
        assert _wait(lambda: len(got) >= 2)
        failed, invited = got[0].decode(), got[1].decode()
        # <PRI>: facility authpriv (10) * 8 + severity (4 warning, 6 info)
        assert re.match(r"<84>portal-audit: \{", failed), failed
        assert re.match(r"<86>portal-audit: \{", invited), invited
        event = json.loads(failed.split("portal-audit: ", 1)[1])
        assert event["action"] == "sign_in" and event["result"] == "failed"
        assert event["target_name"] == "mallory" and event["id"] > 0
        assert json.loads(invited.split("portal-audit: ", 1)[1])["target_name"] == (
            "new@example.test"
        )
    finally:
        signals.shutdown(app)
        sock.close()


def test_a_bad_syslog_target_refuses_to_start(app_config):
    from portal import create_app

    with pytest.raises(ValueError, match="PORTAL_AUDIT_SYSLOG must be"):
        create_app({**app_config, "PORTAL_AUDIT_SYSLOG": "http://siem.example"})


def test_the_full_text_filter_is_served_by_an_index(app, client, admin, auth):
    """Migration 0016: PostgreSQL's trigram index can answer `search LIKE '%word%'` without
    reading the table; on SQLite the FTS5 trigram table answers it from its index (kept in
    step by triggers: an inserted event is found, a pruned one is gone)."""
    from sqlalchemy import delete, text

    from portal import signals
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            query = "SELECT id FROM audit_events WHERE search LIKE '%zqxw%'"
            db.session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(r[0] for r in db.session.execute(text(f"EXPLAIN {query}")))
            assert "ix_audit_events_search_trgm" in plan, plan
        else:
            query = "SELECT rowid FROM audit_events_fts WHERE search LIKE '%zqxw%'"
            plan = str(db.session.execute(text(f"EXPLAIN QUERY PLAN {query}")).all())
            assert ":L0" in plan, plan  # the LIKE is the index's own constraint
        db.session.rollback()
        signals.send(signals.user_invited, email="zqxw-one@example.test", role="user", actor=None)
        signals.send(signals.user_invited, email="other@example.test", role="user", actor=None)
    _flush(app)
    headers = auth(admin)
    found = _events(client, headers, q="zqxw-one")["events"]
    assert [e["target_name"] for e in found] == ["zqxw-one@example.test"]
    assert [e["target_name"] for e in _events(client, headers, q="qxw one")["events"]] == [
        "zqxw-one@example.test"
    ]
    with app.app_context():
        db.session.execute(delete(AuditEvent).where(AuditEvent.id == found[0]["id"]))
        db.session.commit()
    assert _events(client, headers, q="zqxw")["events"] == []


def test_a_fresh_install_s_db_upgrade_prints_no_webhook_traceback(tmp_path):
    """`make run` on a fresh machine runs `flask db upgrade` before any table exists: the
    webhook deliverer must not start from a `flask` command (it logged "no such table")."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PORTAL_INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
    }
    env.pop("REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    assert (tmp_path / "fresh.db").exists()


def test_the_webhook_deliverer_on_a_database_without_tables_logs_one_line(tmp_path, caplog):
    """`gunicorn` started before `flask db upgrade`: the deliverer said so with a traceback
    every 5 s; now one warning, no traceback, however often it is woken."""
    import logging

    from portal import create_app, signals
    from portal.extensions import db

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
            "PORTAL_INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "test-secret-" + "w" * 40,
        }
    )
    deliverer = app.extensions["portal_audit_webhook"]
    caplog.set_level(logging.INFO, logger="portal.audit.webhook")
    try:
        for _ in range(4):
            deliverer.kick()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and deliverer.wake.is_set():
                time.sleep(0.02)  # the loop took the wake-up and tried again
            time.sleep(0.2)
    finally:
        deliverer.stop()
        signals.shutdown(app)
        with app.app_context():
            db.engine.dispose()
    mine = [r for r in caplog.records if r.name == "portal.audit.webhook"]
    assert [r.levelname for r in mine] == ["WARNING"], [r.getMessage() for r in mine]
    assert "no such table" in mine[0].getMessage()
    assert "flask db upgrade" in mine[0].getMessage()
    assert all(r.exc_info is None for r in mine)
