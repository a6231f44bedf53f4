"""Who may open a terminal socket: cookie + Origin, single-use tickets, tokens, roles."""

from __future__ import annotations

import pytest
import requests
import websocket

from tests.conftest import PASSWORD
from tests.fixtures.terminal import Term, ws_base

pytestmark = pytest.mark.timeout(60)


def _browser_cookie(live_server, user) -> str:
    from tests.conftest import csrf_from

    with requests.Session() as s:  # closed: its kept-alive connection goes with it
        html = s.get(f"{live_server.url}/login").text
        r = s.post(
            f"{live_server.url}/login",
            data={"login": user.username, "password": PASSWORD, "csrf_token": csrf_from(html)},
            allow_redirects=False,
        )
        assert r.status_code == 303
        return "; ".join(f"{k}={v}" for k, v in s.cookies.items())


def _status_of_refused(url, **kw) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        Term(url, **kw)
    return exc.value.status_code


def test_cookie_with_the_portal_origin_opens(term_env, live_server):
    owner, machine, _open = term_env
    cookie = _browser_cookie(live_server, owner)
    t = Term(
        f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws",
        cookie=cookie,
        origin=live_server.url,
    )
    try:
        t.wait_control("ready")
        t.run("echo $((20+22))", r"42\r\n")
    finally:
        t.close()


def test_cookie_from_another_origin_is_refused_before_upgrade(term_env, live_server):
    owner, machine, _open = term_env
    cookie = _browser_cookie(live_server, owner)
    url = f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws"
    assert _status_of_refused(url, cookie=cookie, origin="https://evil.example") == 403
    assert _status_of_refused(url, cookie=cookie) == 403  # no Origin at all


def test_no_credentials_and_bad_token_are_401(term_env, live_server):
    _owner, machine, _open = term_env
    url = f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws"
    assert _status_of_refused(url) == 401
    assert _status_of_refused(url + "?token=nope") == 401


def test_ticket_is_single_use(term_env, live_server, auth):
    owner, machine, _open = term_env
    r = requests.post(
        f"{live_server.url}/api/terminal/{machine.agent_id}/ticket", headers=auth(owner)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == 60 and len(body["ticket"]) >= 32
    url = f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws?ticket={body['ticket']}"
    t = Term(url)
    try:
        t.wait_control("ready")
    finally:
        t.close()
    assert _status_of_refused(url) == 401


def test_ticket_expires(term_env, live_server, auth, monkeypatch):
    import time

    from portal.terminal import services

    owner, machine, _open = term_env
    monkeypatch.setattr(services, "TICKET_TTL", 1)
    ticket = requests.post(
        f"{live_server.url}/api/terminal/{machine.agent_id}/ticket", headers=auth(owner)
    ).json()["ticket"]
    time.sleep(1.3)
    url = f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws?ticket={ticket}"
    assert _status_of_refused(url) == 401


def test_ticket_needs_csrf_with_a_browser_session(term_env, live_server):
    owner, machine, _open = term_env
    cookie = _browser_cookie(live_server, owner)
    r = requests.post(
        f"{live_server.url}/api/terminal/{machine.agent_id}/ticket", headers={"Cookie": cookie}
    )
    assert r.status_code == 400


def test_api_key_as_token(term_env, live_server, app):
    owner, machine, open_term = term_env
    from portal.accounts import users as acc
    from portal.accounts.models import User
    from portal.extensions import db

    with app.app_context():
        key = acc.regenerate_api_key(db.session.get(User, owner.id))
        db.session.commit()
    t = open_term(token_=key)
    t.wait_control("ready")


def test_viewer_cannot_open_terminal(term_env, make_user, grant_role, token_for):
    _owner, machine, open_term = term_env
    viewer = make_user("viewer1")
    grant_role(machine, viewer, "viewer")
    t = open_term(token_=token_for(viewer))
    msg = t.wait_control("error")
    assert "operator" in msg["message"]
    t.drain_close()
    assert t.closed


def test_stranger_gets_not_found(term_env, make_user, token_for):
    _owner, _machine, open_term = term_env
    stranger = make_user("stranger")
    t = open_term(token_=token_for(stranger))
    assert "not found" in t.wait_control("error")["message"]


def test_nobody_attaches_to_another_users_session(term_env, make_user, grant_role, token_for):
    _owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    other = make_user("operator2")
    grant_role(machine, other, "operator")
    t2 = open_term(f"session={sid}", token_=token_for(other))
    assert "no such session" in t2.wait_control("error")["message"]
    # the owner's terminal is untouched
    t.run("echo $((40+2))", r"42\r\n")


def test_a_ticket_for_one_machine_opens_nothing_on_another(
    term_env, live_server, auth, sshd_machine
):
    owner, machine, _open = term_env
    other = sshd_machine(owner, name="second-box")
    ticket = requests.post(
        f"{live_server.url}/api/terminal/{machine.agent_id}/ticket", headers=auth(owner)
    ).json()["ticket"]
    t = Term(f"{ws_base(live_server)}/api/terminal/{other.agent_id}/ws?ticket={ticket}")
    try:
        assert t.wait_control("error")["message"] == "this ticket is for another machine"
        assert not any(c["type"] == "ready" for c in t.controls)
        t.drain_close()
    finally:
        t.close()
    assert t.close_code == 1008
    sessions = requests.get(
        f"{live_server.url}/api/machines/{other.agent_id}/sessions", headers=auth(owner)
    ).json()["sessions"]
    assert sessions == []
    # It was spent by that attempt: it cannot be tried again on its own machine either.
    url = f"{ws_base(live_server)}/api/terminal/{machine.agent_id}/ws?ticket={ticket}"
    assert _status_of_refused(url) == 401
