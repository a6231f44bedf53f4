"""Security review fixes on the real sshd and the live server: no-echo input kept out of the
command log, watchers closed when their access ends, ticket limits, recording size cap,
live recordings flushed, resize frames for watchers."""

from __future__ import annotations

import json

import pytest
import requests

from portal import signals
from tests.fixtures import terminal as _helpers
from tests.fixtures.terminal import Term, share, wait_for, watch, ws_base

pytestmark = pytest.mark.timeout(90)

HIDDEN = "[input hidden: not echoed]"


def _get(live_server, path, headers):
    return requests.get(f"{live_server.url}{path}", headers=headers, timeout=10)


def _all_logged(app) -> list[str]:
    from sqlalchemy import select

    from portal.extensions import db
    from portal.machines.models import CommandLog

    with app.app_context():
        rows = db.session.scalars(select(CommandLog)).all()
        out = [f"{r.command} {getattr(r, 'output', '') or ''}" for r in rows]
        db.session.remove()
    return out


def test_input_typed_without_echo_is_not_logged(term_env, live_server, auth, app):
    owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    # read -s: the terminal echoes nothing while the secret is typed
    t.send('read -s -p "Secret> " X; echo got-$((1+1))\r')
    t.read_until(r"\rSecret> ")
    t.send("hunter2-s3cret\r")
    t.read_until(r"got-2\r\n")
    # stty -echo, then a plain read
    t.send("stty -echo; echo off-$((5+5)); read Y; stty echo; echo done-$((2+2))\r")
    t.read_until(r"off-10\r\n")  # stty has run: the terminal echoes nothing now
    t.send("tiger-s3cret\r")
    t.read_until(r"done-4\r\n")
    # a password prompt: hidden even if the program echoed what was typed
    t.send('read -p "Password: " Z; echo ok-$((3+3))\r')
    t.read_until(r"\rPassword: ")
    t.send("lion-s3cret\r")
    t.read_until(r"ok-6\r\n")
    t.run("echo visible-$((3+4))", r"visible-7\r\n")

    def commands():
        body = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()
        cmds = [c["command"] for c in body["commands"]]
        return cmds if len(cmds) >= 7 else None

    cmds = wait_for(commands, timeout=15, interval=0.2)
    assert cmds == [
        'read -s -p "Secret> " X; echo got-$((1+1))',
        HIDDEN,
        "stty -echo; echo off-$((5+5)); read Y; stty echo; echo done-$((2+2))",
        HIDDEN,
        'read -p "Password: " Z; echo ok-$((3+3))',
        HIDDEN,
        "echo visible-$((3+4))",
    ]
    logged = " ".join(_all_logged(app))
    for secret in ("hunter2", "tiger", "lion"):
        assert secret not in logged


# ---------------------------------------------------------------- watchers


def _watchers_end_when_access_ends(
    app, term_env, live_server, watch_server, auth, make_user, grant_role, token_for, admin
):
    from portal.accounts import users as acc
    from portal.accounts.models import User
    from portal.extensions import db

    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo shared-$((2+2))", r"shared-4\r\n")
    share(live_server, auth(owner), sid)
    revoked, deactivated, signed_out, stays = (
        make_user(n) for n in ("w-revoked", "w-deact", "w-signout", "w-stays")
    )
    tokens = {}
    for u in (revoked, deactivated, signed_out, stays):
        grant_role(machine, u, "viewer")
        tokens[u.id] = token_for(u)
    watchers = {
        u.id: watch(watch_server, sid, tokens[u.id], ready=True)
        for u in (revoked, deactivated, signed_out, stays)
    }
    for w in watchers.values():
        w.read_until(r"shared-4")

    r = requests.post(
        f"{live_server.url}/api/machines/{machine.agent_id}/access/revoke",
        headers=auth(owner),
        json={"user": revoked.username},
        timeout=10,
    )
    assert r.status_code in (200, 204), r.text
    assert "revoked" in watchers[revoked.id].wait_control("error")["message"]

    with app.test_request_context():
        acc.set_active(db.session.get(User, admin.id), db.session.get(User, deactivated.id), False)
        db.session.commit()
    assert "deactivated" in watchers[deactivated.id].wait_control("error")["message"]

    r = requests.post(
        f"{live_server.url}/api/auth/logout",
        headers={"Authorization": f"Bearer {tokens[signed_out.id]}"},
        timeout=10,
    )
    assert r.status_code in (200, 204), r.text
    assert "signed out" in watchers[signed_out.id].wait_control("error")["message"]

    # the owner's terminal and the other watcher are untouched
    t.run("echo still-$((3+3))", r"still-6\r\n")
    watchers[stays.id].read_until(r"still-6")
    assert not any(c.get("type") == "error" for c in watchers[stays.id].controls)
    # unsharing ends the remaining watcher
    share(live_server, auth(owner), sid, shared=False)
    assert "no longer shared" in watchers[stays.id].wait_control("error")["message"]
    for w in watchers.values():
        w.close()


