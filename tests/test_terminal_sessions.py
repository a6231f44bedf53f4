"""Session lifecycle on the real sshd: resume, DELETE, revoke/deactivate, cap, ghosts,
command log, recordings, the JSON lists."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from portal import signals
from tests.fixtures import terminal as _helpers
from tests.fixtures.terminal import wait_for

pytestmark = pytest.mark.timeout(90)

SESSION_FIELDS = {
    "id",
    "machine",
    "user",
    "status",
    "started_at",
    "ended_at",
    "close_reason",
    "cols",
    "rows",
    "bytes_in",
    "bytes_out",
}


def _get(live_server, path, headers):
    return requests.get(f"{live_server.url}{path}", headers=headers, timeout=10)


def _logged_commands(live_server, headers, sid: str, count: int) -> list[str] | None:
    """The session's logged commands once there are `count` of them (up to 10 s)."""

    def commands():
        body = _get(live_server, f"/api/sessions/{sid}", headers).json()
        cmds = [c["command"] for c in body["commands"]]
        return cmds if len(cmds) >= count else None

    return wait_for(commands, timeout=10)


def test_resume_after_a_forced_drop_keeps_shell_state(term_env, live_server, auth):
    owner, _machine, open_term = term_env

    def status(want):
        s = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()["session"]
        return s if s["status"] == want else None

    t = open_term("cols=100&rows=30")
    sid = t.wait_control("ready")["session_id"]
    t.run("MYVAR=kept$((1+1)); echo BEFORE$((2+2))", r"BEFORE4")
    assert wait_for(lambda: status("active"))
    t.drop()
    assert wait_for(lambda: status("detached"))  # the shell lives on, the row says so
    t2 = open_term(f"session={sid}")
    ready = t2.wait_control("ready")
    assert ready == {"type": "ready", "session_id": sid, "resumed": True}
    t2.read_until(r"BEFORE4")  # the ring buffer replays the screen
    t2.run("echo V=$MYVAR", r"V=kept2")
    t2.control({"type": "resize", "cols": 90, "rows": 20})
    t2.run("stty size", r"20 90")
    # sizes are written at once, byte counters every 5 s
    s = wait_for(
        lambda: (r := status("active")) and (r["cols"], r["rows"]) == (90, 20) and r, timeout=15
    )
    assert s, "the resize never reached the row"
    s = wait_for(lambda: (r := status("active")) and r["bytes_in"] > 0 and r, timeout=15)
    assert s and s["bytes_out"] > s["bytes_in"] > 0, s


def test_a_lost_ssh_connection_ends_with_an_error(term_env, make_sshd, sshd_machine):
    """The machine's sshd goes away under a live terminal: no exit status exists, so the
    browser gets `error` with the reason (the contract's `exit` carries an integer code)."""
    from tests.fixtures.sshd import _descendants

    owner, _machine, open_term = term_env
    server = make_sshd("lostconn")
    machine = sshd_machine(owner, server=server)
    t = open_term(agent_id=machine.agent_id)
    t.wait_control("ready")
    t.run("echo up$((1+1))", r"up2")
    import os
    import signal

    for pid in _descendants(server.proc.pid):  # the connection's sshd and its shell
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    msg = t.wait_control("error")
    assert msg["message"] == "the connection to the machine was lost"
    assert not [c for c in t.controls if c.get("type") == "exit"]


def test_delete_reaches_the_client_and_closes_the_session(
    app, term_env, live_server, auth, request
):
    owner, machine, open_term = term_env
    ended = []

    def on_closed(sender, **event):
        ended.append(event)

    signals.session_closed.connect(on_closed, sender=app)
    request.addfinalizer(lambda: signals.session_closed.disconnect(on_closed, sender=app))
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    r = requests.delete(f"{live_server.url}/api/terminal/sessions/{sid}", headers=auth(owner))
    assert r.status_code == 204
    msg = t.wait_control("error", timeout=10)
    assert "closed" in msg["message"]
    t.drain_close()
    assert t.closed
    s = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()["session"]
    assert s["status"] == "closed" and s["close_reason"] and s["ended_at"]
    active = _get(live_server, f"/api/machines/{machine.agent_id}/sessions/active", auth(owner))
    assert active.json()["sessions"] == []
    # the other features hear of it once (portal/signals.py), with who, where and why
    assert wait_for(lambda: ended, timeout=10)
    assert ended == [
        {
            "session_id": sid,
            "user_id": owner.id,
            "machine_id": machine.id,
            "reason": s["close_reason"],
        }
    ]


