"""The owner's socket hears who watches: `{"type":"watchers","count":N,"shared":bool}` when a
watch socket opens or closes, when sharing changes and on re-attach; in process and from
another instance over Redis. Real sshd, real sockets."""

from __future__ import annotations

import time

import pytest

from portal import signals
from tests.fixtures import terminal as _helpers
from tests.fixtures.terminal import Term, share, watch

pytestmark = pytest.mark.timeout(60)


def _audience(t: Term, count: int, shared: bool | None = None, timeout: float = 15.0) -> dict:
    """Wait for the next `watchers` frame saying `count` (and `shared`), after the ones seen."""
    seen = getattr(t, "_audience_seen", 0)
    deadline = time.monotonic() + timeout
    while True:
        msgs = [c for c in t.controls if c.get("type") == "watchers"]
        for i, m in enumerate(msgs[seen:], start=seen):
            if m["count"] == count and (shared is None or m["shared"] is shared):
                t._audience_seen = i + 1
                return m
        if time.monotonic() > deadline or t.closed:
            raise AssertionError(f"no watchers={count} frame; got {msgs}")
        try:
            t.recv_one(0.2)
        except Exception:  # noqa: S110 - a timeout: look again
            pass


def _scenario(server_for_watchers, live_server, term_env, auth, make_user, grant_role, token_for):
    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo up$((1+1))", r"up2\r\n")
    assert not [c for c in t.controls if c["type"] == "watchers"]  # nobody yet: no frame

    share(live_server, auth(owner), sid)
    assert _audience(t, 0, shared=True) == {"type": "watchers", "count": 0, "shared": True}
    viewer = make_user("eyes")
    grant_role(machine, viewer, "viewer")
    w1 = watch(server_for_watchers, sid, token_for(viewer))
    w1.wait_control("ready")
    _audience(t, 1)
    w2 = watch(server_for_watchers, sid, token_for(owner))  # its own user, another window
    w2.wait_control("ready")
    _audience(t, 2)
    t.run("echo still$((2+2))", r"still4\r\n")  # typing goes on meanwhile
    w1.close()
    _audience(t, 1)
    w2.close()
    _audience(t, 0)
    share(live_server, auth(owner), sid, shared=False)
    _audience(t, 0, shared=False)
    return t, sid


def test_the_owner_hears_watchers_come_and_go(
    term_env, live_server, auth, make_user, grant_role, token_for
):
    _scenario(live_server, live_server, term_env, auth, make_user, grant_role, token_for)


def test_a_reattached_window_is_told_the_count_at_once(
    term_env, live_server, auth, make_user, grant_role, token_for
):
    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    share(live_server, auth(owner), sid)
    w = watch(live_server, sid, token_for(owner))
    w.wait_control("ready")
    _audience(t, 1, shared=True)
    t.close()
    _helpers.wait_for(lambda: not _attached(live_server.app, sid))
    t2 = open_term(f"session={sid}")
    assert t2.wait_control("ready")["resumed"] is True
    assert _audience(t2, 1, shared=True)
    w.close()
    _audience(t2, 0)


def test_a_watcher_that_vanishes_drops_out_when_its_lease_ends(
    term_env, live_server, auth, app, token_for
):
    """A watcher's process that dies says nothing: its place in the count ends with its
    lease (renewed every 10 s by a live watcher)."""
    owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    sess = app.extensions["portal_terminal"].get(sid)
    # What another process's watcher sends over the bus, with a short lease for the test.
    sess.watcher_joined("gone-watcher", lease=1.0)
    _audience(t, 1)
    _audience(t, 0, timeout=10)  # the janitor (once a second) expires it


def _attached(app, sid) -> bool:
    sess = app.extensions["portal_terminal"].get(sid)
    return sess is not None and sess.client is not None


class TestRedisBus:
    @pytest.fixture
    def app_config(self, app_config):
        return _helpers.redis_config(app_config)

    def test_watchers_on_another_instance_are_counted(
        self, app, app_config, term_env, live_server, auth, make_user, grant_role, token_for
    ):
        from portal import create_app
        from tests.fixtures.browser import LiveServer

        assert app.extensions["portal_terminal"].bus.kind == "redis"
        app2 = create_app(app_config)
        server2 = LiveServer(app2).start()
        try:
            _scenario(server2, live_server, term_env, auth, make_user, grant_role, token_for)
        finally:
            server2.stop()
            signals.shutdown(app2)