def test_watchers_are_closed_when_their_access_ends(
    app, term_env, live_server, auth, make_user, grant_role, token_for, admin
):
    _watchers_end_when_access_ends(
        app, term_env, live_server, live_server, auth, make_user, grant_role, token_for, admin
    )


def test_watchers_learn_about_resizes(term_env, live_server, token_for):
    owner, _machine, open_term = term_env
    t = open_term("cols=100&rows=30")
    sid = t.wait_control("ready")["session_id"]
    w = watch(live_server, sid, token_for(owner), ready=True)  # its user may always watch
    assert w.wait_control("resize") == {"type": "resize", "cols": 100, "rows": 30}
    w.controls.clear()
    t.control({"type": "resize", "cols": 120, "rows": 40})
    assert w.wait_control("resize") == {"type": "resize", "cols": 120, "rows": 40}
    w.close()


class TestRedis:
    def test_tickets_capped_per_user_in_redis(
        self, app, term_env, live_server, auth, make_user, grant_role
    ):
        owner, machine, _open = term_env
        other = make_user("ticket-other2")
        grant_role(machine, other, "operator")
        assert app.extensions["portal_terminal"].bus.kind == "redis"
        _tickets_are_capped_per_user(app, live_server, auth, owner, machine, other)

    @pytest.fixture
    def app_config(self, app_config):
        return _helpers.redis_config(app_config)

    def test_watchers_on_another_worker_are_closed(
        self, app, app_config, term_env, live_server, auth, make_user, grant_role, token_for, admin
    ):
        """The watch sockets sit in a second app instance (another worker); the hooks run in
        the first: the close request travels over Redis."""
        from portal import create_app
        from tests.fixtures.browser import LiveServer

        assert app.extensions["portal_terminal"].bus.kind == "redis"
        app2 = create_app(app_config)
        server2 = LiveServer(app2).start()
        try:
            _watchers_end_when_access_ends(
                app, term_env, live_server, server2, auth, make_user, grant_role, token_for, admin
            )
        finally:
            server2.stop()
            signals.shutdown(app2)


# ---------------------------------------------------------------- tickets


def _ticket(live_server, headers, agent_id):
    return requests.post(
        f"{live_server.url}/api/terminal/{agent_id}/ticket", headers=headers, timeout=10
    )


def _ticket_works(live_server, agent_id, ticket) -> bool:
    import websocket

    try:
        t = Term(f"{ws_base(live_server)}/api/terminal/{agent_id}/ws?ticket={ticket}")
    except websocket.WebSocketBadStatusException as exc:
        assert exc.status_code == 401
        return False
    t.wait_control("ready")
    t.close()
    return True


def _tickets_are_capped_per_user(app, live_server, auth, owner, machine, other):
    from portal.terminal.bus import TICKETS_PER_USER

    tickets = []
    for _ in range(TICKETS_PER_USER + 5):
        r = _ticket(live_server, auth(owner), machine.agent_id)
        assert r.status_code == 200, r.text
        tickets.append(r.json()["ticket"])
    # the oldest were dropped, the newest work; another user is not affected
    assert not _ticket_works(live_server, machine.agent_id, tickets[0])
    assert not _ticket_works(live_server, machine.agent_id, tickets[4])
    assert _ticket_works(live_server, machine.agent_id, tickets[5])
    assert _ticket_works(live_server, machine.agent_id, tickets[-1])
    r = _ticket(live_server, auth(other), machine.agent_id)
    assert r.status_code == 200
    assert _ticket_works(live_server, machine.agent_id, r.json()["ticket"])
    return len(tickets)