def test_machine_admin_may_delete_others_may_not(
    term_env, live_server, auth, make_user, grant_role
):
    _owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    op = make_user("op3")
    grant_role(machine, op, "operator")
    r = requests.delete(f"{live_server.url}/api/terminal/sessions/{sid}", headers=auth(op))
    assert r.status_code == 404  # cannot even see it
    adm = make_user("madmin")
    grant_role(machine, adm, "admin")
    r = requests.delete(f"{live_server.url}/api/terminal/sessions/{sid}", headers=auth(adm))
    assert r.status_code == 204
    assert "administrator" in t.wait_control("error")["message"]


def test_revoking_access_closes_live_sessions(
    term_env, live_server, auth, make_user, grant_role, token_for
):
    owner, machine, open_term = term_env
    op = make_user("op4")
    grant_role(machine, op, "operator")
    t = open_term(token_=token_for(op))
    t.wait_control("ready")
    r = requests.post(
        f"{live_server.url}/api/machines/{machine.agent_id}/access/revoke",
        headers=auth(owner),
        json={"user": op.username},
    )
    assert r.status_code in (200, 204), r.text
    assert "revoked" in t.wait_control("error")["message"]


def test_deactivating_a_user_closes_their_sessions(term_env, app, admin):
    owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    from portal.accounts import users as acc
    from portal.accounts.models import User
    from portal.extensions import db

    with app.test_request_context():
        acc.set_active(db.session.get(User, admin.id), db.session.get(User, owner.id), False)
        db.session.commit()
    assert "deactivated" in t.wait_control("error")["message"]


def test_per_user_cap(term_env, app):
    _owner, _machine, open_term = term_env
    app.extensions["portal_terminal"].cap = 2
    for _ in range(2):
        open_term().wait_control("ready")
    t3 = open_term()
    assert "most allowed" in t3.wait_control("error")["message"]


def test_grace_period_expiry_closes_with_a_reason(term_env, app, live_server, auth):
    owner, _machine, open_term = term_env
    app.extensions["portal_terminal"].grace = 1
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.drop()

    def closed():
        s = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()["session"]
        return s if s["status"] == "closed" else None

    s = wait_for(closed, timeout=15, interval=0.25)
    assert s and "reconnect" in s["close_reason"]


def test_ghost_sessions_are_closed_on_start(app, app_config, make_user, make_machine):
    from portal import create_app
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    owner = make_user("ghostowner")
    machine = make_machine(owner)
    dead = f"{socket.gethostname()}:999999:1"
    with app.app_context():
        for sid, server_id, status in [
            ("00000000-0000-0000-0000-000000000001", dead, "active"),
            ("00000000-0000-0000-0000-000000000002", None, "detached"),
            ("00000000-0000-0000-0000-000000000003", "otherhost:1:1", "active"),
        ]:
            db.session.add(
                TerminalSession(
                    id=sid,
                    machine_id=machine.id,
                    user_id=owner.id,
                    status=status,
                    server_id=server_id,
                )
            )
        db.session.commit()
    app2 = create_app(app_config)
    try:
        with app2.app_context():
            rows = {r.id: r for r in db.session.query(TerminalSession).all()}
            assert rows["00000000-0000-0000-0000-000000000001"].status == "closed"
            assert rows["00000000-0000-0000-0000-000000000001"].close_reason == "server restarted"
            assert rows["00000000-0000-0000-0000-000000000002"].status == "closed"
            # another host's row and no Redis to ask: an app start alone (a `flask` command
            # in a container of its own) cannot tell, and leaves it alone
            assert rows["00000000-0000-0000-0000-000000000003"].status == "active"
            db.session.remove()
        # The terminal server's worker start (gunicorn's post_worker_init) closes it:
        # servers share a database only through Redis, so it was left by an earlier
        # incarnation of this one (a container that came back with a new hostname).
        from portal.terminal import on_serve

        on_serve(app2)
        with app2.app_context():
            row = db.session.get(TerminalSession, "00000000-0000-0000-0000-000000000003")
            assert row.status == "closed" and row.close_reason == "server restarted"
            db.session.remove()
    finally:
        signals.shutdown(app2)


