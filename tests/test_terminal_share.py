"""Read-only sharing: watchers get the screen, then live output; in-process bus and Redis."""

from __future__ import annotations

import pytest
import requests
import websocket

from portal import signals
from tests.fixtures import terminal as _helpers
from tests.fixtures.terminal import Term, share, watch, ws_base

pytestmark = pytest.mark.timeout(60)


def _scenario(term_env, live_server, auth, make_user, grant_role, token_for):
    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo screen$((1+1))", r"screen2\r\n")
    viewer = make_user("watcher")
    grant_role(machine, viewer, "viewer")

    # not shared yet: the viewer cannot even see it
    w0 = watch(live_server, sid, token_for(viewer))
    assert "no such session" in w0.wait_control("error")["message"]
    w0.close()
    # only its user may share it
    share(live_server, auth(viewer), sid, status=404)
    r = share(live_server, auth(owner), sid, status=None)
    assert r.status_code == 200 and r.json()["session"]["shared"] is True
    share(live_server, auth(owner), sid, shared="yes", status=400)

    w = watch(live_server, sid, token_for(viewer))
    assert w.wait_control("ready")["session_id"] == sid
    w.read_until(r"screen2")  # the recent screen first
    t.run("echo live$((2+3))", r"live5\r\n")
    w.read_until(r"live5")  # then live output
    # watchers are read-only
    w.send("echo nope$((9*9))\r")
    w.control({"type": "input", "data": "echo nope$((9*9))\r"})
    t.run("echo after$((1+0))", r"after1\r\n")
    assert b"81" not in bytes(t.out)
    # unsharing ends the watch
    share(live_server, auth(owner), sid, shared=False)
    assert "no longer shared" in w.wait_control("error")["message"]
    w.close()
    return t, sid


def test_share_and_watch_in_process(term_env, live_server, auth, make_user, grant_role, token_for):
    _scenario(term_env, live_server, auth, make_user, grant_role, token_for)


