"""The terminal's HTML routes render with the data the templates expect."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)


def test_pages_render(term_env, live_server, login, client, make_user, grant_role):
    owner, machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    t.run("echo page$((1+1))", r"page2\r\n")
    login(owner)
    page = client.get(f"/machines/{machine.agent_id}/terminal?session={sid}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f"/api/terminal/{machine.agent_id}/ws" in html and sid in html
    lst = client.get("/sessions")
    assert lst.status_code == 200 and sid in lst.get_data(as_text=True)
    detail = client.get(f"/sessions/{sid}")
    assert detail.status_code == 200
    assert f"/api/sessions/{sid}/recording" in detail.get_data(as_text=True)
    assert "wasm-unsafe-eval" in detail.headers["Content-Security-Policy"]
    watch = client.get(f"/sessions/{sid}/watch")
    assert watch.status_code == 200
    assert f"/api/terminal/sessions/{sid}/watch/ws" in watch.get_data(as_text=True)
    assert client.get("/sessions/00000000-0000-0000-0000-00000000dead").status_code == 404


def test_viewer_gets_403_on_the_terminal_page(term_env, login, client, make_user, grant_role):
    _owner, machine, _open = term_env
    viewer = make_user("pageviewer")
    grant_role(machine, viewer, "viewer")
    login(viewer)
    assert client.get(f"/machines/{machine.agent_id}/terminal").status_code == 403


def test_sessions_list_offers_close_to_machine_admins_not_to_operators(
    term_env, login, client, make_user, grant_role
):
    _owner, machine, open_term = term_env
    sid = open_term().wait_control("ready")["session_id"]
    close_url = f"/api/terminal/sessions/{sid}"
    madmin = make_user("listmadmin")
    grant_role(machine, madmin, "admin")
    login(madmin)
    html = client.get("/sessions").get_data(as_text=True)
    assert sid in html and f'hx-delete="{close_url}"' in html
    op = make_user("listop")
    grant_role(machine, op, "operator")
    client._cookies.clear()  # signed out
    login(op)
    assert f'hx-delete="{close_url}"' not in client.get("/sessions").get_data(as_text=True)