def test_command_log_from_typed_input(term_env, live_server, auth):
    owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.send("echo abX\x7fc\r")
    t.read_until(r"abc\r\n")
    t.send("rm -rf /nothing-here\x03")
    t.read_until(r"\^C[\s\S]*\$ ")
    t.send("echo one two junk\x17three\r")
    t.read_until(r"one two three\r\n")
    t.send("echo wrong\x15echo $((3*3))\r")
    t.read_until(r"\r9\r\n")

    cmds = _logged_commands(live_server, auth(owner), sid, 3)
    assert cmds == ["echo abc", "echo one two three", "echo $((3*3))"]
    body = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()
    assert all(c["source"] == "terminal" and c["session_id"] == sid for c in body["commands"])


def test_a_shell_killed_by_a_signal_ends_with_an_error_that_says_so(term_env):
    """sshd reports a signal (exit-signal), not an exit status: no integer code to send."""
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.run("echo up$((2+2))", r"up4")
    t.send("kill -9 $$\r")
    assert t.wait_control("error")["message"] == "the shell was killed by a signal"
    assert not [c for c in t.controls if c.get("type") == "exit"]


def test_pasted_lines_are_logged_one_command_each(term_env, live_server, auth):
    """A paste arrives as one frame; bash (5.1+) brackets it. Each pasted line runs and is
    logged as its own command, in order; the bracket markers never reach the log."""
    owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo ready-$((2*2))", r"ready-4")
    t.send("\x1b[200~echo p$((1+0))\recho p$((1+1))\r\x1b[201~")  # as xterm sends a paste
    t.send("\recho p$((1+2))\r")
    t.read_until(r"p3\r\n")

    cmds = _logged_commands(live_server, auth(owner), sid, 4)
    assert cmds == ["echo ready-$((2*2))", "echo p$((1+0))", "echo p$((1+1))", "echo p$((1+2))"]
    assert t.out.count(b"p1\r\n") >= 1 and t.out.count(b"p2\r\n") >= 1


def test_recording_is_valid_asciicast_v2(term_env, live_server, auth):
    owner, _machine, open_term = term_env
    t = open_term("cols=100&rows=30")
    sid = t.wait_control("ready")["session_id"]
    t.run("echo rec$((5*5))", r"rec25")
    t.control({"type": "resize", "cols": 90, "rows": 20})
    t.run("stty size", r"20 90")
    t.send("exit\r")
    t.wait_control("exit")
    body = wait_for(
        lambda: (
            (b := _get(live_server, f"/api/sessions/{sid}", auth(owner)).json())["session"][
                "status"
            ]
            == "closed"
            and b
        ),
        timeout=10,
    )
    assert body["recording_url"]
    r = _get(live_server, body["recording_url"], auth(owner))
    assert r.status_code == 200
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    lines = r.text.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 100 and header["height"] == 30
    assert header["env"]["TERM"] == "xterm-256color" and isinstance(header["timestamp"], int)
    events = [json.loads(x) for x in lines[1:]]
    assert all(isinstance(e[0], float | int) and e[1] in ("o", "r") for e in events)
    times = [e[0] for e in events]
    assert times == sorted(times)
    assert ["r", "90x20"] in [e[1:] for e in events]
    assert "rec25" in "".join(e[2] for e in events if e[1] == "o")
    dl = _get(live_server, body["recording_url"] + "?download=1", auth(owner))
    assert "attachment" in dl.headers["Content-Disposition"]