class TestRedisBus:
    @pytest.fixture
    def app_config(self, app_config):
        return _helpers.redis_config(app_config)

    def test_share_and_watch_over_redis(
        self, app, term_env, live_server, auth, make_user, grant_role, token_for
    ):
        assert app.extensions["portal_terminal"].bus.kind == "redis"
        _scenario(term_env, live_server, auth, make_user, grant_role, token_for)

    def test_another_worker_watches_and_closes_through_redis(
        self, app, app_config, term_env, live_server, auth, make_user, grant_role, token_for
    ):
        """A second app instance (another gunicorn worker) holds no channel: its watch socket
        and its DELETE reach the owner through Redis."""
        from portal import create_app
        from tests.fixtures.browser import LiveServer

        owner, machine, open_term = term_env
        t = open_term()
        sid = t.wait_control("ready")["session_id"]
        t.run("echo other$((3+3))", r"other6\r\n")
        share(live_server, auth(owner), sid)
        app2 = create_app(app_config)
        server2 = LiveServer(app2).start()
        try:
            w = watch(server2, sid, token_for(owner))
            w.wait_control("ready")
            w.read_until(r"other6")
            t.run("echo more$((4+4))", r"more8\r\n")
            w.read_until(r"more8")
            r = requests.delete(
                f"{server2.url}/api/terminal/sessions/{sid}", headers=auth(owner), timeout=15
            )
            assert r.status_code == 204
            assert "closed" in t.wait_control("error")["message"]
            w.wait_control("error")
            w.close()
        finally:
            server2.stop()
            signals.shutdown(app2)

    def test_ticket_lives_in_redis(self, app, term_env, live_server, auth):
        """The ticket is stored in Redis (any worker can redeem it), under the bus prefix, by
        its hash, with its TTL; redeeming it deletes it there."""
        import hashlib
        import json

        import redis

        owner, machine, _open = term_env
        ticket = requests.post(
            f"{live_server.url}/api/terminal/{machine.agent_id}/ticket", headers=auth(owner)
        ).json()["ticket"]
        prefix = app.config["PORTAL_TERMINAL_BUS_PREFIX"]
        key = f"{prefix}:ticket:{hashlib.sha256(ticket.encode()).hexdigest()}"
        r = redis.Redis(host="127.0.0.1", port=6379)
        try:
            stored = json.loads(r.get(key)[16:])  # behind its 16-byte MAC (signing.seal)
            assert stored["user_id"] == owner.id and stored["agent_id"] == machine.agent_id
            assert 0 < r.ttl(key) <= 60
            assert ticket not in str(r.keys(f"{prefix}:*"))  # only its hash is stored
            assert app.extensions["portal_terminal"].bus.ticket_count() == 0  # not in-process
            t = Term(f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws?ticket={ticket}")
            t.wait_control("ready")
            t.close()
            assert r.exists(key) == 0  # single use: taken from Redis
        finally:
            r.close()

    def test_a_ticket_written_into_redis_by_someone_else_opens_nothing(
        self, app, term_env, live_server, auth
    ):
        """Whoever can write Redis keys cannot mint a socket ticket: a ticket entry without
        the portal's MAC, or a genuine one moved under another ticket's key, is refused (401)
        and taken away; a genuine ticket still opens the terminal."""
        import hashlib
        import json

        import redis

        owner, machine, _open = term_env
        prefix = app.config["PORTAL_TERMINAL_BUS_PREFIX"]
        ws_url = f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws?ticket="

        def key_of(ticket: str) -> str:
            return f"{prefix}:ticket:{hashlib.sha256(ticket.encode()).hexdigest()}"

        def new_ticket() -> str:
            return requests.post(
                f"{live_server.url}/api/terminal/{machine.agent_id}/ticket", headers=auth(owner)
            ).json()["ticket"]

        r = redis.Redis(host="127.0.0.1", port=6379)
        try:
            payload = {"user_id": owner.id, "tv": owner.token_version, "agent_id": machine.agent_id}
            plain = json.dumps(payload).encode()
            forged = {
                "forged-plain": plain,  # the store's old format, no MAC
                "forged-zero-mac": b"\0" * 16 + plain,
            }
            genuine = new_ticket()
            forged["moved-genuine"] = r.get(key_of(genuine))  # sealed for another key
            for name, blob in forged.items():
                r.set(key_of(name), blob, ex=60)
                with pytest.raises(websocket.WebSocketBadStatusException) as exc:
                    Term(ws_url + name)
                assert exc.value.status_code == 401, name
                assert r.exists(key_of(name)) == 0, name  # taken, not left for a retry
            t = Term(ws_url + genuine)
            t.wait_control("ready")
            t.close()
        finally:
            r.close()


def test_its_user_and_an_admin_watch_an_unshared_session_live(
    term_env, live_server, make_user, token_for
):
    """Unshared, the session publishes nothing until someone allowed to watch it does; then
    its screen and live output reach them, and its owner's typing still works."""
    owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo before$((1+1))", r"before2\r\n")
    admin = make_user("boss", role="admin")
    for who in (owner, admin):
        w = watch(live_server, sid, token_for(who))
        assert w.wait_control("ready")["session_id"] == sid
        w.read_until(r"before2")
        marker = f"live{who.id}x$((2+3))"
        t.run(f"echo {marker}", rf"live{who.id}x5\r\n")
        w.read_until(rf"live{who.id}x5")
        w.close()


def _get(live_server, path, headers):
    return requests.get(f"{live_server.url}{path}", headers=headers, timeout=10)


def test_a_watcher_never_gets_the_recording_and_closing_ends_the_share(
    term_env, live_server, auth, make_user, grant_role, token_for, login, client
):
    """Sharing is live watching: a viewer of the machine who may watch the shared session
    cannot download its recording (which holds output from before it was shared), not
    while it runs and not after; closing the session ends its sharing."""
    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo private$((6*7))", r"private42\r\n")  # before sharing
    assert _helpers.wait_for(  # in the file on disk (flushed within a few seconds)
        lambda: (
            "private42" in _get(live_server, f"/api/sessions/{sid}/recording", auth(owner)).text
        ),
        timeout=10,
        interval=0.25,
    )
    viewer = make_user("recviewer")
    grant_role(machine, viewer, "viewer")
    machine_admin = make_user("recadmin")
    grant_role(machine, machine_admin, "admin")
    share(live_server, auth(owner), sid)

    w = watch(live_server, sid, token_for(viewer))  # the viewer may watch it live
    w.wait_control("ready")
    w.close()
    detail = _get(live_server, f"/api/sessions/{sid}", auth(viewer))
    assert detail.status_code == 200 and detail.json()["recording_url"] is None
    for query in ("", "?download=1"):
        r = _get(live_server, f"/api/sessions/{sid}/recording{query}", auth(viewer))
        assert r.status_code == 403, r.text
        assert "error" in r.json() and "private42" not in r.text
    login(viewer)
    page = client.get(f"/sessions/{sid}")
    assert page.status_code == 200 and "/recording" not in page.get_data(as_text=True)
    # its user and the machine's admins replay it
    for who in (owner, machine_admin):
        assert _get(live_server, f"/api/sessions/{sid}", auth(who)).json()["recording_url"]
        r = _get(live_server, f"/api/sessions/{sid}/recording", auth(who))
        assert r.status_code == 200 and "private42" in r.text

    r = requests.delete(f"{live_server.url}/api/terminal/sessions/{sid}", headers=auth(owner))
    assert r.status_code == 204
    body = _get(live_server, f"/api/sessions/{sid}", auth(owner)).json()
    assert body["session"]["status"] == "closed" and body["session"]["shared"] is False
    for path in (f"/api/sessions/{sid}", f"/api/sessions/{sid}/recording"):
        assert _get(live_server, path, auth(viewer)).status_code == 404
    listed = _get(live_server, f"/api/machines/{machine.agent_id}/sessions", auth(viewer))
    assert sid not in [s["id"] for s in listed.json()["sessions"]]
    assert client.get(f"/sessions/{sid}").status_code == 404
    r = _get(live_server, f"/api/sessions/{sid}/recording", auth(machine_admin))
    assert r.status_code == 200 and "private42" in r.text


def test_a_session_closed_without_its_process_is_no_longer_shared(
    app, term_env, live_server, auth, make_user, grant_role
):
    """The other ways a row is closed (its process is gone) end its sharing too, and a row
    left closed and shared by an older version shows nothing to a viewer."""
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    owner, machine, _open = term_env
    viewer = make_user("ghostviewer")
    grant_role(machine, viewer, "viewer")
    gone = _helpers.live_row(app, machine, owner, "nohost-gone:1:1")
    old = _helpers.live_row(app, machine, owner, "nohost-gone:1:1")
    with app.app_context():
        db.session.get(TerminalSession, gone).shared = True
        row = db.session.get(TerminalSession, old)
        row.shared, row.status = True, "closed"
        db.session.commit()
        db.session.remove()
    assert _get(live_server, f"/api/sessions/{gone}", auth(viewer)).status_code == 200
    r = requests.delete(f"{live_server.url}/api/terminal/sessions/{gone}", headers=auth(owner))
    assert r.status_code == 204
    with app.app_context():
        row = db.session.get(TerminalSession, gone)
        assert row.status == "closed" and row.shared is False
        db.session.remove()
    for sid in (gone, old):
        assert _get(live_server, f"/api/sessions/{sid}", auth(viewer)).status_code == 404


# ---------------------------------------------------------------- watcher caps


def _refused_watch(live_server, sid, token):
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        watch(live_server, sid, token)
    return exc.value.status_code, (exc.value.resp_body or b"").decode()


class TestWatcherCaps:
    @pytest.fixture
    def app_config(self, app_config):
        return {
            **app_config,
            "PORTAL_MAX_WATCHERS_PER_USER": 2,
            "PORTAL_MAX_WATCHERS_PER_SESSION": 3,
        }

    def test_watch_sockets_are_capped_per_user_and_per_session(
        self, app, term_env, live_server, auth, make_user, grant_role, token_for
    ):
        """Each watch socket costs threads: past PORTAL_MAX_WATCHERS_PER_USER (per user) or
        PORTAL_MAX_WATCHERS_PER_SESSION (per session) the upgrade is refused with 429 and a
        reason; a socket that ends, however it ends, gives its place back."""
        owner, machine, open_term = term_env
        t = open_term()
        sid = t.wait_control("ready")["session_id"]
        share(live_server, auth(owner), sid)
        a, b = make_user("watcher-a"), make_user("watcher-b")
        for who in (a, b):
            grant_role(machine, who, "viewer")
        token_a, token_b = token_for(a), token_for(b)
        reg = app.extensions["portal_terminal"]

        mine = [watch(live_server, sid, token_a) for _ in range(2)]
        for w in mine:
            w.wait_control("ready")
        status, body = _refused_watch(live_server, sid, token_a)
        assert status == 429 and "2 watch sockets open" in body
        # the per-session cap: a third watcher (another user) fits, a fourth does not
        other = watch(live_server, sid, token_b)
        other.wait_control("ready")
        status, body = _refused_watch(live_server, sid, token_for(owner))
        assert status == 429 and "already has 3 watchers" in body

        # a closed watcher gives its place back (the refused ones never took one)
        mine.pop().close()
        again = _helpers.wait_for(lambda: _try_watch(live_server, sid, token_a), timeout=10)
        assert again is not None
        again.wait_control("ready")
        status, _body = _refused_watch(live_server, sid, token_a)
        assert status == 429

        # watchers refused after the upgrade (not shared any more) give their place back too
        for w in (*mine, again, other):
            w.close()
        share(live_server, auth(owner), sid, shared=False)
        assert _helpers.wait_for(lambda: not reg.watchers.places, timeout=10)
        for _ in range(3):  # more than the cap: each refused socket's place comes back
            w = watch(live_server, sid, token_a)
            assert "no such session" in w.wait_control("error")["message"]
            w.drain_close()
            w.close()
            # the place is given back when the request ends (after the reader closed the socket)
            assert _helpers.wait_for(lambda: not reg.watchers.places, timeout=10), (
                reg.watchers.places
            )
        t.close()


def _try_watch(live_server, sid, token):
    import websocket

    try:
        return watch(live_server, sid, token)
    except websocket.WebSocketBadStatusException as exc:
        assert exc.status_code == 429
        return None