def test_tickets_capped_per_user_and_rate_limited(
    app, term_env, live_server, auth, make_user, grant_role
):
    owner, machine, _open = term_env
    other = make_user("ticket-other")
    grant_role(machine, other, "operator")
    n = _tickets_are_capped_per_user(app, live_server, auth, owner, machine, other)
    bus = app.extensions["portal_terminal"].bus
    assert bus.ticket_count(owner.id) <= 20
    statuses = [
        _ticket(live_server, auth(owner), machine.agent_id).status_code for _ in range(70 - n)
    ]
    assert 500 not in statuses
    assert statuses.count(200) == 60 - n and statuses[-1] == 429
    body = _ticket(live_server, auth(owner), machine.agent_id).json()
    assert body["error"]
    # the limit is per user: another user still gets tickets
    assert _ticket(live_server, auth(other), machine.agent_id).status_code == 200


def test_ticket_store_sweeps_expired_and_never_overflows():
    from portal.terminal import bus as busmod

    b = busmod.LocalBus()
    b.put_ticket("old", {"user_id": 1}, -1)  # already expired
    for i in range(busmod.TICKETS_PER_USER + 3):
        b.put_ticket(f"k{i}", {"user_id": 2}, 60)
    assert b.take_ticket("old") is None  # swept on insert
    assert b.ticket_count(2) == busmod.TICKETS_PER_USER and b.take_ticket("k0") is None
    assert b.take_ticket(f"k{busmod.TICKETS_PER_USER + 2}") == {"user_id": 2}
    small = busmod.LocalBus()
    orig = busmod.TICKETS_MAX
    busmod.TICKETS_MAX = 5
    try:
        for i in range(10):
            small.put_ticket(f"u{i}", {"user_id": i}, 60)  # never raises
        assert small.ticket_count() == 5 and small.take_ticket("u9") == {"user_id": 9}
    finally:
        busmod.TICKETS_MAX = orig


# ---------------------------------------------------------------- recordings


def _events(live_server, headers, sid) -> list:
    r = _get(live_server, f"/api/sessions/{sid}/recording", headers)
    assert r.status_code == 200
    return [json.loads(x) for x in r.text.splitlines()[1:] if x.strip()]


def _out_text(events) -> str:
    return "".join(e[2] for e in events if e[1] == "o")


def test_live_recording_is_flushed_while_the_session_runs(term_env, live_server, auth):
    owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo flushed-$((6*7))", r"flushed-42\r\n")
    # the session is still open: the file on disk catches up within a few seconds
    assert wait_for(
        lambda: "flushed-42" in _out_text(_events(live_server, auth(owner), sid)),
        timeout=10,
        interval=0.25,
    )
    s = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()["session"]
    assert s["status"] == "active"


def test_recorder_stops_at_the_size_cap(tmp_path):
    from portal.terminal.recorder import Recorder

    rec = Recorder(tmp_path, "c.cast", 80, 24, max_bytes=100)
    rec.output(b"a" * 60)
    rec.output(b"b" * 60)  # crosses the cap: 40 bytes kept, then the notice and a marker
    rec.output(b"c" * 60)  # dropped
    rec.resize(90, 30)
    rec.close()
    events = [json.loads(x) for x in (tmp_path / "c.cast").read_text().splitlines()[1:]]
    text = _out_text(events)
    assert text.startswith("a" * 60 + "b" * 40 + "\r\n") and "c" not in text.split("]")[-1]
    assert "size limit of 100 bytes" in text
    assert [e[1] for e in events if e[1] == "m"] == ["m"] and rec.truncated
    assert ["r", "90x30"] in [e[1:] for e in events]


class TestRecordingCap:
    @pytest.fixture
    def app_config(self, app_config):
        return {**app_config, "PORTAL_RECORDING_MAX_BYTES": 4096}

    def test_recording_stops_at_the_cap_and_the_session_goes_on(self, term_env, live_server, auth):
        owner, _machine, open_term = term_env
        t = open_term()
        sid = t.wait_control("ready")["session_id"]
        t.run("head -c 20000 /dev/zero | tr '\\0' x; echo; echo big-$((1+1))", r"big-2\r\n")
        t.run("echo alive-$((2+3))", r"alive-5\r\n")  # the session goes on

        def marker():
            events = _events(live_server, auth(owner), sid)
            return events if any(e[1] == "m" for e in events) else None

        events = wait_for(marker, timeout=10, interval=0.25)
        assert events, "no size-limit marker in the recording"
        text = _out_text(events)
        assert "size limit of 4096 bytes" in text
        assert "alive-5" not in text
        assert len(text.encode()) < 4096 + 200
        t.send("exit\r")
        t.wait_control("exit")