def test_session_lists_and_fields(term_env, live_server, auth, make_user, token_for):
    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    lst = _get(live_server, "/api/terminal/sessions", auth(owner)).json()
    assert [s["id"] for s in lst["sessions"]] == [sid]
    s = lst["sessions"][0]
    assert SESSION_FIELDS <= set(s)
    assert s["machine"] == {"agent_id": machine.agent_id, "name": machine.name}
    assert s["user"] == {"id": owner.id, "username": owner.username}
    assert s["status"] == "active" and s["cols"] == 80 and s["rows"] == 24
    for path in (
        f"/api/machines/{machine.agent_id}/sessions",
        f"/api/machines/{machine.agent_id}/sessions/active",
    ):
        assert [x["id"] for x in _get(live_server, path, auth(owner)).json()["sessions"]] == [sid]
    stranger = make_user("nosy")
    assert _get(live_server, "/api/terminal/sessions", auth(stranger)).json()["sessions"] == []
    assert _get(live_server, f"/api/sessions/{sid}", auth(stranger)).status_code == 404
    assert _get(live_server, f"/api/sessions/{sid}/recording", auth(stranger)).status_code == 404
    assert (
        _get(live_server, f"/api/machines/{machine.agent_id}/sessions", auth(stranger)).status_code
        == 404
    )


def test_shutdown_hook_closes_sessions_with_a_reason(term_env, app):
    _owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    signals.shutdown(app)
    assert "shutting down" in t.wait_control("error")["message"]
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    with app.app_context():
        row = db.session.get(TerminalSession, sid)
        assert row.status == "closed" and "shutting down" in row.close_reason
        db.session.remove()


def test_idle_timeout_closes_the_session(term_env, app):
    _owner, _machine, open_term = term_env
    app.extensions["portal_terminal"].idle_timeout = 1
    t = open_term()
    t.wait_control("ready")
    assert "idle" in t.wait_control("error", timeout=15)["message"]


def test_deleting_the_machine_closes_its_sessions(term_env, live_server, auth):
    owner, machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    r = requests.delete(f"{live_server.url}/api/machines/{machine.agent_id}", headers=auth(owner))
    assert r.status_code == 204, r.text
    assert "deleted" in t.wait_control("error")["message"]


def test_delete_of_a_session_no_process_holds_marks_it_closed(
    app, live_server, auth, make_user, make_machine
):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    owner = make_user("orphanowner")
    machine = make_machine(owner)
    sid = "00000000-0000-0000-0000-0000000000aa"
    with app.app_context():
        db.session.add(
            TerminalSession(id=sid, machine_id=machine.id, user_id=owner.id, status="detached")
        )
        db.session.commit()
    r = requests.delete(f"{live_server.url}/api/terminal/sessions/{sid}", headers=auth(owner))
    assert r.status_code == 204
    s = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()["session"]
    assert s["status"] == "closed" and s["close_reason"] == "closed by its user"


def test_sign_out_everywhere_closes_terminals(term_env, live_server, token_for):
    owner, _machine, open_term = term_env
    token = token_for(owner)
    t = open_term(token_=token)
    t.wait_control("ready")
    r = requests.post(
        f"{live_server.url}/api/auth/logout", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code in (200, 204), r.text
    assert "signed out" in t.wait_control("error")["message"]


def test_live_byte_counters_are_written_in_one_statement(app, make_user, make_machine):
    """The janitor's 5 s counter flush: every session that moved, one UPDATE; rows it does
    not name keep their values, and a session whose row is gone is no error."""
    from types import SimpleNamespace

    from portal.extensions import db
    from portal.terminal.janitor import flush_counters
    from portal.terminal.models import TerminalSession

    owner = make_user("countowner")
    machine = make_machine(owner)
    ids = [f"00000000-0000-0000-0000-00000000c0{i:02d}" for i in range(3)]
    with app.app_context():
        for sid in ids:
            db.session.add(TerminalSession(id=sid, machine_id=machine.id, user_id=owner.id))
        db.session.commit()
        live = [
            SimpleNamespace(sid=ids[0], bytes_in=5, bytes_out=7000, flushed=(0, 0)),
            SimpleNamespace(sid=ids[1], bytes_in=1, bytes_out=2, flushed=(0, 0)),
            SimpleNamespace(sid="00000000-0000-0000-0000-00000000dead", bytes_in=9, bytes_out=9),
        ]
        flush_counters(live)  # what the janitor submits
        db.session.commit()
        db.session.expire_all()
        got = {r.id: (r.bytes_in, r.bytes_out) for r in db.session.query(TerminalSession)}
    assert got[ids[0]] == (5, 7000) and got[ids[1]] == (1, 2) and got[ids[2]] == (0, 0)
    assert live[0].flushed == (5, 7000) and live[1].flushed == (1, 2)


def test_resume_while_output_is_stuck_on_the_dropped_socket(term_env):
    # A phone that vanishes while output streams: the old socket stops reading, the
    # server's send to it blocks. The resumed window must get live output anyway.
    _owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.send("yes STUCK\r")  # then never read t again: its buffers and the server's fill up
    time.sleep(3)
    t2 = open_term(f"session={sid}")
    assert t2.wait_control("ready", timeout=20)["resumed"] is True
    t2.send("\x03")
    t2.run("echo RESUMED$((20+22))", r"RESUMED42", timeout=30)


def test_demoting_a_global_admin_closes_terminals_their_roles_do_not_allow(
    term_env, app, admin, make_user, grant_role, token_for
):
    owner, machine, open_term = term_env
    boss = make_user("boss2", role="admin")  # no role on the machine: an admin's terminal
    kept = make_user("boss3", role="admin")
    grant_role(machine, kept, "operator")  # keeps the terminal as an operator
    t_boss = open_term(token_=token_for(boss))
    t_boss.wait_control("ready")
    t_kept = open_term(token_=token_for(kept))
    t_kept.wait_control("ready")
    from portal.accounts import users as acc
    from portal.accounts.models import User
    from portal.extensions import db

    with app.test_request_context():
        actor = db.session.get(User, admin.id)
        acc.set_role(actor, db.session.get(User, boss.id), "user")
        acc.set_role(actor, db.session.get(User, kept.id), "user")
        db.session.commit()
    assert "revoked" in t_boss.wait_control("error")["message"]
    t_kept.run("echo STILL$((40+2))", r"STILL42")
    assert not [c for c in t_kept.controls if c.get("type") == "error"]


def test_the_janitor_prunes_old_recordings_while_the_server_runs(term_env, app, monkeypatch):
    import os

    from portal.terminal import janitor

    _owner, _machine, open_term = term_env
    open_term().wait_control("ready")  # the registry's threads are running
    monkeypatch.setattr(janitor, "PRUNE_EVERY", 0.5)
    app.config["PORTAL_RECORDING_RETENTION_DAYS"] = 7
    rec_dir = app.config["PORTAL_RECORDINGS_DIR"]
    os.makedirs(rec_dir, exist_ok=True)
    old = os.path.join(rec_dir, "janitor-old.cast")
    new = os.path.join(rec_dir, "janitor-new.cast")
    for path in (old, new):
        with open(path, "w") as fh:
            fh.write('{"version": 2, "width": 80, "height": 24}\n')
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert wait_for(lambda: not os.path.exists(old), timeout=10)
    assert os.path.exists(new)


# ---------------------------------------------------------------- while a terminal opens


def _open_stalled(live_server, machine, relay, token):
    """Open a terminal whose SSH set-up is held at the relay; returns its socket client once
    the portal's bytes are waiting there (the handshake or channel request is under way)."""
    relay.pause()
    held = relay.held
    url = f"{_helpers.ws_base(live_server)}/api/terminal/{machine.agent_id}/ws?token={token}"
    t = _helpers.Term(url)
    assert wait_for(lambda: relay.held > held, timeout=10), "the portal never reached the relay"
    return t


def _remove_grant_quietly(app, machine, user) -> None:
    """Delete the user's grant on the machine straight in the database (no hook fires)."""
    from sqlalchemy import delete

    from portal.extensions import db
    from portal.machines.models import MachineAccess

    with app.app_context():
        db.session.execute(
            delete(MachineAccess).where(
                MachineAccess.machine_id == machine.id, MachineAccess.user_id == user.id
            )
        )
        db.session.commit()
        db.session.remove()


def _active(live_server, machine, headers):
    r = _get(live_server, f"/api/machines/{machine.agent_id}/sessions/active", headers)
    return r.json()["sessions"]


def test_a_revocation_while_the_terminal_opens_closes_it(
    app, live_server, auth, make_user, grant_role, token_for, relayed_machine
):
    owner = make_user("relayowner")
    machine, relay = relayed_machine(owner)
    op = make_user("relayop")
    grant_role(machine, op, "operator")
    t = _open_stalled(live_server, machine, relay, token_for(op))
    try:
        r = requests.post(
            f"{live_server.url}/api/machines/{machine.agent_id}/access/revoke",
            headers=auth(owner),
            json={"user": op.username},
            timeout=10,
        )
        assert r.status_code in (200, 204), r.text
    finally:
        relay.resume()
    msg = t.wait_control("error")
    assert "revoked" in msg["message"]
    assert not any(c["type"] == "ready" for c in t.controls)
    assert wait_for(lambda: _active(live_server, machine, auth(owner)) == [], timeout=10)
    t.close()


def test_access_removed_without_a_hook_while_opening_is_caught_on_registration(
    app, live_server, auth, make_user, grant_role, token_for, relayed_machine
):
    """A revocation written before the session could be cancelled (its hook found nothing
    to close) is caught by reading access again once the session is registered."""
    owner = make_user("relayowner2")
    machine, relay = relayed_machine(owner)
    op = make_user("relayop2")
    grant_role(machine, op, "operator")
    t = _open_stalled(live_server, machine, relay, token_for(op))
    try:
        _remove_grant_quietly(app, machine, op)
    finally:
        relay.resume()
    assert "revoked" in t.wait_control("error")["message"]
    assert wait_for(lambda: _active(live_server, machine, auth(owner)) == [], timeout=10)
    t.close()


def test_the_per_user_cap_counts_terminals_still_opening(
    app, live_server, auth, make_user, token_for, relayed_machine
):
    owner = make_user("relayowner3")
    machine, relay = relayed_machine(owner)
    app.extensions["portal_terminal"].cap = 1
    token = token_for(owner)
    first = _open_stalled(live_server, machine, relay, token)
    try:
        url = f"{_helpers.ws_base(live_server)}/api/terminal/{machine.agent_id}/ws?token={token}"
        second = _helpers.Term(url)
        assert "most allowed" in second.wait_control("error")["message"]
        second.close()
    finally:
        relay.resume()
    sid = first.wait_control("ready")["session_id"]
    assert [s["id"] for s in _active(live_server, machine, auth(owner))] == [sid]
    first.close()


def test_shutdown_while_a_terminal_opens_closes_it_with_the_reason(
    app, live_server, make_user, token_for, relayed_machine
):
    owner = make_user("relayowner4")
    machine, relay = relayed_machine(owner)
    t = _open_stalled(live_server, machine, relay, token_for(owner))
    try:
        app.extensions["portal_terminal"].shutdown("the server is restarting")
    finally:
        relay.resume()
    assert "restarting" in t.wait_control("error")["message"]
    t.close()


def _tcp_max(kind: str) -> int:
    with open(f"/proc/sys/net/ipv4/tcp_{kind}") as fh:
        return int(fh.read().split()[2])


def test_input_sent_while_the_terminal_opens_is_bounded_in_bytes(
    app, live_server, make_user, token_for, relayed_machine
):
    """Until the session is set up, input frames wait in the socket's receiver; past 1 MiB
    (or for a frame over 64 KiB) the server stops taking bytes, however the bytes are split
    into frames: it closes the socket and cuts the connection (the client's next send fails)
    or it stops reading (the client's send times out)."""
    import websocket

    owner = make_user("relayowner5")
    machine, relay = relayed_machine(owner)
    t = _open_stalled(live_server, machine, relay, token_for(owner))
    frame = b"x" * (900 * 1024)  # under the socket's 1 MiB message limit
    # What may get through: the 1 MiB inbox, a frame being parsed, one being sent, and the
    # kernel's buffers on both ends (at most the TCP autotuning maximums).
    bound = 1024 * 1024 + 2 * len(frame) + _tcp_max("rmem") + _tcp_max("wmem")
    sent = 0
    t.ws.settimeout(3)
    try:
        while sent < 2 * bound + 8 * len(frame):
            t.ws.send_binary(frame)  # blocks once the server stops reading
            sent += len(frame)
    except (websocket.WebSocketTimeoutException, TimeoutError, ConnectionError):
        pass
    finally:
        relay.resume()
    # Without the byte bound, 256 such frames (225 MiB) would be taken in.
    assert sent <= bound, f"{sent} bytes were taken in while the terminal opened"
    # Those oversized frames are refused like any other: `error`, then close 1009 (read
    # as a bare frame: the connection is cut after it, so the client cannot answer it).
    assert "too large" in t.wait_control("error")["message"]
    t.ws.settimeout(15)
    frame = t.ws.recv_frame()
    t.close()
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1009


def _refusal(t) -> tuple[str, int]:
    """The `error` message and the close code of a socket the server refused and cut."""
    import websocket

    message = t.wait_control("error")["message"]
    t.ws.settimeout(15)
    frame = t.ws.recv_frame()  # a bare frame: the connection is cut, no close reply
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    return message, int.from_bytes(frame.data[:2], "big")


def test_many_small_frames_while_the_terminal_opens_are_refused_past_the_bound(
    app, live_server, make_user, token_for, relayed_machine
):
    """Frames under the size limit, but more of them than the receiver keeps while the
    session is set up (256 frames / 1 MiB): the socket is closed with 1008 and cut."""
    owner = make_user("relayowner6")
    machine, relay = relayed_machine(owner)
    t = _open_stalled(live_server, machine, relay, token_for(owner))
    sent = 0
    t.ws.settimeout(3)
    try:
        for _ in range(2000):
            t.send(b"y" * 1024)  # 2 MiB in all
            sent += 1
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        relay.resume()
    message, code = _refusal(t)
    t.close()
    assert "too much input" in message and code == 1008


def test_input_faster_than_the_machine_reads_is_refused_past_the_bound(term_env):
    """A remote program that reads no input (`sleep`): the PTY, then sshd's window fill, and
    input queues on the server; past 1 MiB queued the socket is closed with 1008 and cut
    (the session detaches: it is not closed)."""
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    # Raw mode: a full line buffer in canonical mode discards input (to leave room for an
    # erase) instead of pushing back; raw, the PTY stops taking input and so does sshd.
    t.run("stty raw -echo; echo go$((2*3)); sleep 60", r"go6")
    # Sends block while the server works through the queue; on a loaded machine that can
    # take seconds, and stopping early would leave the queue under the bound (no refusal).
    t.ws.settimeout(20)
    try:
        for _ in range(200):  # 12.5 MiB
            t.send(b"z" * (64 * 1024))
    except (TimeoutError, ConnectionError, OSError):
        pass
    message, code = _refusal(t)
    t.close()
    assert "faster than the machine reads it" in message and code == 1008


# ---------------------------------------------------------------- DELETE of a row held elsewhere


def _delete_rows_held_elsewhere(app, live_server, auth, make_user, make_machine, expect: str):
    import subprocess

    from portal.terminal.registry import server_id_for

    owner = make_user("elsewhere")
    machine = make_machine(owner)
    other = subprocess.Popen(["sleep", "60"])  # a running process that holds nothing
    try:
        held = _helpers.live_row(app, machine, owner, server_id_for(other.pid))
        r = requests.delete(
            f"{live_server.url}/api/terminal/sessions/{held}", headers=auth(owner), timeout=15
        )
        assert r.status_code == 503, r.text
        assert expect in r.json()["error"]
        s = _get(live_server, f"/api/sessions/{held}", auth(owner)).json()["session"]
        assert s["status"] == "active"  # not marked closed while its owner may hold a shell
    finally:
        other.kill()
        other.wait()
    # Its process is gone now: the same DELETE marks it closed.
    r = requests.delete(
        f"{live_server.url}/api/terminal/sessions/{held}", headers=auth(owner), timeout=15
    )
    assert r.status_code == 204, r.text
    s = _get(live_server, f"/api/sessions/{held}", auth(owner)).json()["session"]
    assert s["status"] == "closed"


def test_delete_of_a_session_another_local_process_holds_is_refused(
    app, live_server, auth, make_user, make_machine
):
    _delete_rows_held_elsewhere(app, live_server, auth, make_user, make_machine, "REDIS_URL")


class TestDeleteOverRedis:
    @pytest.fixture
    def app_config(self, app_config):
        return _helpers.redis_config(app_config)

    def test_an_owner_that_does_not_answer_is_not_declared_closed(
        self, app, live_server, auth, make_user, make_machine
    ):
        assert app.extensions["portal_terminal"].bus.kind == "redis"
        _delete_rows_held_elsewhere(app, live_server, auth, make_user, make_machine, "try again")


def test_losing_the_jump_host_while_the_terminal_opens_is_caught_on_registration(
    app, live_server, auth, make_user, grant_role, token_for, relayed_machine, sshd_machine
):
    """The terminal goes through a jump host; the user's role on the jump host goes (written
    without a hook) while the handshake runs: the re-check walks the jump hosts too."""
    owner = make_user("jumpowner")
    jump, relay = relayed_machine(owner, name="jump")
    inner = sshd_machine(owner, name="inner", gateway=jump.agent_id)
    op = make_user("jumpop")
    grant_role(jump, op, "operator")
    grant_role(inner, op, "operator")
    t = _open_stalled(live_server, inner, relay, token_for(op))
    try:
        _remove_grant_quietly(app, jump, op)
    finally:
        relay.resume()
    msg = t.wait_control("error")["message"]
    assert "jump host jump" in msg
    assert wait_for(lambda: _active(live_server, inner, auth(owner)) == [], timeout=10)
    t.close()


def test_a_live_session_s_recording_is_current_when_fetched(term_env, live_server, auth):
    """Replaying a session that is still running: the process holding it hands what it
    recorded so far to the file before serving it (no empty file in the first seconds)."""
    owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo live-rec-$((7*6))", r"live-rec-42")
    r = _get(live_server, f"/api/sessions/{sid}/recording", auth(owner))
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert json.loads(lines[0])["version"] == 2
    assert "live-rec-42" in "".join(json.loads(line)[2] for line in lines[1:])
    t.close()


def test_a_session_lists_the_files_its_user_moved_while_it_was_open(
    term_env, live_server, auth, make_user, app, client, login
):
    """The files drawer beside the terminal: what the session's user uploaded or downloaded
    on its machine while it was open shows on the session (API and page); another user's
    transfer on the same machine does not."""
    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    base = f"{live_server.url}/api/machines/{machine.agent_id}/files"
    name = f"portal-session-file-{sid[:8]}.txt"
    r = requests.put(f"{base}/content?path={name}", data=b"moved", headers=auth(owner), timeout=30)
    assert r.status_code == 201, r.text
    r = requests.get(f"{base}/content?path={name}", headers=auth(owner), timeout=30)
    assert r.content == b"moved"
    other = make_user("otherfiles")
    from portal.extensions import db
    from portal.files.services import record
    from portal.machines.models import Machine

    with app.app_context():  # someone else's transfer on the machine, in the same minutes
        m = db.session.get(Machine, machine.id)
        record(
            m.id,
            other.id,
            direction="download",
            path="/etc/hostname",
            size=5,
            sha256=None,
            duration_ms=1,
            result="ok",
        )
        db.session.commit()

    def moved():
        body = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()
        return body["transfers"] if len(body["transfers"]) >= 2 else None

    transfers = wait_for(moved, timeout=10)
    assert [(x["direction"], x["path"].rsplit("/", 1)[1]) for x in transfers] == [
        ("upload", name),
        ("download", name),
    ]
    assert all(x["user"] == owner.username for x in transfers)
    login(owner)
    page = client.get(f"/sessions/{sid}").get_data(as_text=True)
    assert "Files moved" in page and page.count(name) == 2 and "/etc/hostname" not in page
    requests.post(f"{base}/delete", json={"path": name}, headers=auth(owner), timeout=30)
    t.close()
